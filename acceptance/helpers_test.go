package acceptance

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
)

// ---- the log, checked for exactly-once ----

// onceReport is what checkExactlyOnce found in one auction's history.
type onceReport struct {
	Inputs, Decisions, Bids, Joins, Claims int
	LastInput                              uint64
}

// checkExactlyOnce reads item's history from l and fails the test unless
// every input (cmd.*, in.*) up to the sniper's final state has exactly one
// decision (a dec.* message carrying its input_seq, stored after it), no
// input was decided twice, and every decision that moved the bid sends
// exactly one BID at the decided price while the others send none.
func checkExactlyOnce(t *testing.T, l *jetstream.Log, item string) onceReport {
	t.Helper()
	recs := history(t, l, item)
	var rep onceReport
	inputs := map[uint64]string{}
	var inputOrder []uint64
	decided := map[uint64]messages.DecisionEvent{}
	var decisions []messages.DecisionEvent
	terminalAt := uint64(0)
	for _, r := range recs {
		_, kind, typ, err := messages.ParseSubject(r.Subject)
		if err != nil {
			t.Fatalf("record %d on a bad subject %s", r.Seq, r.Subject)
		}
		switch kind {
		case messages.KindCmd, messages.KindIn:
			inputs[r.Seq] = kind + "." + typ
			inputOrder = append(inputOrder, r.Seq)
			rep.LastInput = r.Seq
		case messages.KindDec:
			var s messages.DecisionEvent
			if err := json.Unmarshal(r.Data, &s); err != nil {
				t.Fatalf("decision %d: %v", r.Seq, err)
			}
			if s.Type != typ {
				t.Errorf("%s: decision %d on %s has type %q", item, r.Seq, r.Subject, s.Type)
			}
			if s.Type == messages.TypeClaim {
				// An instance that became active: the state as it was,
				// and a JOIN again.
				rep.Claims++
				if n := len(decisions); n == 0 || decisions[n-1].Snapshot != s.Snapshot || decisions[n-1].InputSeq != s.InputSeq {
					t.Errorf("%s: claim %d does not repeat the decision before it: %+v", item, r.Seq, s)
				}
				continue
			}
			if prev, dup := decided[s.InputSeq]; dup {
				t.Errorf("%s: input %d decided twice: %+v and %+v (at %d)", item, s.InputSeq, prev, s, r.Seq)
			}
			if _, ok := inputs[s.InputSeq]; !ok {
				t.Errorf("%s: decision %d decides %d, which is no earlier input of the auction", item, r.Seq, s.InputSeq)
			}
			decided[s.InputSeq] = s
			decisions = append(decisions, s)
			if s.State.Terminal() && terminalAt == 0 {
				terminalAt = s.InputSeq
			}
		}
	}
	rep.Inputs = len(inputs)
	rep.Decisions = len(decided)
	for _, seq := range inputOrder {
		if terminalAt != 0 && seq > terminalAt {
			break // the sniper was finished: later inputs are history only
		}
		if _, ok := decided[seq]; !ok {
			t.Errorf("%s: input %d (%s) has no decision", item, seq, inputs[seq])
		}
	}
	var lastBid int64
	for _, s := range decisions {
		var bids []int64
		for _, r := range s.Send {
			switch r.Type {
			case messages.TypeBid:
				bids = append(bids, r.Price)
				rep.Bids++
			case messages.TypeJoin:
				rep.Joins++
				if inputs[s.InputSeq] != messages.KindCmd+"."+messages.TypeStart {
					t.Errorf("%s: the decision of input %d (%s) sends JOIN", item, s.InputSeq, inputs[s.InputSeq])
				}
			}
		}
		switch {
		case s.LastBid != lastBid && len(bids) != 1:
			t.Errorf("%s: the decision of input %d bid %d but sends %d BIDs", item, s.InputSeq, s.LastBid, len(bids))
		case s.LastBid != lastBid && bids[0] != s.LastBid:
			t.Errorf("%s: the decision of input %d bid %d but sends BID %d", item, s.InputSeq, s.LastBid, bids[0])
		case s.LastBid == lastBid && len(bids) != 0:
			t.Errorf("%s: the decision of input %d did not change the bid but sends %d BIDs", item, s.InputSeq, len(bids))
		}
		lastBid = s.LastBid
	}
	if rep.Joins > 1 {
		t.Errorf("%s: %d decisions send JOIN, want one", item, rep.Joins)
	}
	return rep
}

