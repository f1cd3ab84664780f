package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"sniper/api"
	"sniper/internal/app"
	"sniper/messages"
	"sniper/testkit"
)

// The client verbs are tested against the real sniper, started in-process
// on a temp dir and free ports.

// startCLIApp starts the app on dir with its API on httpAddr; it is
// stopped when the test ends (stopping it earlier is fine).
func startCLIApp(t *testing.T, dir, httpAddr string) *app.App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := app.Start(ctx, app.Config{
		DataDir:    dir,
		NATSListen: "127.0.0.1:0",
		HTTPAddr:   httpAddr,
		Logger:     testkit.Logger(t),
	})
	if err != nil {
		t.Fatalf("start app: %v", err)
	}
	t.Cleanup(func() { stopCLIApp(a) })
	return a
}

func stopCLIApp(a *app.App) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.Stop(ctx)
}

// cli runs a verb against a, wanting exit status code; it returns stdout.
func cli(t *testing.T, a *app.App, code int, args ...string) string {
	t.Helper()
	c, out, errOut := runCLI(t, append(args, "--api", a.HTTPURL())...)
	if c != code {
		t.Fatalf("sniper %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), c, code, out, errOut)
	}
	return out
}

// cliErr runs a verb that must fail with code and returns its stderr,
// which must be one line.
func cliErr(t *testing.T, code int, args ...string) string {
	t.Helper()
	c, out, errOut := runCLI(t, args...)
	if c != code {
		t.Fatalf("sniper %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), c, code, out, errOut)
	}
	if strings.Count(errOut, "\n") != 1 || !strings.HasSuffix(errOut, "\n") {
		t.Fatalf("sniper %s: stderr is not one line: %q", strings.Join(args, " "), errOut)
	}
	return errOut
}

func appendInput(t *testing.T, a *app.App, item, typ string, payload any) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	seq, err := a.Log().Append(ctx, messages.Subject(item, messages.KindIn, typ), payload)
	if err != nil {
		t.Fatalf("append %s for %s: %v", typ, item, err)
	}
	return seq
}

// syncBuffer is an output the test can wait on: every write wakes the
// waiters.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.changed)
	b.changed = make(chan struct{})
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until cond holds for what was written so far.
func (b *syncBuffer) waitFor(t *testing.T, what string, cond func(string) bool) string {
	t.Helper()
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		s, ch := b.buf.String(), b.changed
		b.mu.Unlock()
		if cond(s) {
			return s
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; output so far:\n%s", what, s)
		}
	}
}

// waitLine waits for a line containing every one of words.
func (b *syncBuffer) waitLine(t *testing.T, words ...string) string {
	t.Helper()
	var found string
	b.waitFor(t, fmt.Sprintf("a line with %q", words), func(s string) bool {
		for _, line := range strings.Split(s, "\n") {
			if containsAll(line, words...) {
				found = line
				return true
			}
		}
		return false
	})
	return found
}

func containsAll(s string, words ...string) bool {
	for _, w := range words {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// watch runs `sniper watch args` until the test ends or stop is called,
// which returns its exit status.
type watchRun struct {
	out, errOut *syncBuffer
	cancel      context.CancelFunc
	done        chan int
}

func startWatch(t *testing.T, args ...string) *watchRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchRun{out: newSyncBuffer(), errOut: newSyncBuffer(), cancel: cancel, done: make(chan int, 1)}
	go func() { w.done <- run(ctx, append([]string{"watch"}, args...), w.out, w.errOut) }()
	t.Cleanup(func() { w.stop(t) })
	return w
}

func (w *watchRun) stop(t *testing.T) int {
	t.Helper()
	w.cancel()
	select {
	case code := <-w.done:
		w.done <- code // stop is idempotent
		return code
	case <-time.After(10 * time.Second):
		t.Fatalf("sniper watch still running 10s after its context ended")
		return -1
	}
}

// jsonLines is what a --json watch printed, one snapshot a line.
func jsonLines(t *testing.T, s string) []api.View {
	t.Helper()
	var out []api.View
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var v api.View
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("watch --json printed a line that is not a snapshot: %q: %v", line, err)
		}
		out = append(out, v)
	}
	return out
}

