package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/notify"
	"sniper/testkit"
)

const secret = "s3cr3t"

// receiver is an httptest server that fails the first failFirst attempts
// of each Idempotency-Key with a 500 and records what it accepted.
type receiver struct {
	t         testing.TB
	srv       *httptest.Server
	failFirst int
	secret    string

	mu       sync.Mutex
	attempts map[string]int
	accepted []delivery
	badSigs  int
}

type delivery struct {
	key     string
	payload notify.Payload
}

func newReceiver(t testing.TB, failFirst int, secret string) *receiver {
	r := &receiver{t: t, failFirst: failFirst, secret: secret, attempts: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil || req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.secret != "" && !notify.Verify(r.secret, body, req.Header.Get(notify.HeaderSignature)) {
		r.badSigs++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	key := req.Header.Get(notify.HeaderIdempotencyKey)
	r.attempts[key]++
	if r.attempts[key] <= r.failFirst {
		http.Error(w, "not yet", http.StatusInternalServerError)
		return
	}
	var p notify.Payload
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.accepted = append(r.accepted, delivery{key: key, payload: p})
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) got() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.accepted)
}

func (r *receiver) states() []string {
	var out []string
	for _, d := range r.got() {
		out = append(out, d.payload.Item+":"+string(d.payload.State))
	}
	return out
}

type counts struct{ sent, failed atomic.Int64 }

func (c *counts) NotificationSent()   { c.sent.Add(1) }
func (c *counts) NotificationFailed() { c.failed.Add(1) }

