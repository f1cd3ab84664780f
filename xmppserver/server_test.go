package xmppserver

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"
)

func newPair(t *testing.T, cfg Config) (*Server, *testClient, *testClient) {
	t.Helper()
	srv := startServer(t, cfg)
	srv.AddUser("alice", "alice-pw")
	srv.AddUser("bob", "bob-pw")
	a := mustDial(t, srv, "alice", "alice-pw", "Sniper", clientOpts{})
	b := mustDial(t, srv, "bob", "bob-pw", "Auction", clientOpts{})
	return srv, a, b
}

func TestBindHonoursRequestedResource(t *testing.T) {
	srv, a, b := newPair(t, Config{})
	if got, want := a.jid.String(), "alice@localhost/Sniper"; got != want {
		t.Errorf("alice bound %s, want %s", got, want)
	}
	if got, want := b.jid.String(), "bob@localhost/Auction"; got != want {
		t.Errorf("bob bound %s, want %s", got, want)
	}
	c := mustDial(t, srv, "alice", "alice-pw", "", clientOpts{})
	if c.jid.Bare().String() != "alice@localhost" || c.jid.Resourcepart() == "" || c.jid.Resourcepart() == "Sniper" {
		t.Errorf("no resource requested: bound %s, want alice@localhost/<random>", c.jid)
	}
}

func TestMessageToFullAndBareJID(t *testing.T) {
	_, a, b := newPair(t, Config{})

	a.send(b.jid, "to full")
	m := b.recv()
	if m.Body != "to full" || m.From != a.jid.String() || m.Type != "chat" {
		t.Errorf("got %+v, want body %q from %s", m, "to full", a.jid)
	}

	a.send(b.jid.Bare(), "to bare")
	m = b.recv()
	if m.Body != "to bare" || m.From != a.jid.String() {
		t.Errorf("got %+v, want body %q from %s", m, "to bare", a.jid)
	}
}

func TestForgedFromIsReplaced(t *testing.T) {
	_, a, b := newPair(t, Config{})
	forged := stanza.Message{
		To:   b.jid,
		From: jid.MustParse("mallory@localhost/Evil"),
		Type: stanza.ChatMessage,
	}.Wrap(xmlstream.MultiReader(
		xmlstream.Wrap(xmlstream.Token(xml.CharData("forged")), xml.StartElement{Name: xml.Name{Local: "body"}}),
		// An extension element must survive the trip.
		xmlstream.Wrap(nil, xml.StartElement{
			Name: xml.Name{Space: "urn:example:ext", Local: "ext"},
			Attr: []xml.Attr{{Name: xml.Name{Local: "value"}, Value: "42"}},
		}),
	))
	a.sendRaw(forged)
	m := b.recv()
	if m.From != a.jid.String() {
		t.Errorf("from = %q, want the sender's real JID %s", m.From, a.jid)
	}
	if m.Body != "forged" || m.Ext == nil || m.Ext.Value != "42" {
		t.Errorf("payload not preserved: %+v (ext %+v)", m, m.Ext)
	}
}

func TestWrongPasswordFailsAuth(t *testing.T) {
	srv := startServer(t, Config{})
	srv.AddUser("alice", "alice-pw")
	for _, tc := range []struct{ user, pw string }{
		{"alice", "wrong"},
		{"nobody", "alice-pw"},
	} {
		_, err := dial(t, srv, tc.user, tc.pw, "x", clientOpts{})
		if err == nil {
			t.Fatalf("%s with a wrong password logged in", tc.user)
		}
		if !strings.Contains(err.Error(), "not-authorized") {
			t.Errorf("%s: err = %v, want a SASL not-authorized failure", tc.user, err)
		}
	}
	// Passwords can change while running.
	srv.AddUser("alice", "new-pw")
	if _, err := dial(t, srv, "alice", "alice-pw", "x", clientOpts{}); err == nil {
		t.Error("old password still accepted")
	}
	mustDial(t, srv, "alice", "new-pw", "x", clientOpts{})
}

