package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sniper/messages"
	"sniper/testkit"
)

// reexecEnv makes the test binary act as the auctionhouse binary, so the
// signal test runs the real command as its own process.
const reexecEnv = "AUCTIONHOUSE_TEST_REEXEC_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(reexecEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// clearEnv unsets every AUCTIONHOUSE_ variable for the test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "AUCTIONHOUSE_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

// logLines is a concurrency-safe writer that keeps JSON log lines and
// signals each new one.
type logLines struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	lines   []map[string]any
	changed chan struct{}
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadBytes('\n')
		if err != nil {
			l.buf.Write(line) // incomplete: keep for later
			break
		}
		var rec map[string]any
		if json.Unmarshal(line, &rec) == nil {
			l.lines = append(l.lines, rec)
		}
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// wait waits for a line whose msg is msg.
func (l *logLines) wait(t *testing.T, msg string) map[string]any {
	t.Helper()
	deadline := time.After(testkit.WaitTimeout)
	for {
		l.mu.Lock()
		for _, rec := range l.lines {
			if rec["msg"] == msg {
				l.mu.Unlock()
				return rec
			}
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no %q log line within %s:\n%s", msg, testkit.WaitTimeout, l.String())
		}
	}
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, rec := range l.lines {
		j, _ := json.Marshal(rec)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

func registerAuctions(t *testing.T, p *testkit.Prosody, items ...string) {
	t.Helper()
	for _, it := range items {
		if err := p.Register("auction-"+it, testkit.AuctionPassword); err != nil {
			t.Fatal(err)
		}
	}
}

func auctionJID(item string) string { return "auction-" + item + "@localhost/Auction" }

func decode(t *testing.T, m testkit.Message) messages.AuctionEvent {
	ev, err := messages.DecodeAuctionEvent(m.Body)
	if err != nil {
		t.Fatalf("undecodable %v: %v", m, err)
	}
	return ev
}

// TestRunAgainstProsody runs the command's run function against a real
// Prosody: the auctions log in with the accounts registered there, answer
// a JOIN and a BID, and close on time.
func TestRunAgainstProsody(t *testing.T) {
	clearEnv(t)
	p := testkit.StartProsody(t)
	registerAuctions(t, p, "item-1", "item-2")
	sniper := testkit.NewXMPPUser(t, p, "sniper")

	// The password comes from the environment, as the help suggests.
	t.Setenv("AUCTIONHOUSE_PASSWORD", testkit.AuctionPassword)
	logs := newLogLines()
	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"--xmpp-addr", p.Addr(), "--xmpp-tls", "skip-verify", "--items", "2",
			"--duration", "3s", "--bidders", "2", "--seed", "7", "--log-format", "json"}, io.Discard, logs)
	}()
	defer func() {
		cancel()
		select {
		case code := <-exit:
			if code != 0 {
				t.Errorf("run exited %d after cancel, want 0", code)
			}
		case <-time.After(testkit.WaitTimeout):
			t.Errorf("run still running after cancel")
		}
	}()

	open := logs.wait(t, "auction house open")
	if got, _ := json.Marshal(open["items"]); string(got) != `["item-1","item-2"]` {
		t.Fatalf("open items logged as %s, want [item-1 item-2]", got)
	}
	if n := strings.Count(logs.String(), `"msg":"auction open"`); n != 2 {
		t.Fatalf("%d 'auction open' lines, want one per item with its closing time:\n%s", n, logs.String())
	}

	sniper.Send(auctionJID("item-1"), messages.EncodeJoin())
	first := decode(t, sniper.WaitForMessage("PRICE from item-1", func(m testkit.Message) bool { return m.From == auctionJID("item-1") }))
	if first.Kind != "PRICE" || first.Increment != 10 || first.CurrentPrice < 100 {
		t.Fatalf("answer to JOIN: %+v, want a PRICE of at least 100 with increment 10", first)
	}
	// Outbid whatever the price is by then, until our bid is the one
	// reported (the simulated bidders may get in between).
	lastPrice := func() messages.AuctionEvent {
		last := first
		for _, m := range sniper.Received() {
			if ev, err := messages.DecodeAuctionEvent(m.Body); err == nil && ev.Kind == "PRICE" && ev.CurrentPrice > last.CurrentPrice {
				last = ev
			}
		}
		return last
	}
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatalf("never led the auction; received %v", sniper.Received())
		}
		bid := lastPrice().CurrentPrice + first.Increment
		sniper.Send(auctionJID("item-1"), messages.EncodeBid(bid))
		ev := decode(t, sniper.WaitForMessage("a PRICE at or above our bid, or CLOSE", func(m testkit.Message) bool {
			ev, err := messages.DecodeAuctionEvent(m.Body)
			return err == nil && m.From == auctionJID("item-1") && (ev.Kind == "CLOSE" || ev.CurrentPrice >= bid)
		}))
		if ev.Kind == "CLOSE" {
			t.Fatalf("closed before we led; received %v", sniper.Received())
		}
		if ev.Bidder == sniper.JID() {
			t.Logf("led item-1 at %d after %d bids", ev.CurrentPrice, i+1)
			break
		}
	}
	sniper.WaitForMessage("CLOSE from item-1", func(m testkit.Message) bool {
		return m.From == auctionJID("item-1") && m.Body == messages.EncodeClose()
	})
	simulated := 0
	for _, m := range sniper.Received() {
		if ev, err := messages.DecodeAuctionEvent(m.Body); err == nil && (ev.Bidder == "alice" || ev.Bidder == "bob") {
			simulated++
		}
	}
	if simulated == 0 {
		t.Fatalf("no simulated bid reached the sniper; received %v", sniper.Received())
	}
	closed := logs.wait(t, "auction closed")
	if closed["item"] == nil || closed["winner"] == nil {
		t.Fatalf("close logged without item or winner: %v", closed)
	}
}

