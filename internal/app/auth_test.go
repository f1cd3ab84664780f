package app_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"sniper/internal/app"
	"sniper/jetstream"
	"sniper/testkit"
)

func TestServingBeyondLoopbackNeedsAToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := app.Start(ctx, app.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", HTTPAddr: "0.0.0.0:0", Logger: testkit.Logger(t)})
	if err == nil || !strings.Contains(err.Error(), "--http-token") {
		t.Fatalf("started on 0.0.0.0 without a token (err = %v)", err)
	}
	_, err = app.Start(ctx, app.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", HTTPAddr: ":0", Logger: testkit.Logger(t)})
	if err == nil {
		t.Fatal("started on all interfaces without a token")
	}
}

// The embedded NATS server's client and route listeners beyond loopback
// need credentials; with them, the app starts and talks to its own server
// as that user.
func TestOpeningTheLogBeyondLoopbackNeedsCredentials(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	base := func() app.Config {
		return app.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Logger: testkit.Logger(t)}
	}
	open := base()
	open.NATSListen = "0.0.0.0:0"
	if _, err := app.Start(ctx, open); err == nil || !strings.Contains(err.Error(), "--nats-user") || !strings.Contains(err.Error(), "--nats-listen") {
		t.Errorf("embedded NATS on 0.0.0.0 without credentials: %v, want a refusal naming --nats-listen and --nats-user", err)
	}
	routes := base()
	routes.NATSCluster = &jetstream.ClusterConfig{Listen: "0.0.0.0:0", Routes: []string{"nats://127.0.0.1:1"}}
	if _, err := app.Start(ctx, routes); err == nil || !strings.Contains(err.Error(), "--nats-cluster-listen") {
		t.Errorf("routes on 0.0.0.0 without credentials: %v, want a refusal naming --nats-cluster-listen", err)
	}
	noPassword := base()
	noPassword.NATSAuth.User = "sniper"
	if _, err := app.Start(ctx, noPassword); err == nil || !strings.Contains(err.Error(), "--nats-password") {
		t.Errorf("a NATS user without a password: %v, want a refusal naming --nats-password", err)
	}

	closed := base()
	closed.NATSListen = "0.0.0.0:0"
	closed.NATSAuth = jetstream.ClientAuth{User: "sniper", Password: "s3cret"}
	a, err := app.Start(ctx, closed)
	if err != nil {
		t.Fatalf("start with credentials: %v", err)
	}
	defer a.Stop(context.Background())
	if !a.Active() {
		t.Error("the app with credentials is not deciding")
	}
	port := a.NATSURL()[strings.LastIndex(a.NATSURL(), ":")+1:]
	if nc, err := nats.Connect("nats://127.0.0.1:"+port, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("a client without credentials connected to the app's NATS server")
	}
}

func TestTokenGuardsTheAPIAndThePage(t *testing.T) {
	const token = "s3cret-token"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := app.Start(ctx, app.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", HTTPToken: token, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, mod func(*http.Request)) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, a.HTTPURL()+path, nil)
		if mod != nil {
			mod(req)
		}
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res, string(body)
	}
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}

	if res, body := get("/api/snipers", nil); res.StatusCode != 401 || !strings.Contains(body, `"error"`) {
		t.Fatalf("API without a token: %d %s", res.StatusCode, body)
	}
	if res, _ := get("/api/snipers", bearer("wrong")); res.StatusCode != 401 {
		t.Fatalf("API with a wrong token: %d", res.StatusCode)
	}
	if res, _ := get("/api/snipers", bearer(token)); res.StatusCode != 200 {
		t.Fatalf("API with the token: %d", res.StatusCode)
	}
	if res, _ := get("/metrics", nil); res.StatusCode != 401 {
		t.Fatalf("metrics without a token: %d", res.StatusCode)
	}
	for _, probe := range []string{"/healthz", "/readyz"} {
		if res, _ := get(probe, nil); res.StatusCode != 200 {
			t.Fatalf("%s must stay open for probes: %d", probe, res.StatusCode)
		}
	}
	res, _ := get("/", nil)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/login" {
		t.Fatalf("page without a token: %d to %q, want the login form", res.StatusCode, res.Header.Get("Location"))
	}

	login := func(tok string) *http.Response {
		t.Helper()
		res, err := noRedirect.PostForm(a.HTTPURL()+"/login", url.Values{"token": {tok}})
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	if res := login("wrong"); res.StatusCode != 401 || len(res.Cookies()) != 0 {
		t.Fatalf("wrong token at the login form: %d, cookies %v", res.StatusCode, res.Cookies())
	}
	res = login(token)
	if res.StatusCode != http.StatusSeeOther || len(res.Cookies()) != 1 {
		t.Fatalf("login: %d, cookies %v", res.StatusCode, res.Cookies())
	}
	c := res.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v must be HttpOnly and SameSite=Strict", c)
	}
	withCookie := func(r *http.Request) { r.AddCookie(c) }
	if res, body := get("/", withCookie); res.StatusCode != 200 || !strings.Contains(body, "Auction Sniper") {
		t.Fatalf("page with the cookie: %d", res.StatusCode)
	}
	if res, _ := get("/api/snipers", withCookie); res.StatusCode != 200 {
		t.Fatalf("API with the cookie: %d", res.StatusCode)
	}
}
