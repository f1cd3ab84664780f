package app

import (
	"crypto/subtle"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"strings"

	"sniper/api"
)

// tokenCookie carries the token for the page, whose EventSource cannot
// send an Authorization header.
const tokenCookie = "sniper_token"

// checkExposure refuses to serve beyond loopback without a token: the API
// moves real money.
func checkExposure(addr, token string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("http address %q: %w", addr, err)
	}
	if token != "" || isLoopback(host) {
		return nil
	}
	return fmt.Errorf("refusing to serve the API on %s, which is not a loopback address, without a token: set --http-token (or SNIPER_HTTP_TOKEN)", addr)
}

// checkNATSExposure refuses to open the embedded server's client or route
// listener beyond loopback without credentials: whoever reaches the port
// could append auction events, commands or decisions to the log,
// bypassing the HTTP token and the XMPP sender check.
func checkNATSExposure(cfg Config) error {
	if cfg.NATSURL != "" || cfg.NATSAuth.User != "" {
		if cfg.NATSURL == "" && cfg.NATSAuth.Password == "" {
			return fmt.Errorf("--nats-user %q needs --nats-password (or SNIPER_NATS_PASSWORD)", cfg.NATSAuth.User)
		}
		return nil
	}
	if cfg.NATSReaderPassword != "" {
		return fmt.Errorf("--nats-reader-password needs --nats-user and --nats-password: without them the embedded server is open to everyone")
	}
	listeners := map[string]string{"--nats-listen": cfg.NATSListen}
	if cfg.NATSCluster != nil {
		listeners["--nats-cluster-listen"] = cfg.NATSCluster.Listen
	}
	for flag, addr := range listeners {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("%s %q: %w", flag, addr, err)
		}
		if !isLoopback(host) {
			return fmt.Errorf("refusing to open the event log on %s (%s), which is not a loopback address, without NATS credentials: set --nats-user and --nats-password (or SNIPER_NATS_USER, SNIPER_NATS_PASSWORD)", addr, flag)
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// requireToken lets a request through when it carries the token as a
// bearer header or the login cookie. The page and the API answer
// differently when it does not: the page sends people to the login form,
// the API says 401 in JSON. Health probes stay open.
func requireToken(token string, next http.Handler) http.Handler {
	want := []byte(token)
	valid := func(got string) bool { return subtle.ConstantTimeCompare([]byte(got), want) == 1 }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz", "/style.css":
			next.ServeHTTP(w, r)
			return
		case "/login":
			login(w, r, valid)
			return
		}
		if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && valid(bearer) {
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(tokenCookie); err == nil && valid(c.Value) {
			next.ServeHTTP(w, r)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/api/") || r.URL.Path == "/metrics" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sniper"`)
			api.WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong token: send Authorization: Bearer <token>"})
			return
		}
		http.Redirect(w, r, "/login", http.StatusSeeOther)
	})
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Auction Sniper: sign in</title><link rel="stylesheet" href="/style.css"></head>
<body><header><h1>Auction Sniper</h1></header><main>
<h2>Sign in</h2>
<form method="post" action="/login">
<div class="field"><label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<span class="error" id="token-error" role="alert">{{.}}</span></div>
<button id="login-button" type="submit">Sign in</button>
</form></main></body></html>`))

// login serves the sign-in form and sets the cookie for a right token.
func login(w http.ResponseWriter, r *http.Request, valid func(string) bool) {
	w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
	switch r.Method {
	case http.MethodGet:
		_ = loginPage.Execute(w, "")
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, 4096)
		if err := r.ParseForm(); err != nil || !valid(r.PostForm.Get("token")) {
			w.WriteHeader(http.StatusUnauthorized)
			_ = loginPage.Execute(w, "That token is not right.")
			return
		}
		http.SetCookie(w, &http.Cookie{
			Name: tokenCookie, Value: r.PostForm.Get("token"), Path: "/",
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
		})
		http.Redirect(w, r, "/", http.StatusSeeOther)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}