func TestWrongPasswordExits1(t *testing.T) {
	clearEnv(t)
	p := testkit.StartProsody(t)
	registerAuctions(t, p, "item-1")
	logs := newLogLines()
	start := time.Now()
	code := run(context.Background(), []string{"--xmpp-addr", p.Addr(), "--xmpp-tls", "skip-verify",
		"--items", "item-1", "--password", "not-the-password", "--log-format", "json"}, io.Discard, logs)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, logs.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s to give up", d)
	}
	out := logs.String()
	if !strings.Contains(out, "authentication failed") || strings.Contains(out, "not-the-password") {
		t.Fatalf("want the auth failure logged and the password not:\n%s", out)
	}
}

// TestStopsOnSIGTERM runs the real command as a process against Prosody
// and stops it with SIGTERM.
func TestStopsOnSIGTERM(t *testing.T) {
	clearEnv(t)
	p := testkit.StartProsody(t)
	registerAuctions(t, p, "lamp", "vase")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "--xmpp-addr", p.Addr(), "--xmpp-tls", "skip-verify", "--items", "lamp,vase", "--log-format", "json")
	cmd.Env = append(os.Environ(), reexecEnv+"=1", "AUCTIONHOUSE_PASSWORD="+testkit.AuctionPassword,
		"GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := newLogLines()
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			_, _ = logs.Write(append(sc.Bytes(), '\n'))
		}
	}()
	exited := make(chan error, 1)
	go func() {
		<-scanned
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	logs.wait(t, "auction house open")
	// It is really serving: a JOIN gets a PRICE.
	u := testkit.NewXMPPUser(t, p, "bidder")
	u.Send(auctionJID("vase"), messages.EncodeJoin())
	u.WaitForMessage("PRICE from vase", func(m testkit.Message) bool {
		ev, err := messages.DecodeAuctionEvent(m.Body)
		return err == nil && ev.Kind == "PRICE" && m.From == auctionJID("vase")
	})

	began := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(testkit.WaitTimeout):
		t.Fatalf("still running %s after SIGTERM\n%s", testkit.WaitTimeout, logs.String())
	}
	t.Logf("stopped %s after SIGTERM", time.Since(began).Round(time.Millisecond))
	logs.wait(t, "auction house closed")
	// Shutting down is not the end of the auctions: nobody is told CLOSE.
	for _, m := range u.Received() {
		if m.Body == messages.EncodeClose() {
			t.Fatalf("CLOSE sent on shutdown: %v", m)
		}
	}
}

func TestHelp(t *testing.T) {
	clearEnv(t)
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &out, &errOut); code != 0 {
		t.Fatalf("--help: exit %d, stderr %s", code, errOut.String())
	}
	for _, w := range []string{"Usage:", "SIGTERM", "--xmpp-addr", "--domain", "--xmpp-tls", "--password", "--items",
		"--duration", "--seed", "--pause", "--bidders", "AUCTIONHOUSE_PASSWORD", "AUCTIONHOUSE_XMPP_ADDR", "auction-<item>"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("--help does not mention %q:\n%s", w, out.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	clearEnv(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--xmpp-addr is required"},
		{[]string{"--xmpp-addr", "x:1", "--xmpp-tls", "maybe"}, "--xmpp-tls"},
		{[]string{"--xmpp-addr", "x:1", "--items", ""}, "--items"},
		{[]string{"--xmpp-addr", "x:1", "--items", "a,a"}, "twice"},
		{[]string{"--xmpp-addr", "x:1", "--items", "a.b"}, "--items"},
		{[]string{"--xmpp-addr", "x:1", "--items", "0"}, "--items"},
		{[]string{"--xmpp-addr", "x:1", "--duration", "0s"}, "--duration"},
		{[]string{"--xmpp-addr", "x:1", "--increment", "0"}, "--increment"},
		{[]string{"--xmpp-addr", "x:1", "--log-level", "loud"}, "--log-level"},
		{[]string{"--bogus"}, "bogus"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), c.args, &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errOut.String(), c.want)
		}
	}
	t.Setenv("AUCTIONHOUSE_DURATION", "soon")
	var errOut bytes.Buffer
	if code := run(context.Background(), []string{"--xmpp-addr", "x:1"}, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), "AUCTIONHOUSE_DURATION") {
		t.Errorf("bad AUCTIONHOUSE_DURATION: exit %d, stderr %q", code, errOut.String())
	}
}

func TestParseItems(t *testing.T) {
	got, err := parseItems("3")
	if err != nil || strings.Join(got, ",") != "item-1,item-2,item-3" {
		t.Fatalf("parseItems(3) = %v, %v", got, err)
	}
	got, err = parseItems(" lamp , vase ")
	if err != nil || strings.Join(got, ",") != "lamp,vase" {
		t.Fatalf("parseItems(lamp,vase) = %v, %v", got, err)
	}
}