// waitJSONState waits for a --json watch to print item in state.
func waitJSONState(t *testing.T, w *watchRun, item, state string) api.View {
	t.Helper()
	var found api.View
	w.out.waitFor(t, item+" "+state+" from watch --json", func(s string) bool {
		for _, v := range jsonLines(t, s) {
			if v.Item == item && string(v.State) == state {
				found = v
				return true
			}
		}
		return false
	})
	return found
}

var historyLine = regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3}  +#(\d+)  (.+)$`)

// historyEvents parses `sniper history` output into seq -> description,
// past the chart above the events if there is one.
func historyEvents(t *testing.T, out string) (seqs []string, descs []string) {
	t.Helper()
	if chart, events, ok := strings.Cut(out, "\n\n"); ok && !historyLine.MatchString(strings.SplitN(chart, "\n", 2)[0]) {
		out = events
	}
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		m := historyLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("history line %q is not TIME  #SEQ  DESCRIPTION\n%s", line, out)
		}
		seqs, descs = append(seqs, m[1]), append(descs, m[2])
	}
	return seqs, descs
}

func TestCLIJoinListStopHistory(t *testing.T) {
	clearSniperEnv(t)
	a := startCLIApp(t, t.TempDir(), "127.0.0.1:0")
	const item, other = "item-54321", "item-0001"

	if out := cli(t, a, 0, "list"); !strings.Contains(out, "no snipers yet") {
		t.Fatalf("list of a fresh sniper: %q, want no snipers", out)
	}
	// The stream tells the test when the sniper has decided.
	w := startWatch(t, "--json", "--api", a.HTTPURL())

	// join: 201 then 200, flags after or before the item.
	out := cli(t, a, 0, "join", item, "--stop-price", "1100")
	if want := "joined item-54321: Joining, stop price 1100"; !strings.HasPrefix(out, want) {
		t.Fatalf("join: %q, want %q", out, want)
	}
	out = cli(t, a, 0, "join", "--stop-price", "1100", item)
	if want := "already joined item-54321: Joining, stop price 1100"; !strings.HasPrefix(out, want) {
		t.Fatalf("second join: %q, want %q", out, want)
	}
	out = cli(t, a, 0, "join", item, "--stop-price=5000")
	wantMentions(t, "join with another stop price", out, "already joined", "stop price 1100", "stays 1100")
	var joined api.View
	if err := json.Unmarshal([]byte(cli(t, a, 0, "join", other, "--stop-price", "300", "--json")), &joined); err != nil {
		t.Fatalf("join --json: %v", err)
	}
	if joined.Item != other || joined.State != "Joining" || joined.StopPrice != 300 {
		t.Fatalf("join --json = %+v, want %s Joining 300", joined, other)
	}

	// A price from someone else: the sniper bids 1098.
	appendInput(t, a, item, messages.TypePrice, messages.NewPrice(item, 1000, 98, "other bidder", false))
	if s := waitJSONState(t, w, item, "Bidding"); s.LastPrice != 1000 || s.LastBid != 1098 {
		t.Fatalf("after the price: %+v, want Bidding 1000/1098", s)
	}
	// Something unreadable: the other one fails, with a reason.
	appendInput(t, a, other, messages.TypeMalformed, messages.NewMalformed(other, "SOLVersion: 1.1; Event: BOGUS;", "unknown event BOGUS"))
	waitJSONState(t, w, other, "Failed")

	// list: an aligned table, in item order.
	out = cli(t, a, 0, "list")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("list: %d lines, want a header and 2 snipers:\n%s", len(lines), out)
	}
	if f := strings.Fields(lines[0]); strings.Join(f, " ") != "ITEM STOP LAST-PRICE LAST-BID STATE" {
		t.Fatalf("list header %q", lines[0])
	}
	if f := strings.Fields(lines[1]); len(f) < 5 || f[0] != other || f[1] != "300" || f[2] != "-" || f[3] != "-" || f[4] != "Failed:" {
		t.Fatalf("list row %q, want %s 300 - - Failed: reason", lines[1], other)
	}
	wantMentions(t, "list", lines[1], "unknown event BOGUS")
	if f := strings.Fields(lines[2]); strings.Join(f, " ") != item+" 1100 1000 1098 Bidding" {
		t.Fatalf("list row %q, want %s 1100 1000 1098 Bidding", lines[2], item)
	}
	for _, col := range []string{"STOP", "LAST-PRICE", "LAST-BID", "STATE"} {
		at := strings.Index(lines[0], col)
		for _, row := range lines[1:] {
			if at >= len(row) || row[at] == ' ' || row[at-1] != ' ' {
				t.Fatalf("list: column %s not aligned:\n%s", col, out)
			}
		}
	}
	// list --json: the API's answer.
	var list struct{ Snipers []api.View }
	if err := json.Unmarshal([]byte(cli(t, a, 0, "list", "--json")), &list); err != nil {
		t.Fatalf("list --json: %v", err)
	}
	if len(list.Snipers) != 2 || list.Snipers[1].Item != item || list.Snipers[1].LastBid != 1098 || list.Snipers[0].Reason == "" {
		t.Fatalf("list --json = %+v", list.Snipers)
	}

	// history: one line per event, the price and the bid among them.
	out = cli(t, a, 0, "history", item)
	seqs, descs := historyEvents(t, out)
	want := []string{
		"joined, stop price 1100",
		"decided to join; now Joining (last price -, last bid -)",
		"price 1000 (+98) by other bidder",
		"decided to bid 1098; now Bidding (last price 1000, last bid 1098)",
	}
	if strings.Join(descs, "\n") != strings.Join(want, "\n") {
		t.Fatalf("history:\n%s\nwant the events:\n%s", out, strings.Join(want, "\n"))
	}
	// Above the events, the chart: the one bid marked, the stop line.
	chart, _, _ := strings.Cut(out, "\n\n")
	if !strings.HasPrefix(chart, "price 1000, 1 bid by the sniper (●), stop 1100 (╌)\n") ||
		strings.Count(chart, "●") != 2 || !strings.Contains(chart, "╌ stop 1100\n") || !strings.HasSuffix(chart, "now Bidding") {
		t.Fatalf("history's chart:\n%s\nwant the price, one bid, the stop line and the state", chart)
	}
	if noChart := cli(t, a, 0, "history", item, "--no-chart"); strings.Contains(noChart, "●") || !historyLine.MatchString(strings.SplitN(noChart, "\n", 2)[0]) {
		t.Fatalf("history --no-chart:\n%s\nwant the events only", noChart)
	}
	out = cli(t, a, 0, "history", other)
	wantMentions(t, "history of the failed sniper", out,
		`unreadable message from the auction house: "SOLVersion: 1.1; Event: BOGUS;" (unknown event BOGUS)`,
		"now Failed: unknown event BOGUS")
	var hist struct{ Events []api.Event }
	if err := json.Unmarshal([]byte(cli(t, a, 0, "history", item, "--json")), &hist); err != nil || len(hist.Events) != len(want) {
		t.Fatalf("history --json: %d events (%v), want %d", len(hist.Events), err, len(want))
	}

	// history --at: back to after the first decision, while it is Bidding now.
	firstSnap, lastSeq := seqs[1], seqs[len(seqs)-1]
	out = cli(t, a, 0, "history", item, "--at", firstSnap)
	_, descs = historyEvents(t, strings.SplitN(out, "\n\n", 2)[0])
	if len(descs) != 2 || descs[1] != want[1] {
		t.Fatalf("history --at %s lists %q, want the first two events", firstSnap, descs)
	}
	wantMentions(t, "history --at", out, "as of #"+firstSnap+": Joining, stop price 1100, last price -, last bid -", "2 later events")
	if strings.Contains(out, "Bidding") || strings.Contains(out, "price 1000") {
		t.Fatalf("history --at %s shows what came later:\n%s", firstSnap, out)
	}
	// Flags first works as well; and the start alone is not decided yet.
	out = cli(t, a, 0, "history", "--at", seqs[0], item)
	wantMentions(t, "history --at the start", out, "joined, stop price 1100", "was not decided on yet")
	// After the price but before its decision: still Joining.
	out = cli(t, a, 0, "history", item, "--at", seqs[2])
	wantMentions(t, "history --at the price", out, "price 1000 (+98) by other bidder", "as of #"+seqs[2]+": Joining", "is #"+firstSnap)
	var at struct {
		At     uint64
		State  *api.View
		Events []api.Event
	}
	if err := json.Unmarshal([]byte(cli(t, a, 0, "history", item, "--at", firstSnap, "--json")), &at); err != nil {
		t.Fatalf("history --at --json: %v", err)
	}
	if at.State == nil || at.State.State != "Joining" || len(at.Events) != 2 {
		t.Fatalf("history --at %s --json = %+v, want Joining after 2 events", firstSnap, at)
	}
	out = cli(t, a, 0, "history", item, "--at", lastSeq)
	wantMentions(t, "history --at the last event", out, "as of #"+lastSeq+": Bidding, stop price 1100, last price 1000, last bid 1098")
	errOut := cliErr(t, 1, "history", item, "--at", "9999", "--api", a.HTTPURL())
	if want := "sniper: item-54321 has no event #9999: its history ends at #" + lastSeq + "\n"; errOut != want {
		t.Fatalf("history --at beyond the end: %q, want %q", errOut, want)
	}

	// stop: the new state; again: harmless; unknown: the API's error.
	out = cli(t, a, 0, "stop", item)
	if want := "stopped item-54321: Stopped, stop price 1100, last price 1000, last bid 1098\n"; out != want {
		t.Fatalf("stop: %q, want %q", out, want)
	}
	waitJSONState(t, w, item, "Stopped")
	cli(t, a, 0, "stop", item)
	out = cli(t, a, 0, "stop", other)
	wantMentions(t, "stop of a failed sniper", out, "had already ended: Failed")
	if f := strings.Fields(strings.Split(cli(t, a, 0, "list"), "\n")[2]); f[len(f)-1] != "Stopped" {
		t.Fatalf("list after stop: %q, want Stopped", f)
	}
	if errOut := cliErr(t, 1, "stop", "item-unknown", "--api", a.HTTPURL()); errOut != "sniper: no sniper for item-unknown\n" {
		t.Fatalf("stop of an unknown item: %q", errOut)
	}
	if errOut := cliErr(t, 1, "history", "item-unknown", "--api", a.HTTPURL()); errOut != "sniper: no events for item-unknown\n" {
		t.Fatalf("history of an unknown item: %q", errOut)
	}

	// set: a stopped sniper resumes from the last price; what cannot be
	// done is refused, saying why.
	out = cli(t, a, 0, "set", item, "--stop-price", "1200")
	if want := "item-54321: Bidding, stop price 1200, last price 1000, last bid 1098\n"; out != want {
		t.Fatalf("set on a stopped sniper: %q, want %q", out, want)
	}
	if errOut := cliErr(t, 1, "set", item, "--stop-price", "1000", "--api", a.HTTPURL()); !strings.Contains(errOut, "a bid of 1098 standing") {
		t.Fatalf("set below the standing bid: %q", errOut)
	}
	if errOut := cliErr(t, 1, "set", other, "--stop-price", "1000", "--api", a.HTTPURL()); !strings.Contains(errOut, "has ended (Failed)") {
		t.Fatalf("set on a failed sniper: %q", errOut)
	}
	if errOut := cliErr(t, 2, "set", item, "--api", a.HTTPURL()); !strings.Contains(errOut, "--stop-price is required") {
		t.Fatalf("set without --stop-price: %q", errOut)
	}
}

