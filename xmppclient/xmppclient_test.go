package xmppclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"sniper/testkit"
	"sniper/xmppclient"
)

const wait = 10 * time.Second

type msg struct {
	from jid.JID
	body string
}

// inbox collects what a handler receives, for tests to wait on.
type inbox chan msg

func newInbox() inbox { return make(inbox, 1024) }

func (in inbox) handler(from jid.JID, body string) { in <- msg{from, body} }

func (in inbox) next(t *testing.T) msg {
	t.Helper()
	select {
	case m := <-in:
		return m
	case <-time.After(wait):
		t.Fatalf("no message within %s", wait)
		return msg{}
	}
}

func account(t *testing.T, p *testkit.Prosody, user, password string) {
	t.Helper()
	if err := p.Register(user, password); err != nil {
		t.Fatalf("register %s: %v", user, err)
	}
}

func config(p *testkit.Prosody, full, password string, mode xmppclient.TLSMode, logger *slog.Logger) xmppclient.Config {
	return xmppclient.Config{Addr: p.Addr(), JID: full, Password: password, TLS: mode, Logger: logger}
}

func dial(t *testing.T, cfg xmppclient.Config, h func(jid.JID, string)) *xmppclient.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := xmppclient.Dial(ctx, cfg, h)
	if err != nil {
		t.Fatalf("dial %s: %v", cfg.JID, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func send(t *testing.T, s interface {
	Send(context.Context, jid.JID, string) error
}, to, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.Send(ctx, jid.MustParse(to), body); err != nil {
		t.Fatalf("send %q to %s: %v", body, to, err)
	}
}

func TestDialBindsConfiguredResource(t *testing.T) {
	t.Parallel()
	p := testkit.StartProsody(t)
	account(t, p, "sniper", "sniper-pw")
	in := newInbox()
	s := dial(t, config(p, "sniper@localhost/Auction", "sniper-pw", xmppclient.TLSSkipVerify, testkit.Logger(t)), in.handler)
	if got := s.LocalJID().String(); got != "sniper@localhost/Auction" {
		t.Fatalf("bound %s, want sniper@localhost/Auction", got)
	}

	// Prosody routes a full JID only to that exact resource (no offline
	// storage here: a wrong resource would bounce), so arrival proves the
	// bind.
	bob := testkit.NewXMPPUser(t, p, "bob")
	bob.Send("sniper@localhost/Auction", "to the full JID")
	m := in.next(t)
	if m.body != "to the full JID" || m.from.String() != bob.JID() {
		t.Fatalf("got %q from %s, want %q from %s", m.body, m.from, "to the full JID", bob.JID())
	}

	// The initial presence made the session available for its bare JID too.
	bob.Send("sniper@localhost", "to the bare JID")
	if m := in.next(t); m.body != "to the bare JID" {
		t.Fatalf("got %q, want %q", m.body, "to the bare JID")
	}

	// And replies get to bob.
	send(t, s, bob.JID(), "hello bob")
	bob.WaitForMessage("hello from the sniper", func(m testkit.Message) bool {
		return m.Body == "hello bob" && m.From == "sniper@localhost/Auction"
	})
}

func TestSendReceiveBetweenSessions(t *testing.T) {
	t.Parallel()
	p := testkit.StartProsody(t)
	account(t, p, "alice", "alice-pw")
	account(t, p, "carol", "carol-pw")
	aliceIn, carolIn := newInbox(), newInbox()
	alice := dial(t, config(p, "alice@localhost/Auction", "alice-pw", xmppclient.TLSSkipVerify, testkit.Logger(t)), aliceIn.handler)
	carol := dial(t, config(p, "carol@localhost/Auction", "carol-pw", xmppclient.TLSSkipVerify, testkit.Logger(t)), carolIn.handler)

	send(t, alice, "carol@localhost/Auction", "ping")
	if m := carolIn.next(t); m.body != "ping" || m.from.String() != "alice@localhost/Auction" {
		t.Fatalf("carol got %q from %s", m.body, m.from)
	}
	send(t, carol, "alice@localhost", "pong")
	if m := aliceIn.next(t); m.body != "pong" || m.from.String() != "carol@localhost/Auction" {
		t.Fatalf("alice got %q from %s", m.body, m.from)
	}

	// A burst from concurrent senders: every message flushed and
	// delivered, and each sender's messages in its order. Bodies carry
	// XML-special characters to check escaping.
	const senders, each = 4, 50
	var wg sync.WaitGroup
	errs := make(chan error, senders*each)
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				errs <- alice.Send(ctx, jid.MustParse("carol@localhost/Auction"), fmt.Sprintf("<%d&%d>", g, i))
				cancel() // safe: Send does not hand ctx to mellium's write
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("burst send: %v", err)
		}
	}
	nextSeq := make([]int, senders)
	for range senders * each {
		m := carolIn.next(t)
		var g, i int
		if _, err := fmt.Sscanf(m.body, "<%d&%d>", &g, &i); err != nil {
			t.Fatalf("unexpected body %q: %v", m.body, err)
		}
		if i != nextSeq[g] {
			t.Fatalf("sender %d: got message %d, want %d", g, i, nextSeq[g])
		}
		nextSeq[g]++
	}
}