func TestMessageToOfflineUserBounces(t *testing.T) {
	srv, a, b := newPair(t, Config{})
	srv.AddUser("carol", "carol-pw")

	for _, to := range []string{"carol@localhost/Auction", "carol@localhost", "nobody@localhost", "bob@localhost/Gone"} {
		// bob@localhost/Gone: a chat message to an offline resource falls
		// back to bob's bare JID (RFC 6121), so bob gets it.
		a.send(jid.MustParse(to), "hello "+to)
		if to == "bob@localhost/Gone" {
			if m := b.recv(); m.Body != "hello "+to {
				t.Errorf("fallback to bare: got %+v", m)
			}
			continue
		}
		m := a.recv()
		if m.Type != "error" || m.errCond() != "service-unavailable" || m.From != to {
			t.Errorf("to %s: got %+v (cond %q), want a service-unavailable error from %s", to, m, m.errCond(), to)
		}
	}
	a.send(jid.MustParse("x@elsewhere.example"), "far")
	if m := a.recv(); m.errCond() != "remote-server-not-found" {
		t.Errorf("foreign domain: got cond %q", m.errCond())
	}
	// Error messages are not bounced back (no loops).
	a.sendRaw(stanza.Message{To: jid.MustParse("carol@localhost"), Type: stanza.ErrorMessage}.Wrap(nil))
	// Everything still flows.
	a.send(b.jid, "still here")
	if m := b.recv(); m.Body != "still here" {
		t.Errorf("got %+v", m)
	}
	select {
	case m := <-a.in:
		t.Errorf("unexpected message for alice: %+v", m)
	default:
	}
}

func TestIQsToServerAreAnswered(t *testing.T) {
	_, a, _ := newPair(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name    xml.Name
		typ     stanza.IQType
		wantErr bool
	}{
		{xml.Name{Space: nsRoster, Local: "query"}, stanza.GetIQ, false},
		{xml.Name{Space: nsPing, Local: "ping"}, stanza.GetIQ, false},
		{xml.Name{Space: nsSession, Local: "session"}, stanza.SetIQ, false},
		{xml.Name{Space: "vcard-temp", Local: "vCard"}, stanza.GetIQ, true},
	} {
		iq := stanza.IQ{Type: tc.typ, To: jid.MustParse("localhost")}
		resp, err := a.sess.SendIQ(ctx, iq.Wrap(xmlstream.Wrap(nil, xml.StartElement{Name: tc.name})))
		if err != nil {
			t.Fatalf("%s: %v", tc.name.Space, err)
		}
		toks, err := xmlstream.ReadAll(resp)
		resp.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.name.Space, err)
		}
		start := toks[0].(xml.StartElement)
		got := attrValue(start.Attr, "type")
		if want := map[bool]string{false: "result", true: "error"}[tc.wantErr]; got != want {
			t.Errorf("%s: type %q, want %q", tc.name.Space, got, want)
		}
	}
}

func TestSameFullJIDReplacesOldSession(t *testing.T) {
	srv, a, b1 := newPair(t, Config{})
	b2 := mustDial(t, srv, "bob", "bob-pw", "Auction", clientOpts{})
	err := b1.ended()
	if !errors.Is(err, stream.Conflict) {
		t.Errorf("old session ended with %v, want a conflict stream error", err)
	}
	a.send(jid.MustParse("bob@localhost/Auction"), "to the new one")
	if m := b2.recv(); m.Body != "to the new one" {
		t.Errorf("got %+v", m)
	}
	if n := srv.online(); n != 2 {
		t.Errorf("%d sessions online, want 2", n)
	}
}

func TestBareJIDGoesToMostRecentSession(t *testing.T) {
	srv, a, b1 := newPair(t, Config{})
	b2 := mustDial(t, srv, "bob", "bob-pw", "Second", clientOpts{})
	a.send(jid.MustParse("bob@localhost"), "latest")
	if m := b2.recv(); m.Body != "latest" {
		t.Errorf("got %+v", m)
	}
	b2.close()
	a.send(jid.MustParse("bob@localhost"), "remaining")
	if m := b1.recv(); m.Body != "remaining" {
		t.Errorf("got %+v", m)
	}
}