func TestCLIWatch(t *testing.T) {
	clearSniperEnv(t)
	dir := t.TempDir()
	a := startCLIApp(t, dir, "127.0.0.1:0")
	base := a.HTTPURL()
	cli(t, a, 0, "join", "item-a", "--stop-price", "1100")

	lines := startWatch(t, "--api", base)
	js := startWatch(t, "--api", base, "--json")
	// The terminal view, drawn into a buffer.
	term := newSyncBuffer()
	c, err := newClient(base, "")
	if err != nil {
		t.Fatal(err)
	}
	termCtx, stopTerm := context.WithCancel(context.Background())
	termDone := make(chan error, 1)
	go func() {
		tw := &watcher{c: c, out: term, errOut: term, tty: true, snipers: map[string]api.View{}}
		termDone <- tw.run(termCtx)
	}()
	defer func() { stopTerm(); <-termDone }()

	// The state at connect, and the service's status.
	lines.out.waitLine(t, "item-a  Joining, stop price 1100, last price -, last bid -")
	lines.out.waitLine(t, "auction house: not configured; event log: ok")
	waitJSONState(t, js, "item-a", "Joining")
	term.waitFor(t, "the table on the terminal", func(s string) bool {
		return strings.Contains(s, clearScreen) && containsAll(s, "auction house: not configured", "ITEM", "STATE", "item-a", "Joining")
	})

	// Changes: a new sniper, a bid.
	cli(t, a, 0, "join", "item-b", "--stop-price", "50")
	lines.out.waitLine(t, "item-b  Joining, stop price 50")
	appendInput(t, a, "item-a", messages.TypePrice, messages.NewPrice("item-a", 1000, 98, "other bidder", false))
	line := lines.out.waitLine(t, "item-a  Bidding")
	if !regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3}  item-a  Bidding, stop price 1100, last price 1000, last bid 1098$`).MatchString(line) {
		t.Fatalf("watch line %q, want TIME  item-a  Bidding, stop price 1100, last price 1000, last bid 1098", line)
	}
	if s := waitJSONState(t, js, "item-a", "Bidding"); s.LastBid != 1098 || s.StopPrice != 1100 {
		t.Fatalf("watch --json: %+v", s)
	}
	term.waitFor(t, "the redrawn table", func(s string) bool {
		screens := strings.Split(s, clearScreen)
		last := screens[len(screens)-1]
		return containsAll(last, "item-a", "Bidding", "1098", "item-b")
	})

	// The service goes away and comes back on the same address: watch
	// says so, reconnects and goes on.
	stopCLIApp(a)
	lines.errOut.waitLine(t, "sniper: lost the stream")
	a = startCLIApp(t, dir, strings.TrimPrefix(base, "http://"))
	lines.errOut.waitLine(t, "sniper: watching "+base+" again")
	cli(t, a, 0, "stop", "item-a")
	lines.out.waitLine(t, "item-a  Stopped, stop price 1100, last price 1000, last bid 1098")
	waitJSONState(t, js, "item-a", "Stopped")

	// Ctrl-C: exit 0.
	if code := lines.stop(t); code != 0 {
		t.Fatalf("watch exit %d after its context ended, want 0; stderr:\n%s", code, lines.errOut)
	}
	if code := js.stop(t); code != 0 {
		t.Fatalf("watch --json exit %d, want 0; stderr:\n%s", code, js.errOut)
	}
	// Each snapshot once, though the stream sent the whole state again
	// on reconnecting: the JSON lines are the changes.
	seen := map[api.View]bool{}
	for _, v := range jsonLines(t, js.out.String()) {
		if seen[v] {
			t.Fatalf("watch --json printed %+v twice:\n%s", v, js.out.String())
		}
		seen[v] = true
	}
	if strings.Contains(js.out.String(), "auction house") {
		t.Fatalf("watch --json printed more than snapshots:\n%s", js.out)
	}
}

// closedPort is an address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestCLIWithoutARunningSniper(t *testing.T) {
	clearSniperEnv(t)
	base := closedPort(t)
	want := "sniper: cannot reach the sniper at " + base + " (is 'sniper run' running?)\n"
	for _, args := range [][]string{
		{"list"},
		{"join", "item-1", "--stop-price", "10"},
		{"stop", "item-1"},
		{"history", "item-1"},
		{"history", "item-1", "--at", "3"},
		{"watch"},
		{"list", "--json"},
	} {
		if got := cliErr(t, 1, append(args, "--api", base)...); got != want {
			t.Errorf("sniper %v: stderr %q, want %q", args, got, want)
		}
	}
	// The default, and SNIPER_API, name where they looked.
	t.Setenv("SNIPER_API", strings.TrimPrefix(base, "http://")+"/")
	if got := cliErr(t, 1, "list"); got != want {
		t.Errorf("SNIPER_API=%s: stderr %q, want %q", base, got, want)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	clearSniperEnv(t)
	base := closedPort(t) // a usage error never gets as far as a request
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"join"}, "missing ITEM"},
		{[]string{"join", "item-1"}, "--stop-price is required"},
		{[]string{"join", "item-1", "--stop-price", "0"}, "--stop-price must be a positive integer"},
		{[]string{"join", "item-1", "--stop-price", "-5"}, "--stop-price must be a positive integer"},
		{[]string{"join", "item-1", "--stop-price", "lots"}, "stop-price"},
		{[]string{"join", "item.1", "--stop-price", "10"}, "item id must be"},
		{[]string{"join", "item-1", "item-2", "--stop-price", "10"}, `unexpected argument "item-2"`},
		{[]string{"join", "--bogus", "item-1"}, "bogus"},
		{[]string{"list", "extra"}, `unexpected argument "extra"`},
		{[]string{"list", "--api", "ftp://example.com"}, "--api must be an http:// or https:// URL"},
		{[]string{"stop"}, "missing ITEM"},
		{[]string{"stop", "a/b"}, "item id must be"},
		{[]string{"history"}, "missing ITEM"},
		{[]string{"history", "item-1", "--at", "0"}, "--at must be"},
		{[]string{"history", "item-1", "--at", "last"}, "at"},
		{[]string{"watch", "item-1"}, `unexpected argument "item-1"`},
	}
	for _, c := range cases {
		args := append(c.args, "--api", base)
		if strings.HasPrefix(c.want, "--api") {
			args = c.args
		}
		got := cliErr(t, 2, args...)
		if !strings.Contains(got, c.want) || !strings.HasPrefix(got, "sniper "+c.args[0]+": ") {
			t.Errorf("sniper %v: stderr %q, want 'sniper %s: ...%s...'", c.args, got, c.args[0], c.want)
		}
	}
	// A bad variable is a usage error too.
	t.Setenv("SNIPER_JSON", "maybe")
	if got := cliErr(t, 2, "list", "--api", base); !strings.Contains(got, "SNIPER_JSON") {
		t.Errorf("SNIPER_JSON=maybe: %q", got)
	}
}

func TestCLIHelp(t *testing.T) {
	clearSniperEnv(t)
	code, out, _ := runCLI(t, "help")
	if code != 0 {
		t.Fatalf("sniper help: exit %d", code)
	}
	wantMentions(t, "sniper help", out, "sniper join ITEM --stop-price N", "sniper list", "sniper stop ITEM",
		"sniper history ITEM [--at SEQ]", "sniper watch", "--api", "SNIPER_API", "--json", "--token")
	for verb, words := range map[string][]string{
		"join":    {"sniper join ITEM --stop-price N", "--stop-price"},
		"list":    {"sniper list"},
		"stop":    {"sniper stop ITEM"},
		"set":     {"sniper set ITEM --stop-price N", "--stop-price", "cannot be taken back"},
		"history": {"sniper history ITEM", "--at"},
		"watch":   {"sniper watch", "Ctrl-C"},
	} {
		for _, args := range [][]string{{verb, "--help"}, {"help", verb}, {verb, "item-1", "-h"}} {
			code, out, errOut := runCLI(t, args...)
			if code != 0 || errOut != "" {
				t.Fatalf("sniper %v: exit %d, stderr %q; want 0 and nothing", args, code, errOut)
			}
			wantMentions(t, "sniper "+strings.Join(args, " "), out, append(words,
				"Usage:", "--api", "SNIPER_API", "http://127.0.0.1:8080", "--token", "SNIPER_HTTP_TOKEN", "--json")...)
		}
	}
}

// TestCLISendsTheToken checks what reaches the server: a proxy in front
// of the real API records the Authorization header.
func TestCLISendsTheToken(t *testing.T) {
	clearSniperEnv(t)
	a := startCLIApp(t, t.TempDir(), "127.0.0.1:0")
	target, err := url.Parse(a.HTTPURL())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var auth []string
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Method+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	defer srv.Close()
	last := func() string {
		mu.Lock()
		defer mu.Unlock()
		return auth[len(auth)-1]
	}

	t.Setenv("SNIPER_API", srv.URL)
	if code, _, errOut := runCLI(t, "list"); code != 0 || last() != "GET " {
		t.Fatalf("list without a token: exit %d (%s), sent %q, want no Authorization", code, errOut, last())
	}
	t.Setenv("SNIPER_HTTP_TOKEN", "from-env")
	if code, _, errOut := runCLI(t, "join", "item-1", "--stop-price", "5"); code != 0 || last() != "POST Bearer from-env" {
		t.Fatalf("join with SNIPER_HTTP_TOKEN: exit %d (%s), sent %q", code, errOut, last())
	}
	if code, _, errOut := runCLI(t, "stop", "item-1", "--token", "from-flag"); code != 0 || last() != "DELETE Bearer from-flag" {
		t.Fatalf("stop --token: exit %d (%s), sent %q", code, errOut, last())
	}
}