// waitAllDecided waits until item's last decision has decided its last
// input (or the sniper is finished).
func waitAllDecided(t *testing.T, l *jetstream.Log, item string) {
	t.Helper()
	var last jetstream.StoredDecision
	var lastInput uint64
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		recs, err := l.History(ctx, item)
		if err != nil {
			return false
		}
		for _, r := range recs {
			if _, kind, _, _ := messages.ParseSubject(r.Subject); kind == messages.KindCmd || kind == messages.KindIn {
				lastInput = r.Seq
			}
		}
		s, err := l.LastDecision(ctx, item)
		last = s
		return err == nil && (s.InputSeq >= lastInput || s.State.Terminal())
	}, "%s: the last input never got decided (last decision %+v, last input %d)", item, &last, &lastInput)
}

// countSubject counts the messages of item's history on kind.typ.
func countSubject(t *testing.T, l *jetstream.Log, item, kind, typ string) int {
	t.Helper()
	recs := history(t, l, item)
	n := 0
	for _, r := range recs {
		if r.Subject == messages.Subject(item, kind, typ) {
			n++
		}
	}
	return n
}

// ---- HTTP ----

var httpClient = &http.Client{Timeout: 15 * time.Second}

type check struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

type statusBody struct {
	Ready  bool    `json:"ready"`
	Status string  `json:"status"`
	Checks []check `json:"checks"`
	Error  string  `json:"error"`
}

func (s statusBody) check(name string) (check, bool) {
	for _, c := range s.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return check{}, false
}

// failing says whether the check called name is present and failing.
func (s statusBody) failing(name string) bool {
	c, ok := s.check(name)
	return ok && !c.OK
}

// request makes a request and returns the status, the decoded body (if it
// is JSON) and how long it took; a transport error fails the test.
func request(t *testing.T, method, url, body string) (int, statusBody, []byte, time.Duration) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	began := time.Now()
	res, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	took := time.Since(began)
	var sb statusBody
	_ = json.Unmarshal(data, &sb)
	return res.StatusCode, sb, data, took
}

// ---- the live stream ----

type sseEvent struct {
	Name string
	Data string
}

// sseClient follows /api/stream and records every event.
type sseClient struct {
	mu     sync.Mutex
	events []sseEvent
	cancel context.CancelFunc
	done   chan struct{}
}

func openStream(t *testing.T, baseURL string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/api/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET /api/stream: %v", err)
	}
	if res.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET /api/stream: %d", res.StatusCode)
	}
	c := &sseClient{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Name != "" {
					c.mu.Lock()
					c.events = append(c.events, ev)
					c.mu.Unlock()
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.Name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.Data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	t.Cleanup(c.Close)
	return c
}

func (c *sseClient) Close() {
	c.cancel()
	<-c.done
}

// statuses returns the "status" events received so far, decoded.
func (c *sseClient) statuses() []statusBody {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []statusBody
	for _, ev := range c.events {
		if ev.Name != "status" {
			continue
		}
		var s statusBody
		if json.Unmarshal([]byte(ev.Data), &s) == nil {
			out = append(out, s)
		}
	}
	return out
}

// waitStatus waits for a status event, received after the first skip
// ones, that satisfies ok; it returns the index of that event.
func (c *sseClient) waitStatus(t *testing.T, skip int, what string, ok func(statusBody) bool) int {
	t.Helper()
	found := -1
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		for i, s := range c.statuses() {
			if i >= skip && ok(s) {
				found = i
				return true
			}
		}
		return false
	}, "no status event on /api/stream with %s; got %v", what, lazy(func() any { return c.statuses() }))
	return found
}