func start(t *testing.T, log *jetstream.Log, cfg notify.Config) *notify.Notifier {
	t.Helper()
	cfg.Logger = testkit.Logger(t)
	cfg.MinBackoff, cfg.MaxBackoff = 5*time.Millisecond, 20*time.Millisecond
	cfg.CheckpointEvery = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := notify.Start(ctx, log, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

// decide appends a decision as the sniper actor would: typ, the state
// before and after.
func decide(t *testing.T, log *jetstream.Log, item, typ string, from, to auction.State) uint64 {
	t.Helper()
	d := messages.DecisionEvent{Type: typ, Snapshot: auction.Snapshot{Item: item, State: to, LastPrice: 100, LastBid: 110, StopPrice: 500}, From: from}
	if to == auction.Failed {
		d.Reason = "unreadable"
	}
	seq, err := log.Append(context.Background(), messages.DecisionSubject(item, typ), d)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func startCmd(t *testing.T, log *jetstream.Log, item, url string) {
	t.Helper()
	c := messages.NewStart(item, 500)
	c.NotifyURL = url
	if _, err := log.Append(context.Background(), messages.Subject(item, messages.KindCmd, messages.TypeStart), c); err != nil {
		t.Fatal(err)
	}
}

// history counts item's records of type typ.
func history(t *testing.T, log *jetstream.Log, item, typ string) []json.RawMessage {
	t.Helper()
	recs, err := log.History(context.Background(), item)
	if err != nil {
		t.Fatal(err)
	}
	var out []json.RawMessage
	for _, r := range recs {
		if r.Subject == messages.Subject(item, messages.KindOut, typ) {
			out = append(out, r.Data)
		}
	}
	return out
}

func waitCheckpoint(t *testing.T, n *notify.Notifier, seq uint64) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() bool { return n.Checkpoint() >= seq }, "checkpoint below %d", seq)
}

// TestFinalStatesSignedAndKeyed: by default only a change to a final state
// is notified (not a claim, not an unchanged state, not Joining/Bidding),
// signed with the secret, its Idempotency-Key the decision's sequence,
// and recorded as out.notified in the auction's history.
func TestFinalStatesSignedAndKeyed(t *testing.T) {
	nats := testkit.StartNATS(t)
	rcv := newReceiver(t, 0, secret)
	c := &counts{}
	n := start(t, nats.Log, notify.Config{URL: rcv.srv.URL, Secret: secret, Observer: c})

	decide(t, nats.Log, "item-a", messages.TypeJoin, "", auction.Joining)
	decide(t, nats.Log, "item-a", messages.TypeBid, auction.Joining, auction.Bidding)
	decide(t, nats.Log, "item-a", messages.TypeState, auction.Bidding, auction.Bidding)
	decide(t, nats.Log, "item-a", messages.TypeClaim, "", auction.Bidding)
	lost := decide(t, nats.Log, "item-a", messages.TypeState, auction.Bidding, auction.Lost)
	decide(t, nats.Log, "item-b", messages.TypeJoin, "", auction.Joining)
	stopped := decide(t, nats.Log, "item-b", messages.TypeState, auction.Joining, auction.Stopped)
	decide(t, nats.Log, "item-b", messages.TypeState, auction.Stopped, auction.Stopped) // a price while stopped
	failed := decide(t, nats.Log, "item-c", messages.TypeState, auction.Joining, auction.Failed)
	last := decide(t, nats.Log, "item-c", messages.TypeClaim, "", auction.Failed)

	waitCheckpoint(t, n, last)
	if got, want := rcv.states(), []string{"item-a:Lost", "item-b:Stopped", "item-c:Failed"}; !slices.Equal(got, want) {
		t.Fatalf("notified %v, want %v", got, want)
	}
	for i, seq := range []uint64{lost, stopped, failed} {
		d := rcv.got()[i]
		if d.key != strconv.FormatUint(seq, 10) || d.payload.Seq != seq {
			t.Errorf("notification %d: key %q seq %d, want %d", i, d.key, d.payload.Seq, seq)
		}
		if d.payload.Time.IsZero() || d.payload.StopPrice != 500 || d.payload.LastPrice != 100 || d.payload.LastBid != 110 {
			t.Errorf("notification %d: payload %+v", i, d.payload)
		}
	}
	if p := rcv.got()[0].payload; p.From != auction.Bidding {
		t.Errorf("from = %q, want Bidding", p.From)
	}
	if p := rcv.got()[2].payload; p.Reason != "unreadable" {
		t.Errorf("reason = %q, want the Failed decision's", p.Reason)
	}
	if rcv.badSigs != 0 {
		t.Errorf("%d bad signatures", rcv.badSigs)
	}
	if c.sent.Load() != 3 || c.failed.Load() != 0 {
		t.Errorf("observer: %d sent, %d failed; want 3, 0", c.sent.Load(), c.failed.Load())
	}
	recs := history(t, nats.Log, "item-a", messages.TypeNotified)
	var rec messages.NotifiedEvent
	if len(recs) != 1 || json.Unmarshal(recs[0], &rec) != nil || rec.EventSeq != lost || rec.Attempts != 1 {
		t.Errorf("item-a's notified records: %s", recs)
	}
}

// TestAllStateChanges: with On=all every change of state is notified, in
// log order, and still no claim nor unchanged state.
func TestAllStateChanges(t *testing.T) {
	nats := testkit.StartNATS(t)
	rcv := newReceiver(t, 0, "")
	n := start(t, nats.Log, notify.Config{URL: rcv.srv.URL, On: notify.OnAll})
	decide(t, nats.Log, "item-a", messages.TypeJoin, "", auction.Joining)
	decide(t, nats.Log, "item-a", messages.TypeBid, auction.Joining, auction.Bidding)
	decide(t, nats.Log, "item-a", messages.TypeState, auction.Bidding, auction.Bidding)
	decide(t, nats.Log, "item-a", messages.TypeClaim, "", auction.Bidding)
	decide(t, nats.Log, "item-a", messages.TypeState, auction.Bidding, auction.Winning)
	last := decide(t, nats.Log, "item-a", messages.TypeState, auction.Winning, auction.Won)
	waitCheckpoint(t, n, last)
	if got, want := rcv.states(), []string{"item-a:Joining", "item-a:Bidding", "item-a:Winning", "item-a:Won"}; !slices.Equal(got, want) {
		t.Fatalf("notified %v, want %v", got, want)
	}
	if _, err := notify.Start(context.Background(), nats.Log, notify.Config{On: "some"}); err == nil {
		t.Error("On \"some\" accepted")
	}
}

// TestRetriedUntilAccepted: a receiver answering 500 three times gets the
// notification again, with the same key and signature, until it accepts
// it; one notify_failed record (not one per retry), then notified with 4
// attempts; the next event waits behind it (one at a time, in order).
func TestRetriedUntilAccepted(t *testing.T) {
	nats := testkit.StartNATS(t)
	rcv := newReceiver(t, 3, secret)
	c := &counts{}
	n := start(t, nats.Log, notify.Config{URL: rcv.srv.URL, Secret: secret, Observer: c})
	first := decide(t, nats.Log, "item-a", messages.TypeState, auction.Bidding, auction.Won)
	second := decide(t, nats.Log, "item-b", messages.TypeState, auction.Bidding, auction.Lost)
	waitCheckpoint(t, n, second)
	got := rcv.got()
	if len(got) != 2 || got[0].key != fmt.Sprint(first) || got[1].key != fmt.Sprint(second) {
		t.Fatalf("accepted %+v, want %d then %d", got, first, second)
	}
	rcv.mu.Lock()
	if rcv.attempts[fmt.Sprint(first)] != 4 || rcv.badSigs != 0 {
		t.Errorf("attempts %v, bad signatures %d: want 4 each, none bad", rcv.attempts, rcv.badSigs)
	}
	rcv.mu.Unlock()
	if c.sent.Load() != 2 || c.failed.Load() != 6 {
		t.Errorf("observer: %d sent, %d failed; want 2, 6", c.sent.Load(), c.failed.Load())
	}
	var failed messages.NotifyFailedEvent
	if recs := history(t, nats.Log, "item-a", messages.TypeNotifyFailed); len(recs) != 1 || json.Unmarshal(recs[0], &failed) != nil || failed.EventSeq != first || failed.Reason == "" {
		t.Errorf("item-a's notify_failed records: %s, want one for %d with a reason", recs, first)
	}
	var done messages.NotifiedEvent
	if recs := history(t, nats.Log, "item-a", messages.TypeNotified); len(recs) != 1 || json.Unmarshal(recs[0], &done) != nil || done.Attempts != 4 {
		t.Errorf("item-a's notified records: %s, want one with 4 attempts", recs)
	}
}

// TestPerSniperURL: a sniper's notify_url replaces the global URL for it;
// without either nothing is sent, and the cursor moves on.
func TestPerSniperURL(t *testing.T) {
	nats := testkit.StartNATS(t)
	global, own := newReceiver(t, 0, ""), newReceiver(t, 0, "")
	n := start(t, nats.Log, notify.Config{URL: global.srv.URL})
	startCmd(t, nats.Log, "item-own", own.srv.URL)
	startCmd(t, nats.Log, "item-global", "")
	decide(t, nats.Log, "item-own", messages.TypeState, auction.Bidding, auction.Won)
	last := decide(t, nats.Log, "item-global", messages.TypeState, auction.Bidding, auction.Lost)
	waitCheckpoint(t, n, last)
	if got := own.states(); !slices.Equal(got, []string{"item-own:Won"}) {
		t.Errorf("the sniper's own receiver got %v", got)
	}
	if got := global.states(); !slices.Equal(got, []string{"item-global:Lost"}) {
		t.Errorf("the global receiver got %v", got)
	}

	nats2 := testkit.StartNATS(t)
	n2 := start(t, nats2.Log, notify.Config{})
	startCmd(t, nats2.Log, "item-own", own.srv.URL)
	startCmd(t, nats2.Log, "item-none", "")
	decide(t, nats2.Log, "item-none", messages.TypeState, auction.Bidding, auction.Lost)
	last = decide(t, nats2.Log, "item-own", messages.TypeState, auction.Bidding, auction.Stopped)
	waitCheckpoint(t, n2, last)
	if got := own.states(); !slices.Equal(got, []string{"item-own:Won", "item-own:Stopped"}) {
		t.Errorf("without a global URL, the sniper's own receiver got %v", got)
	}
}

// TestRestartResendsWhatWasNotDelivered: the first start begins at the
// end of the log (the past is not notified); a notification never
// accepted before a stop is sent after the next start with the same key,
// and one accepted is not sent again.
func TestRestartResendsWhatWasNotDelivered(t *testing.T) {
	nats := testkit.StartNATS(t)
	decide(t, nats.Log, "item-old", messages.TypeState, auction.Bidding, auction.Won)
	rcv := newReceiver(t, 0, "")
	down := atomic.Bool{}
	gate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		rcv.serve(w, r)
	}))
	t.Cleanup(gate.Close)
	n := start(t, nats.Log, notify.Config{URL: gate.URL})
	delivered := decide(t, nats.Log, "item-a", messages.TypeState, auction.Bidding, auction.Won)
	waitCheckpoint(t, n, delivered)
	down.Store(true)
	held := decide(t, nats.Log, "item-b", messages.TypeState, auction.Bidding, auction.Lost)
	testkit.Eventually(t, 10*time.Second, func() bool { return len(history(t, nats.Log, "item-b", messages.TypeNotifyFailed)) == 1 }, "no notify_failed record")
	if n.Backlog() != 1 {
		t.Errorf("backlog %d while the receiver is down, want 1", n.Backlog())
	}
	n.Stop()
	if n.Checkpoint() >= held {
		t.Fatalf("checkpoint %d past the undelivered %d", n.Checkpoint(), held)
	}
	down.Store(false)
	n = start(t, nats.Log, notify.Config{URL: gate.URL})
	waitCheckpoint(t, n, held)
	if got, want := rcv.states(), []string{"item-a:Won", "item-b:Lost"}; !slices.Equal(got, want) {
		t.Fatalf("notified %v, want %v (the past not notified, each once)", got, want)
	}
	if key := rcv.got()[1].key; key != fmt.Sprint(held) {
		t.Errorf("key %s after the restart, want %d", key, held)
	}
}

