package xmppclient_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"sniper/testkit"
	"sniper/xmppclient"
	"sniper/xmppserver"
)

// chatServer is an XMPP server the bounce tests run against: Prosody with
// offline storage disabled (the testkit's) and this repository's
// xmppserver both bounce a message for an offline account.
type chatServer struct {
	addr     string
	mode     xmppclient.TLSMode
	register func(user, password string)
}

func (cs chatServer) config(full string) xmppclient.Config {
	return xmppclient.Config{Addr: cs.addr, JID: full, Password: "pw", TLS: cs.mode}
}

// onBothServers runs test as parallel subtests against a fresh Prosody and
// a fresh xmppserver.
func onBothServers(t *testing.T, test func(t *testing.T, cs chatServer)) {
	t.Run("prosody", func(t *testing.T) {
		t.Parallel()
		p := testkit.StartProsody(t)
		test(t, chatServer{
			addr: p.Addr(),
			mode: xmppclient.TLSSkipVerify,
			register: func(user, password string) {
				t.Helper()
				account(t, p, user, password)
			},
		})
	})
	t.Run("xmppserver", func(t *testing.T) {
		t.Parallel()
		srv, err := xmppserver.Start(context.Background(), xmppserver.Config{Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close() })
		test(t, chatServer{addr: srv.Addr(), mode: xmppclient.TLSOff, register: srv.AddUser})
	})
}

// login dials user@localhost/Auction and makes sure the server has taken
// its initial presence (so that messages to the bare JID reach it too):
// a confirmed Send is processed after everything sent before it on the
// same stream.
func login(t *testing.T, cs chatServer, user string, h func(jid.JID, string), greet string) *xmppclient.Session {
	t.Helper()
	s := dial(t, cs.config(user+"@localhost/Auction"), h)
	send(t, s, greet, "hello from "+user)
	return s
}