func TestGarbageDoesNotAffectEstablishedSessions(t *testing.T) {
	srv, a, b := newPair(t, Config{})

	garbage := []string{
		"\x00\xff\xfe not xml at all <<<",
		"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'><<<>>>",
		"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!notbase64!!</auth>",
		"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'><message to='bob@localhost/Auction'><body>not authenticated</body></message>",
		"<!DOCTYPE lol [<!ENTITY lol 'lol'>]><lol>&lol;</lol>",
	}
	for i, g := range garbage {
		conn, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(conn, g); err != nil {
			t.Fatal(err)
		}
		if _, err := readUntilClosed(conn, 10*time.Second); err != nil {
			t.Errorf("garbage %d: server did not close the connection: %v", i, err)
		}
		conn.Close()
	}

	// Half a stanza, then the client vanishes.
	half := mustDial(t, srv, "alice", "alice-pw", "Half", clientOpts{})
	if _, err := io.WriteString(half.conn, "<message to='bob@localhost/Auction' type='chat'><body>half"); err != nil {
		t.Fatal(err)
	}
	half.conn.Close()

	// An authenticated session that starts sending garbage is closed...
	bad := mustDial(t, srv, "alice", "alice-pw", "Bad", clientOpts{})
	if _, err := io.WriteString(bad.conn, "</notopen><<<"); err != nil {
		t.Fatal(err)
	}
	if err := bad.ended(); !errors.Is(err, stream.NotWellFormed) {
		t.Errorf("garbage sender's session ended with %v, want a not-well-formed stream error", err)
	}

	// ...and the others are unaffected.
	for i := range 3 {
		a.send(b.jid, fmt.Sprint("after garbage ", i))
		if m := b.recv(); m.Body != fmt.Sprint("after garbage ", i) || m.From != a.jid.String() {
			t.Errorf("got %+v", m)
		}
	}
	select {
	case m := <-b.in:
		t.Errorf("bob got an unexpected message: %+v", m)
	default:
	}
}

func TestOversizedStanzaClosesOnlyThatSession(t *testing.T) {
	log, logs := newLogRecorder(t)
	srv, a, b := newPair(t, Config{Logger: log})
	big := strings.Repeat("x", 200<<10)
	// The send may fail part-way once the server hangs up; either is fine.
	_ = a.sess.Send(context.Background(), chatMsg(b.jid, big, ""))
	// The client sees the policy-violation stream error, or, if the
	// server's close hit the rest of its unread stanza, a reset.
	err := a.ended()
	t.Logf("oversized sender's session ended with: %v", err)
	if !slices.ContainsFunc(logs(), func(l string) bool {
		return strings.Contains(l, "stanza too large") && strings.Contains(l, "jid=alice@localhost/Sniper")
	}) {
		t.Errorf("no 'stanza too large' log for alice; logs:\n%s", strings.Join(logs(), "\n"))
	}
	select {
	case m := <-b.in:
		t.Errorf("bob got the oversized message: %d bytes", len(m.Body))
	default:
	}
	// A large but acceptable stanza still goes through, for the others.
	a2 := mustDial(t, srv, "alice", "alice-pw", "Again", clientOpts{})
	ok := strings.Repeat("y", 40<<10)
	a2.send(b.jid, ok)
	if m := b.recv(); m.Body != ok {
		t.Errorf("40 KiB message: got %d bytes", len(m.Body))
	}
}

