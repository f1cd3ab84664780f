package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sniper/api"
	"sniper/auction"
	"sniper/messages"
	"sniper/notify"
	"sniper/testkit"
)

// flakyHook fails the first failFirst attempts of each notification
// (by Idempotency-Key) with a 500, verifies every signature, and counts
// the 2xx it answered per key. At the kill-th failing attempt of the
// third notification it asks the test to SIGKILL the sniper and answers
// only once it is dead: the sniper dies in the middle of its retries.
type flakyHook struct {
	secret    string
	failFirst int

	mu        sync.Mutex
	attempts  map[string]int
	accepted  map[string]int            // 2xx answered, per key
	payloads  map[string]notify.Payload // the accepted body, per key
	badSigs   int
	order     []string // keys in the order they were accepted
	killAt    int      // the attempt of the third notification that triggers the kill
	killReq   chan struct{}
	killed    chan struct{}
	requested bool
}

func (h *flakyHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	key := r.Header.Get(notify.HeaderIdempotencyKey)
	h.mu.Lock()
	if !notify.Verify(h.secret, body, r.Header.Get(notify.HeaderSignature)) {
		h.badSigs++
		h.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	h.attempts[key]++
	n := h.attempts[key]
	if n <= h.failFirst {
		trigger := !h.requested && len(h.order) == 2 && n == h.killAt
		if trigger {
			h.requested = true
		}
		h.mu.Unlock()
		if trigger {
			close(h.killReq)
			<-h.killed
		}
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	var p notify.Payload
	_ = json.Unmarshal(body, &p)
	if h.accepted[key] == 0 {
		h.order = append(h.order, key)
		h.payloads[key] = p
	}
	h.accepted[key]++
	h.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// firstUnaccepted is the key of the notification in retry at the kill.
func (h *flakyHook) firstUnaccepted() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var low uint64
	for key, n := range h.attempts {
		if k, _ := strconv.ParseUint(key, 10, 64); n > 0 && h.accepted[key] == 0 && (low == 0 || k < low) {
			low = k
		}
	}
	return low
}

func (h *flakyHook) acceptedKeys() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.order)
}

