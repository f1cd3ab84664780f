package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"sniper/api"
	"sniper/jetstream"
	"sniper/testkit"
)

// fakeStatus is a Status source the test moves by hand.
type fakeStatus struct {
	mu      sync.Mutex
	ready   bool
	checks  []api.Check
	changed chan struct{}
}

func newFakeStatus(ready bool, checks ...api.Check) *fakeStatus {
	return &fakeStatus{ready: ready, checks: checks, changed: make(chan struct{})}
}

func (f *fakeStatus) Status(context.Context) api.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return api.Status{Ready: f.ready, Role: api.RoleActive, Checks: f.checks}
}

func (f *fakeStatus) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeStatus) set(ready bool, checks ...api.Check) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready, f.checks = ready, checks
	close(f.changed)
	f.changed = make(chan struct{})
}

// statusServer serves the API over the fake log and view, with st as its
// status; it returns the server and the log, which the test can take down.
func statusServer(t *testing.T, st *fakeStatus) (*httptest.Server, *fakeLog) {
	t.Helper()
	log, view := newFakes(t)
	s := &api.Server{Log: log, View: view, Logger: testkit.Logger(t), CommandTimeout: 5 * time.Second}
	if st != nil {
		s.Status, s.StatusChanged = st.Status, st.Changed
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv, log
}

func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, strings.TrimSpace(string(b))
}

func TestStatusEndpoint(t *testing.T) {
	st := newFakeStatus(false,
		api.Check{Name: "nats", OK: true},
		api.Check{Name: "xmpp", OK: false, Error: "not connected to the auction house at 127.0.0.1:5222"})
	srv, _ := statusServer(t, st)
	code, body := getBody(t, srv.URL+"/api/status")
	want := `{"ready":false,"role":"active","checks":[{"name":"nats","ok":true},{"name":"xmpp","ok":false,"error":"not connected to the auction house at 127.0.0.1:5222"}]}`
	if code != http.StatusOK || body != want {
		t.Fatalf("GET /api/status = %d %s, want 200 %s", code, body, want)
	}
	res, err := http.Post(srv.URL+"/api/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/status = %d, want 405", res.StatusCode)
	}

	// Without a status source the API says it is ready, with no checks.
	bare, _ := statusServer(t, nil)
	if code, body := getBody(t, bare.URL+"/api/status"); code != http.StatusOK || body != `{"ready":true,"checks":[]}` {
		t.Errorf("GET /api/status without a source = %d %s", code, body)
	}
}

// The live stream sends the status at connect and again on every change,
// but not when a change signal leaves it the same.
func TestStreamSendsStatusChanges(t *testing.T) {
	up := api.Check{Name: "xmpp", OK: true}
	down := api.Check{Name: "xmpp", OK: false, Error: "not connected"}
	st := newFakeStatus(true, up)
	srv, _ := statusServer(t, st)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/stream", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	events := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(res.Body)
		name := ""
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				name = v
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok && name == "status" {
				events <- v
			}
		}
		close(events)
	}()
	next := func(what string) map[string]any {
		t.Helper()
		select {
		case data, ok := <-events:
			if !ok {
				t.Fatalf("stream ended waiting for %s", what)
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				t.Fatalf("status event %q: %v", data, err)
			}
			return v
		case <-time.After(testkit.WaitTimeout):
			t.Fatalf("no status event: %s", what)
		}
		return nil
	}
	if v := next("at connect"); v["ready"] != true {
		t.Fatalf("status at connect = %v, want ready", v)
	}
	st.set(true, up) // a signal without a change: no event
	st.set(false, down)
	v := next("after the change")
	checks, _ := v["checks"].([]any)
	if v["ready"] != false || len(checks) != 1 || checks[0].(map[string]any)["error"] != "not connected" {
		t.Fatalf("status after the change = %v, want not ready naming xmpp", v)
	}
	st.set(true, up)
	if v := next("after recovery"); v["ready"] != true {
		t.Fatalf("status after recovery = %v, want ready", v)
	}
}

// Without a connection to the log, commands answer 503 with a JSON error
// at once instead of waiting out the command timeout; reads of the cached
// state still answer.
func TestCommandsFailFastWithoutTheLog(t *testing.T) {
	srv, log := statusServer(t, nil)
	// What jetstream.Log.Available says once the connection is closed.
	log.setDown(fmt.Errorf("%w: not connected to NATS (CLOSED)", jetstream.ErrUnavailable))
	for _, c := range []struct{ method, path, body string }{
		{http.MethodPost, "/api/snipers", `{"item":"item-1","stop_price":100}`},
		{http.MethodGet, "/api/snipers/item-1/events", ""},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		req.Header.Set("Content-Type", "application/json")
		began := time.Now()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		took := time.Since(began)
		var e struct{ Error string }
		_ = json.Unmarshal(b, &e)
		if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(e.Error, "not connected to NATS") || took > time.Second {
			t.Errorf("%s %s without the log: %d %s after %s, want 503 at once naming NATS", c.method, c.path, res.StatusCode, b, took)
		}
		if res.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s: 503 without Retry-After", c.method, c.path)
		}
	}
	if code, body := getBody(t, srv.URL+"/api/snipers"); code != http.StatusOK {
		t.Errorf("GET /api/snipers without the log = %d %s, want 200 from the projection", code, body)
	}
}