func TestWrongPasswordIsErrAuth(t *testing.T) {
	t.Parallel()
	p := testkit.StartProsody(t)
	account(t, p, "sniper", "right")
	for _, mode := range []xmppclient.TLSMode{xmppclient.TLSSkipVerify, xmppclient.TLSOff} {
		t.Run(string(mode), func(t *testing.T) {
			start := time.Now()
			_, err := xmppclient.Dial(context.Background(), config(p, "sniper@localhost/Auction", "wrong", mode, nil), nil)
			if !errors.Is(err, xmppclient.ErrAuth) {
				t.Fatalf("got %v, want ErrAuth", err)
			}
			if errors.Is(err, xmppclient.ErrTLS) {
				t.Fatalf("auth failure also marked ErrTLS: %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("took %s to report a wrong password", d)
			}
			t.Logf("wrong password reported in %s: %v", time.Since(start), err)
		})
	}

	t.Run("unknown account", func(t *testing.T) {
		_, err := xmppclient.Dial(context.Background(), config(p, "nobody@localhost/Auction", "x", xmppclient.TLSSkipVerify, nil), nil)
		if !errors.Is(err, xmppclient.ErrAuth) {
			t.Fatalf("got %v, want ErrAuth", err)
		}
	})

	t.Run("Conn.Run gives up", func(t *testing.T) {
		var logs bytes.Buffer
		lg := slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))
		c := xmppclient.New(config(p, "sniper@localhost/Auction", "wrong-secret", xmppclient.TLSSkipVerify, lg), nil)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		start := time.Now()
		if err := c.Run(ctx); !errors.Is(err, xmppclient.ErrAuth) {
			t.Fatalf("Run: got %v, want ErrAuth", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Run took %s to give up", d)
		}
		if strings.Contains(logs.String(), "wrong-secret") {
			t.Fatalf("password logged:\n%s", logs.String())
		}
	})
}