// TestARestartFromAnOldCheckpointNotifiesNothingTwice: the checkpoint
// lags the deliveries; rewound to 0 (as a crash before its write would
// leave it), a restart still sends nothing the receiver accepted, because
// the last out.notified record says how far the deliveries got.
func TestARestartFromAnOldCheckpointNotifiesNothingTwice(t *testing.T) {
	nats := testkit.StartNATS(t)
	rcv := newReceiver(t, 0, "")
	n := start(t, nats.Log, notify.Config{URL: rcv.srv.URL})
	decide(t, nats.Log, "item-a", messages.TypeState, auction.Bidding, auction.Won)
	last := decide(t, nats.Log, "item-b", messages.TypeState, auction.Bidding, auction.Lost)
	waitCheckpoint(t, n, last)
	n.Stop()
	if _, err := nats.Log.Append(context.Background(), jetstream.CheckpointSubject(notify.FollowerName),
		map[string]any{"type": "checkpoint", "follower": notify.FollowerName, "seq": 0}); err != nil {
		t.Fatal(err)
	}
	n = start(t, nats.Log, notify.Config{URL: rcv.srv.URL})
	if n.From() != 1 {
		t.Fatalf("restarted from %d, want 1 (the rewound checkpoint)", n.From())
	}
	next := decide(t, nats.Log, "item-c", messages.TypeState, auction.Bidding, auction.Stopped)
	waitCheckpoint(t, n, next)
	if got, want := rcv.states(), []string{"item-a:Won", "item-b:Lost", "item-c:Stopped"}; !slices.Equal(got, want) {
		t.Fatalf("notified %v, want %v: each once", got, want)
	}
}

// TestARedirectIsNotADelivery: a 3xx is a failed attempt (a followed
// redirect would turn the POST into a GET whose 2xx means nothing).
func TestARedirectIsNotADelivery(t *testing.T) {
	nats := testkit.StartNATS(t)
	var gets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			gets.Add(1)
			return
		}
		http.Redirect(w, r, "/moved", http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	c := &counts{}
	n := start(t, nats.Log, notify.Config{URL: srv.URL + "/hook", Observer: c})
	seq := decide(t, nats.Log, "item-a", messages.TypeState, auction.Bidding, auction.Won)
	testkit.Eventually(t, 10*time.Second, func() bool { return c.failed.Load() >= 3 }, "the redirect was not retried")
	if n.Checkpoint() >= seq || c.sent.Load() != 0 || gets.Load() != 0 {
		t.Errorf("checkpoint %d (event %d), %d sent, %d requests to the redirect's target: want none delivered", n.Checkpoint(), seq, c.sent.Load(), gets.Load())
	}
}