// ---- logs ----

type capturedLog struct {
	Level   slog.Level
	Message string
	Attrs   map[string]string
}

// logCapture is a slog handler that records every line (with the attrs
// of With) and passes it on, so tests can wait for what the app reports.
type logCapture struct {
	next  slog.Handler
	attrs []slog.Attr
	store *logStore
}

type logStore struct {
	mu   sync.Mutex
	recs []capturedLog
}

func captureLogs(t *testing.T) (*slog.Logger, *logStore) {
	store := &logStore{}
	return slog.New(&logCapture{next: testkit.Logger(t).Handler(), store: store}), store
}

func (h *logCapture) Enabled(ctx context.Context, l slog.Level) bool { return true }

func (h *logCapture) Handle(ctx context.Context, r slog.Record) error {
	attrs := map[string]string{}
	for _, a := range h.attrs {
		attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	h.store.mu.Lock()
	h.store.recs = append(h.store.recs, capturedLog{Level: r.Level, Message: r.Message, Attrs: attrs})
	h.store.mu.Unlock()
	return h.next.Handle(ctx, r)
}

func (h *logCapture) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCapture{next: h.next.WithAttrs(as), attrs: append(append([]slog.Attr(nil), h.attrs...), as...), store: h.store}
}

func (h *logCapture) WithGroup(name string) slog.Handler {
	return &logCapture{next: h.next.WithGroup(name), attrs: h.attrs, store: h.store}
}

// find returns the captured lines that match.
func (s *logStore) find(match func(capturedLog) bool) []capturedLog {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []capturedLog
	for _, r := range s.recs {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

// ---- a gate in front of the XMPP server ----

// xmppGate is a TCP relay in front of Prosody that the test can close:
// while closed it hangs up on new connections at once, as a server that is
// not there would. It lets a test decide who reconnects first after an
// outage (see TestDecisionsMadeWhileTheAuctionHouseIsDownAreSentLater).
type xmppGate struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	open   bool
	wg     sync.WaitGroup
}

func newXMPPGate(t *testing.T, target string) *xmppGate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &xmppGate{ln: ln, target: target, open: true}
	g.wg.Add(1)
	go g.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		g.wg.Wait()
	})
	return g
}

func (g *xmppGate) Addr() string { return g.ln.Addr().String() }

func (g *xmppGate) SetOpen(open bool) {
	g.mu.Lock()
	g.open = open
	g.mu.Unlock()
}

func (g *xmppGate) serve() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		open := g.open
		g.mu.Unlock()
		if !open {
			_ = c.Close()
			continue
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer c.Close()
			up, err := net.DialTimeout("tcp", g.target, 2*time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			relay := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				// Either side ending ends both.
				_ = dst.Close()
				_ = src.Close()
				done <- struct{}{}
			}
			go relay(up, c)
			go relay(c, up)
			<-done
			<-done
		}()
	}
}

// outageLasts blocks until d has passed since began: how long a scenario
// keeps a server down. It orders nothing; the tests wait on conditions.
func outageLasts(began time.Time, d time.Duration) {
	t := time.NewTimer(time.Until(began.Add(d)))
	defer t.Stop()
	<-t.C
}

// lazy formats its value when a failure message is printed, not before.
type lazy func() any

func (l lazy) String() string { return fmt.Sprint(l()) }

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
}

// history reads item's messages from the log, retrying for a while: right
// after a cluster fail-over a read can time out once while the client and
// the ordered consumer behind it find the new leaders.
func history(t *testing.T, l *jetstream.Log, item string) []jetstream.Record {
	t.Helper()
	var recs []jetstream.Record
	var err error
	testkit.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		recs, err = l.History(ctx, item)
		return err == nil
	}, "history of %s: %v", item, &err)
	return recs
}