func TestTLSModes(t *testing.T) {
	t.Parallel()
	p := testkit.StartProsody(t)
	account(t, p, "sniper", "pw")
	account(t, p, "peer", "pw")
	peerIn := newInbox()
	dial(t, config(p, "peer@localhost/x", "pw", xmppclient.TLSSkipVerify, nil), peerIn.handler)

	t.Run("require rejects self-signed", func(t *testing.T) {
		start := time.Now()
		_, err := xmppclient.Dial(context.Background(), config(p, "sniper@localhost/Auction", "pw", xmppclient.TLSRequire, nil), nil)
		if !errors.Is(err, xmppclient.ErrTLS) {
			t.Fatalf("got %v, want ErrTLS", err)
		}
		if errors.Is(err, xmppclient.ErrAuth) {
			t.Fatalf("TLS failure also marked ErrAuth: %v", err)
		}
		t.Logf("rejected in %s: %v", time.Since(start), err)
	})
	t.Run("zero mode is require", func(t *testing.T) {
		_, err := xmppclient.Dial(context.Background(), config(p, "sniper@localhost/Auction", "pw", "", nil), nil)
		if !errors.Is(err, xmppclient.ErrTLS) {
			t.Fatalf("got %v, want ErrTLS", err)
		}
	})
	t.Run("Conn.Run gives up", func(t *testing.T) {
		c := xmppclient.New(config(p, "sniper@localhost/Auction", "pw", xmppclient.TLSRequire, nil), nil)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := c.Run(ctx); !errors.Is(err, xmppclient.ErrTLS) {
			t.Fatalf("Run: got %v, want ErrTLS", err)
		}
	})
	ok := map[string]xmppclient.Config{
		"require with the server's CA": func() xmppclient.Config {
			c := config(p, "sniper@localhost/Auction", "pw", xmppclient.TLSRequire, nil)
			c.RootCAs = p.CertPool()
			return c
		}(),
		"skip-verify": config(p, "sniper@localhost/Auction", "pw", xmppclient.TLSSkipVerify, nil),
		"off":         config(p, "sniper@localhost/Auction", "pw", xmppclient.TLSOff, nil),
	}
	for name, cfg := range ok {
		t.Run(name, func(t *testing.T) {
			s := dial(t, cfg, nil)
			send(t, s, "peer@localhost/x", name)
			if m := peerIn.next(t); m.body != name {
				t.Fatalf("peer got %q, want %q", m.body, name)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
		})
	}
}

func TestSessionClose(t *testing.T) {
	t.Parallel()
	p := testkit.StartProsody(t)
	account(t, p, "sniper", "pw")
	s := dial(t, config(p, "sniper@localhost/Auction", "pw", xmppclient.TLSSkipVerify, nil), nil)
	if s.Err() != nil {
		t.Fatalf("live session has Err %v", s.Err())
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	t.Logf("close took %s", time.Since(start))
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if !errors.Is(s.Err(), xmppclient.ErrClosed) {
		t.Fatalf("Err after Close = %v, want ErrClosed", s.Err())
	}
	err := s.Send(context.Background(), jid.MustParse("peer@localhost"), "late")
	if !errors.Is(err, xmppclient.ErrClosed) {
		t.Fatalf("Send after Close = %v, want ErrClosed", err)
	}
	_ = s.Close() // twice is fine
}

func TestSessionDiesWithServer(t *testing.T) {
	t.Parallel()
	p := testkit.StartProsody(t)
	account(t, p, "sniper", "pw")
	s := dial(t, config(p, "sniper@localhost/Auction", "pw", xmppclient.TLSSkipVerify, nil), nil)
	p.Kill()
	select {
	case <-s.Done():
	case <-time.After(wait):
		t.Fatal("session not Done after the server died")
	}
	if s.Err() == nil || errors.Is(s.Err(), xmppclient.ErrClosed) {
		t.Fatalf("Err = %v, want the connection's failure", s.Err())
	}
	t.Logf("Err after SIGKILL: %v", s.Err())
}

func TestConnReconnectsAfterRestart(t *testing.T) {
	t.Parallel()
	p := testkit.StartProsody(t)
	account(t, p, "sniper", "sniper-secret")
	peer := testkit.NewXMPPUser(t, p, "peer")

	var logs bytes.Buffer
	lw := &syncWriter{w: &logs}
	in := newInbox()
	states := make(chan bool, 64)
	cfg := config(p, "sniper@localhost/Auction", "sniper-secret", xmppclient.TLSSkipVerify,
		slog.New(slog.NewTextHandler(lw, nil)))
	cfg.MinBackoff = 20 * time.Millisecond
	cfg.MaxBackoff = 200 * time.Millisecond
	cfg.OnStateChange = func(up bool) { states <- up }
	c := xmppclient.New(cfg, in.handler)

	if err := c.Send(context.Background(), jid.MustParse(peer.JID()), "too early"); !errors.Is(err, xmppclient.ErrNotConnected) {
		t.Fatalf("Send before Run = %v, want ErrNotConnected", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-runErr:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(wait):
			t.Errorf("Run did not return after cancel")
		}
	}()

	expectState := func(want bool) {
		t.Helper()
		select {
		case got := <-states:
			if got != want {
				t.Fatalf("state change %v, want %v", got, want)
			}
		case <-time.After(wait):
			t.Fatalf("no state change to %v within %s\n%s", want, wait, lw.String())
		}
	}
	expectState(true)
	if !c.Connected() {
		t.Fatal("Connected() false after the up notification")
	}
	send(t, c, peer.JID(), "before")
	peer.WaitForMessage("before", func(m testkit.Message) bool { return m.Body == "before" })

	for _, how := range []string{"restart", "kill"} {
		rctx, rcancel := context.WithTimeout(context.Background(), wait)
		start := time.Now()
		if how == "restart" {
			if err := p.Restart(rctx); err != nil {
				t.Fatalf("restart prosody: %v", err)
			}
		} else {
			p.Kill()
			if err := p.Start(rctx); err != nil {
				t.Fatalf("start prosody: %v", err)
			}
		}
		rcancel()
		expectState(false)
		expectState(true)
		t.Logf("%s: back up %s after the server went down", how, time.Since(start))

		body := "after " + how
		// The peer reconnects by itself too; until it has, a message to
		// its full JID would bounce.
		peer.WaitConnected()
		send(t, c, peer.JID(), body)
		peer.WaitForMessage(body, func(m testkit.Message) bool { return m.Body == body })
		peer.Send("sniper@localhost/Auction", "reply "+how)
		if m := in.next(t); m.body != "reply "+how {
			t.Fatalf("got %q, want %q", m.body, "reply "+how)
		}
	}

	out := lw.String()
	for _, want := range []string{"xmpp connected", "xmpp disconnected", "xmpp reconnecting"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "sniper-secret") {
		t.Errorf("password logged:\n%s", out)
	}
}

func TestConnRunStopsOnCancel(t *testing.T) {
	t.Parallel()
	// Nothing listens here: Run keeps retrying until cancelled.
	ctx, cancel := context.WithCancel(context.Background())
	states := make(chan bool, 1)
	c := xmppclient.New(xmppclient.Config{
		Addr: "127.0.0.1:1", JID: "sniper@localhost/Auction", Password: "pw",
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		OnStateChange: func(up bool) { states <- up },
	}, nil)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after cancel")
	}
	if c.Connected() {
		t.Fatal("Connected() after a run that never connected")
	}
	if err := c.Run(context.Background()); err == nil {
		t.Fatal("second Run returned nil, want an error")
	}
}

func TestParseTLSMode(t *testing.T) {
	for in, want := range map[string]xmppclient.TLSMode{
		"require": xmppclient.TLSRequire, "skip-verify": xmppclient.TLSSkipVerify, "off": xmppclient.TLSOff, " OFF ": xmppclient.TLSOff,
	} {
		got, err := xmppclient.ParseTLSMode(in)
		if err != nil || got != want {
			t.Errorf("ParseTLSMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "on", "insecure"} {
		if _, err := xmppclient.ParseTLSMode(in); err == nil {
			t.Errorf("ParseTLSMode(%q) accepted", in)
		}
	}
}

func TestConfigHidesPassword(t *testing.T) {
	cfg := xmppclient.Config{Addr: "127.0.0.1:5222", JID: "a@b/c", Password: "hunter2"}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("cfg", "cfg", cfg)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%v %+v", cfg, cfg), buf.String()} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("password shown: %s", s)
		}
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// Replying from the handler must not deadlock: Send waits for the
// server's answer to its ping, which the session's reading goroutine takes
// in while the handler (on the delivery goroutine) waits; and mellium
// takes the write lock only for writes made through the handler's own
// encoder, which this package never uses.
func TestSendFromHandler(t *testing.T) {
	t.Parallel()
	p := testkit.StartProsody(t)
	account(t, p, "echo", "pw")
	var s *xmppclient.Session
	ready := make(chan struct{})
	s = dial(t, config(p, "echo@localhost/Auction", "pw", xmppclient.TLSSkipVerify, nil), func(from jid.JID, body string) {
		<-ready
		if err := s.Send(context.Background(), from, "echo: "+body); err != nil {
			t.Errorf("echo: %v", err)
		}
	})
	close(ready)
	peer := testkit.NewXMPPUser(t, p, "peer")
	for i := range 3 {
		body := fmt.Sprint("hi ", i)
		peer.Send("echo@localhost/Auction", body)
		peer.WaitForMessage("echo of "+body, func(m testkit.Message) bool { return m.Body == "echo: "+body })
	}
}
