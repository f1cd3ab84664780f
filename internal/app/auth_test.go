package app_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"sniper/internal/app"
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