func TestSlowClientDoesNotBlockOthers(t *testing.T) {
	srv, a, b := newPair(t, Config{})
	srv.AddUser("slow", "slow-pw")
	slow := mustDial(t, srv, "slow", "slow-pw", "Auction", clientOpts{noServe: true})

	// slow never reads: its socket buffers, then its queue, fill up. The
	// server must drop it, and alice's sends must never block on it.
	body := strings.Repeat("z", 8<<10)
	t0 := time.Now()
	sent, bounced := 0, 0
	// Send until the server reports slow as gone (a bounce), which must
	// happen once its buffers and queue are full: about 1000 messages.
	for ; sent < 4000 && bounced == 0; sent++ {
		a.send(slow.jid, body)
		select {
		case m := <-a.in:
			if m.errCond() == "service-unavailable" {
				bounced++
			}
		default:
		}
	}
	t.Logf("%d sends of 8 KiB to the slow client took %v", sent, time.Since(t0))
	if bounced == 0 {
		t.Fatalf("slow client still considered online after %d messages", sent)
	}
	// alice and bob are unaffected.
	a.send(b.jid, "unaffected")
	if m := b.recv(); m.Body != "unaffected" {
		t.Errorf("got %+v", m)
	}
	// The server hung up on the slow client (it still gets what was
	// buffered, then EOF).
	if _, err := readUntilClosed(slow.conn, 20*time.Second); err != nil {
		t.Errorf("slow client not disconnected: %v", err)
	}
	if n := srv.online(); n != 2 {
		t.Errorf("%d sessions online, want 2 (alice, bob)", n)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	before := len(serverGoroutines())
	if before != 0 {
		t.Logf("note: %d server goroutines from other tests", before)
	}
	srv, err := Start(context.Background(), Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv.AddUser("alice", "pw")
	srv.AddUser("bob", "pw")
	a := mustDial(t, srv, "alice", "pw", "A", clientOpts{})
	b := mustDial(t, srv, "bob", "pw", "B", clientOpts{})
	a.send(b.jid, "hi")
	b.recv()
	// A connection stuck in negotiation (silent) must not hold Close up.
	silent, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// And one that connected and sent half a stream header.
	half, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	io.WriteString(half, "<?xml version='1.0'?><stream:stream xmlns='jabber:cli")

	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	for _, c := range []*testClient{a, b} {
		if err := c.ended(); !errors.Is(err, stream.SystemShutdown) {
			t.Errorf("%s ended with %v, want system-shutdown", c.jid, err)
		}
	}
	if _, err := net.Dial("tcp", srv.Addr()); err == nil {
		t.Error("still accepting after Close")
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	waitNoServerGoroutines(t)
}

func TestContextCancelClosesServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := Start(ctx, Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv.AddUser("alice", "pw")
	a := mustDial(t, srv, "alice", "pw", "A", clientOpts{})
	cancel()
	if err := a.ended(); !errors.Is(err, stream.SystemShutdown) {
		t.Errorf("ended with %v, want system-shutdown", err)
	}
	srv.Close()
	waitNoServerGoroutines(t)
}

func TestStartTLS(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	srv := startServer(t, Config{TLS: serverTLS})
	srv.AddUser("alice", "alice-pw")
	srv.AddUser("bob", "bob-pw")

	// Without STARTTLS, SASL is not offered: login fails.
	if _, err := dial(t, srv, "alice", "alice-pw", "Plain", clientOpts{}); err == nil {
		t.Error("plaintext login accepted on a TLS server")
	}
	a := mustDial(t, srv, "alice", "alice-pw", "Sniper", clientOpts{tls: clientTLS})
	b := mustDial(t, srv, "bob", "bob-pw", "Auction", clientOpts{tls: clientTLS})
	if !a.sess.ConnectionState().HandshakeComplete {
		t.Fatal("no TLS")
	}
	a.send(b.jid, "over tls")
	if m := b.recv(); m.Body != "over tls" || m.From != a.jid.String() {
		t.Errorf("got %+v", m)
	}
}

func TestPlaintextRefusesNonLoopback(t *testing.T) {
	if _, err := Start(context.Background(), Config{Addr: "0.0.0.0:0"}); err == nil {
		t.Error("plaintext server started on 0.0.0.0")
	}
}

func TestConcurrentSessions(t *testing.T) {
	srv := startServer(t, Config{})
	const n = 8
	clients := make([]*testClient, n)
	for i := range n {
		user := fmt.Sprint("user", i)
		srv.AddUser(user, "pw") // while running, as the others log in
		clients[i] = mustDial(t, srv, user, "pw", "R", clientOpts{})
	}
	const per = 50
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			to := clients[(i+1)%n].jid
			for k := range per {
				if err := c.sess.Send(context.Background(), chatMsg(to, fmt.Sprint(k), "")); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i, c := range clients {
		from := clients[(i+n-1)%n].jid.String()
		var got []string
		for range per {
			m := c.recv()
			if m.From != from {
				t.Errorf("%s: from %s, want %s", c.jid, m.From, from)
			}
			got = append(got, m.Body)
		}
		want := make([]string, per)
		for k := range per {
			want[k] = fmt.Sprint(k)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: messages out of order or lost: %v", c.jid, got)
		}
	}
}

func TestRoundTripLatency(t *testing.T) {
	srv := startServer(t, Config{})
	srv.AddUser("alice", "pw")
	srv.AddUser("bob", "pw")
	a := mustDial(t, srv, "alice", "pw", "A", clientOpts{})
	b := mustDial(t, srv, "bob", "pw", "B", clientOpts{echo: true})
	const n = 200
	rtts := make([]time.Duration, 0, n)
	for i := range n {
		body := fmt.Sprint("ping ", i)
		t0 := time.Now()
		a.send(b.jid, body)
		m := a.recv()
		rtts = append(rtts, time.Since(t0))
		if m.Body != body || m.From != b.jid.String() {
			t.Fatalf("got %+v, want %q from %s", m, body, b.jid)
		}
	}
	slices.Sort(rtts)
	t.Logf("A->B->A round trip over %d messages: p50 %v, p99 %v, max %v", n, rtts[n/2], rtts[n*99/100], rtts[n-1])
}