// TestNotificationsSurviveASIGKILL is the demonstration: the real
// binary with --notify-url pointing at a receiver that fails the first 3
// attempts of every notification; five snipers are joined and stopped
// through the API (five final Stopped states); the process is SIGKILLed
// while it retries the third notification, and started again on the same
// data directory. Every final state is then accepted exactly once per
// Idempotency-Key (the sequence of its decision), none is missing, none
// is extra, and every request was signed.
func TestNotificationsSurviveASIGKILL(t *testing.T) {
	const secret = "e2e-hook-secret"
	hook := &flakyHook{secret: secret, failFirst: 3, killAt: 2, attempts: map[string]int{}, accepted: map[string]int{},
		payloads: map[string]notify.Payload{}, killReq: make(chan struct{}), killed: make(chan struct{})}
	srv := httptest.NewServer(hook)
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-hook.killed:
		default:
			close(hook.killed) // never blocks the receiver past the test
		}
	})
	dataDir := t.TempDir()
	args := []string{"--data-dir", dataDir, "--checkpoint-every", "1s", "--notify-url", srv.URL + "/hook"}
	env := []string{"SNIPER_NOTIFY_SECRET=" + secret}
	p := testkit.StartSniperProcess(t, args, env...)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	items := []string{"note-1", "note-2", "note-3", "note-4", "note-5"}
	for _, item := range items {
		if code, err := p.Post(ctx, "/api/snipers", fmt.Sprintf(`{"item":%q,"stop_price":1000}`, item)); err != nil || code != http.StatusCreated {
			t.Fatalf("join %s: %d %v", item, code, err)
		}
	}
	c, err := p.Client()
	if err != nil {
		t.Fatal(err)
	}
	for _, item := range items {
		if code, body, err := c.Send(ctx, http.MethodDelete, "/api/snipers/"+item, nil); err != nil || code != http.StatusOK {
			t.Fatalf("stop %s: %d %s %v", item, code, body, err)
		}
	}

	select {
	case <-hook.killReq:
	case <-time.After(60 * time.Second):
		t.Fatalf("the third notification was never retried; accepted %d; log:\n%s", hook.acceptedKeys(), p.LogTail(40))
	}
	p.Kill()
	close(hook.killed)
	if got := hook.acceptedKeys(); got != 2 {
		t.Fatalf("%d notifications accepted before the kill, want 2", got)
	}

	p = testkit.StartSniperProcess(t, args, env...)
	// The new life reads from the durable cursor, not the end of the log.
	testkit.Eventually(t, 30*time.Second, func() bool { return len(p.Logged("notifier following the decisions")) > 0 },
		"the restarted sniper never started its notifier")
	if lines := p.Logged("notifier following the decisions"); len(lines) != 1 {
		t.Fatalf("%d 'notifier following the decisions' lines after the restart, want 1", len(lines))
	} else if from, _ := lines[0]["from"].(float64); from == 0 || from > float64(hook.firstUnaccepted()) {
		t.Fatalf("the restarted notifier reads from %v, after the undelivered %d", lines[0]["from"], hook.firstUnaccepted())
	}
	testkit.Eventually(t, 60*time.Second, func() bool { return hook.acceptedKeys() >= len(items) },
		"not every final state was accepted after the restart")

	// The final decisions, from the log: per item, its change to Stopped.
	want := map[string]string{} // key -> item
	for _, item := range items {
		var hist struct {
			Events []api.Event `json:"events"`
		}
		if err := p.Get(ctx, "/api/snipers/"+item+"/events", &hist); err != nil {
			t.Fatal(err)
		}
		for _, e := range hist.Events {
			var d messages.DecisionEvent
			if e.Subject == "dec."+e.Type && json.Unmarshal(e.Data, &d) == nil && d.Type != messages.TypeClaim &&
				d.State == auction.Stopped && d.From != auction.Stopped {
				want[strconv.FormatUint(e.Seq, 10)] = item
			}
		}
	}
	// Nothing more comes: the backlog is empty and the cursor past them.
	testkit.Eventually(t, 30*time.Second, func() bool {
		c, _ := p.Client()
		_, body, err := c.Send(ctx, http.MethodGet, "/metrics", nil)
		return err == nil && containsLine(string(body), `sniper_follower_undone_messages{follower="notify"} 0`)
	}, "the notify backlog never went back to 0")

	hook.mu.Lock()
	defer hook.mu.Unlock()
	if len(want) != len(items) {
		t.Fatalf("%d final decisions in the log, want %d: %v", len(want), len(items), want)
	}
	for key, item := range want {
		if hook.accepted[key] != 1 {
			t.Errorf("%s's Stopped (seq %s) accepted %d times, want exactly once", item, key, hook.accepted[key])
		}
		if p := hook.payloads[key]; p.Item != item || p.State != auction.Stopped || strconv.FormatUint(p.Seq, 10) != key {
			t.Errorf("key %s: payload %+v, want %s Stopped with seq %s", key, p, item, key)
		}
		if hook.attempts[key] < 4 {
			t.Errorf("key %s accepted after %d attempts, want the 3 failures first", key, hook.attempts[key])
		}
	}
	for key := range hook.accepted {
		if _, ok := want[key]; !ok {
			t.Errorf("accepted a notification for key %s, which is no final state", key)
		}
	}
	if hook.badSigs != 0 {
		t.Errorf("%d requests with a bad signature", hook.badSigs)
	}
	t.Logf("accepted in order %v; attempts %v", hook.order, hook.attempts)
}

func containsLine(text, line string) bool {
	return slices.Contains(strings.Split(text, "\n"), line)
}
