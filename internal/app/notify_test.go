package app_test

import (
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

	"sniper/internal/app"
	"sniper/notify"
	"sniper/testkit"
)

// hook is a notification receiver: it verifies the signature, answers 500
// while failing is set, and records what it accepted by key.
type hook struct {
	mu       sync.Mutex
	failing  bool
	accepted map[string][]notify.Payload
	failures int
	badSigs  int
	srv      *httptest.Server
}

func newHook(t *testing.T, secret string) *hook {
	h := &hook{accepted: map[string][]notify.Payload{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		if !notify.Verify(secret, body, r.Header.Get(notify.HeaderSignature)) {
			h.badSigs++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if h.failing {
			h.failures++
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		var p notify.Payload
		_ = json.Unmarshal(body, &p)
		key := r.Header.Get(notify.HeaderIdempotencyKey)
		h.accepted[key] = append(h.accepted[key], p)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) states() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]string{}
	for _, ps := range h.accepted {
		for _, p := range ps {
			out[p.Item] += string(p.State)
		}
	}
	return out
}

func (h *hook) setFailing(v bool) {
	h.mu.Lock()
	h.failing = v
	h.mu.Unlock()
}

// TestNotificationsThroughTheApp: with --notify-url and a secret, a sniper
// stopped through the API is notified there, signed; one joined with a
// notify_url of its own is notified there instead. A receiver that fails
// shows in the metrics (failures, the notify backlog) and the history
// (notify_failed), and gets the notification once it answers again.
func TestNotificationsThroughTheApp(t *testing.T) {
	const secret = "hook-secret"
	global, own := newHook(t, secret), newHook(t, secret)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := app.Start(ctx, app.Config{
		DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Logger: testkit.Logger(t),
		NotifyURL: global.srv.URL, NotifySecret: secret, NotifyMinBackoff: 10 * time.Millisecond, NotifyMaxBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopApp(t, a) })

	wantStatus(t, post(t, a, "item-g", 1000), http.StatusCreated)
	body := fmt.Sprintf(`{"item":"item-o","stop_price":1000,"notify_url":%q}`, own.srv.URL+"/mine")
	wantStatus(t, do(t, http.MethodPost, a.HTTPURL()+"/api/snipers", "application/json", []byte(body)), http.StatusCreated)
	wantError(t, do(t, http.MethodPost, a.HTTPURL()+"/api/snipers", "application/json", []byte(`{"item":"item-x","stop_price":1000,"notify_url":"ftp://x"}`)), http.StatusBadRequest)
	for _, item := range []string{"item-g", "item-o"} {
		wantStatus(t, do(t, http.MethodDelete, a.HTTPURL()+"/api/snipers/"+item, "", nil), http.StatusOK)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		return global.states()["item-g"] == "Stopped" && own.states()["item-o"] == "Stopped"
	}, "notifications: global %v, own %v", global.states(), own.states())
	if len(global.states()) != 1 || len(own.states()) != 1 {
		t.Errorf("global got %v, own got %v: each sniper notified at its own receiver only", global.states(), own.states())
	}

	global.setFailing(true)
	// A new limit resumes item-g; stopping it again is a new final state.
	wantStatus(t, do(t, http.MethodPatch, a.HTTPURL()+"/api/snipers/item-g", "application/json", []byte(`{"stop_price":2000}`)), http.StatusOK)
	wantStatus(t, do(t, http.MethodDelete, a.HTTPURL()+"/api/snipers/item-g", "", nil), http.StatusOK)
	testkit.Eventually(t, 10*time.Second, func() bool {
		return a.NotifyBacklog() == 1 && metric(t, a, "sniper_notification_failures_total") >= 2 &&
			metric(t, a, `sniper_follower_undone_messages{follower="notify"}`) == 1 && hasEvent(t, a, "item-g", "notify_failed")
	}, "a failing receiver not visible in the backlog, the metrics and the history")
	global.setFailing(false)
	testkit.Eventually(t, 10*time.Second, func() bool { return global.states()["item-g"] == "StoppedStopped" && a.NotifyBacklog() == 0 },
		"the second Stopped not delivered: %v", global.states())
	if got := metric(t, a, "sniper_notifications_sent_total"); got != 3 {
		t.Errorf("sniper_notifications_sent_total = %v, want 3", got)
	}
	if global.badSigs+own.badSigs != 0 {
		t.Errorf("%d bad signatures", global.badSigs+own.badSigs)
	}
}

// metric reads one sample from /metrics (name with its labels, as
// exposed); -1 when absent.
func metric(t *testing.T, a *app.App, name string) float64 {
	t.Helper()
	r := get(t, a, "/metrics")
	for _, line := range strings.Split(string(r.Body), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return -1
}

func hasEvent(t *testing.T, a *app.App, item, typ string) bool {
	t.Helper()
	var h struct {
		Events []struct {
			Type string `json:"type"`
		} `json:"events"`
	}
	if err := json.Unmarshal(get(t, a, "/api/snipers/"+item+"/events").Body, &h); err != nil {
		t.Fatal(err)
	}
	for _, e := range h.Events {
		if e.Type == typ {
			return true
		}
	}
	return false
}