// A message to a registered account that is offline bounces: Send fails
// with ErrUndelivered (not ErrClosed), the session goes on working, the
// bounce never reaches the handler, and once the account is online the
// same send goes through. Conn.Send passes ErrUndelivered on as is.
func TestSendToOfflineAccountFails(t *testing.T) {
	t.Parallel()
	onBothServers(t, func(t *testing.T, cs chatServer) {
		for _, u := range []string{"sniper", "online", "away"} {
			cs.register(u, "pw")
		}
		sniperIn, onlineIn, awayIn := newInbox(), newInbox(), newInbox()
		s := dial(t, cs.config("sniper@localhost/Auction"), sniperIn.handler)
		login(t, cs, "online", onlineIn.handler, "sniper@localhost/Auction")
		if m := sniperIn.next(t); m.body != "hello from online" {
			t.Fatalf("sniper got %q, want the greeting", m.body)
		}

		for _, to := range []string{"away@localhost/Auction", "away@localhost"} {
			err := s.Send(context.Background(), jid.MustParse(to), "JOIN "+to)
			if !errors.Is(err, xmppclient.ErrUndelivered) {
				t.Fatalf("Send to offline %s = %v, want ErrUndelivered", to, err)
			}
			if errors.Is(err, xmppclient.ErrClosed) || errors.Is(err, xmppclient.ErrNotConnected) {
				t.Fatalf("a bounce reported as a dead session: %v", err)
			}
			t.Logf("to %s: %v", to, err)
		}
		if err := s.Err(); err != nil {
			t.Fatalf("session ended by a bounce: %v", err)
		}
		if n := xmppclient.PendingPings(s); n != 0 {
			t.Fatalf("%d pings still pending", n)
		}

		// The session is fine: the next send, to an online account, goes.
		send(t, s, "online@localhost/Auction", "after the bounces")
		if m := onlineIn.next(t); m.body != "after the bounces" {
			t.Fatalf("online got %q", m.body)
		}

		// Conn passes the bounce on unchanged: not ErrNotConnected, which
		// callers would take for a connection to wait for.
		cfg := cs.config("sniper@localhost/Conn")
		up := make(chan bool, 4)
		cfg.OnStateChange = func(u bool) { up <- u }
		c := xmppclient.New(cfg, nil)
		ctx, cancel := context.WithCancel(context.Background())
		runErr := make(chan error, 1)
		go func() { runErr <- c.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-runErr; err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
		select {
		case <-up:
		case <-time.After(wait):
			t.Fatal("Conn did not connect")
		}
		err := c.Send(context.Background(), jid.MustParse("away@localhost/Auction"), "via Conn")
		if !errors.Is(err, xmppclient.ErrUndelivered) || errors.Is(err, xmppclient.ErrNotConnected) {
			t.Fatalf("Conn.Send to an offline account = %v, want ErrUndelivered only", err)
		}
		if !c.Connected() {
			t.Fatal("Conn disconnected by a bounce")
		}

		// Once the account is online the very same sends succeed.
		login(t, cs, "away", awayIn.handler, "online@localhost/Auction")
		for _, to := range []string{"away@localhost/Auction", "away@localhost"} {
			send(t, s, to, "JOIN "+to)
			if m := awayIn.next(t); m.body != "JOIN "+to || m.from.String() != "sniper@localhost/Auction" {
				t.Fatalf("away got %q from %s, want %q from the sniper", m.body, m.from, "JOIN "+to)
			}
		}
		send(t, c, "away@localhost/Auction", "via Conn")
		if m := awayIn.next(t); m.body != "via Conn" {
			t.Fatalf("away got %q, want %q", m.body, "via Conn")
		}

		// The bounces never reached the sniper's handler: the next thing it
		// gets is this marker.
		send(t, dial(t, cs.config("online@localhost/marker"), nil), "sniper@localhost/Auction", "marker")
		if m := sniperIn.next(t); m.body != "marker" {
			t.Fatalf("sniper's handler got %q from %s before the marker", m.body, m.from)
		}
	})
}

// Concurrent sends, some to an offline account and the rest to online
// ones: exactly the ones to the offline account fail, each with its own
// bounce, and the others all arrive.
func TestConcurrentSendsOnlyOfflineFails(t *testing.T) {
	t.Parallel()
	onBothServers(t, func(t *testing.T, cs chatServer) {
		recipients := []string{"r0", "r1", "r2", "away"}
		for _, u := range append([]string{"sniper"}, recipients...) {
			cs.register(u, "pw")
		}
		sniperIn := newInbox()
		s := dial(t, cs.config("sniper@localhost/Auction"), sniperIn.handler)
		inboxes := map[string]inbox{}
		for _, r := range recipients[:3] {
			inboxes[r] = newInbox()
			login(t, cs, r, inboxes[r].handler, "sniper@localhost/Auction")
			sniperIn.next(t) // the greeting
		}

		round := func(awayOnline bool) {
			t.Helper()
			const senders, each = 8, 24
			type result struct {
				to, body string
				err      error
			}
			results := make(chan result, senders*each)
			var wg sync.WaitGroup
			for g := range senders {
				wg.Go(func() {
					for i := range each {
						to := recipients[(g+i)%len(recipients)]
						body := fmt.Sprintf("%d/%d", g, i)
						err := s.Send(context.Background(), jid.MustParse(to+"@localhost/Auction"), body)
						results <- result{to, body, err}
					}
				})
			}
			wg.Wait()
			close(results)
			want := map[string]map[string]bool{}
			failed := 0
			for r := range results {
				switch {
				case r.to == "away" && !awayOnline:
					if !errors.Is(r.err, xmppclient.ErrUndelivered) {
						t.Fatalf("send %s to offline away = %v, want ErrUndelivered", r.body, r.err)
					}
					failed++
				case r.err != nil:
					t.Fatalf("send %s to online %s = %v", r.body, r.to, r.err)
				default:
					if want[r.to] == nil {
						want[r.to] = map[string]bool{}
					}
					want[r.to][r.body] = true
				}
			}
			if !awayOnline && failed != senders*each/len(recipients) {
				t.Fatalf("%d sends to away failed, want %d", failed, senders*each/len(recipients))
			}
			if err := s.Err(); err != nil {
				t.Fatalf("session ended: %v", err)
			}
			if n := xmppclient.PendingPings(s); n != 0 {
				t.Fatalf("%d pings still pending", n)
			}
			for to, bodies := range want {
				for range len(bodies) {
					m := inboxes[to].next(t)
					if !bodies[m.body] {
						t.Fatalf("%s got unexpected %q", to, m.body)
					}
					delete(bodies, m.body)
				}
			}
			t.Logf("away online %v: %d failed, every other send arrived", awayOnline, failed)
		}

		round(false)
		inboxes["away"] = newInbox()
		login(t, cs, "away", inboxes["away"].handler, "sniper@localhost/Auction")
		if m := sniperIn.next(t); m.body != "hello from away" {
			t.Fatalf("sniper's handler got %q, want the greeting (no bounce)", m.body)
		}
		round(true)
	})
}
