package xmppserver

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stream"

	"sniper/xmppclient"
)

// The integration that matters: the sniper's real XMPP client against this
// server, no shortcut.

type clientInbox chan [2]string // from, body

func (in clientInbox) handler(from jid.JID, body string) { in <- [2]string{from.String(), body} }

func (in clientInbox) next(t *testing.T) (from, body string) {
	t.Helper()
	select {
	case m := <-in:
		return m[0], m[1]
	case <-time.After(10 * time.Second):
		t.Fatal("xmppclient: no message within 10s")
	}
	return "", ""
}

func sniperConfig(srv *Server, full, password string) xmppclient.Config {
	return xmppclient.Config{
		Addr:     srv.Addr(),
		JID:      full,
		Password: password,
		TLS:      xmppclient.TLSOff,
	}
}

func TestXMPPClientDialAndExchange(t *testing.T) {
	log, logs := newLogRecorder(t)
	srv := startServer(t, Config{Logger: log})
	srv.AddUser("sniper", "sniper-secret-pw")
	srv.AddUser("auction-item-54321", "auction-pw")

	// The auction house side: the tiny mellium client, bound to /Auction.
	auction := mustDial(t, srv, "auction-item-54321", "auction-pw", "Auction", clientOpts{})

	in := make(clientInbox, 16)
	cfg := sniperConfig(srv, "sniper@localhost/Auction", "sniper-secret-pw")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := xmppclient.Dial(ctx, cfg, in.handler)
	if err != nil {
		t.Fatalf("xmppclient.Dial: %v", err)
	}
	defer s.Close()
	if got := s.LocalJID().String(); got != "sniper@localhost/Auction" {
		t.Errorf("bound %s, want sniper@localhost/Auction", got)
	}

	// Sniper -> auction (full JID), as the sniper's JOIN/BID would go.
	join := "SOLVersion: 1.1; Command: JOIN;"
	if err := s.Send(ctx, auction.jid, join); err != nil {
		t.Fatalf("Send: %v", err)
	}
	m := auction.recv()
	if m.Body != join || m.From != "sniper@localhost/Auction" {
		t.Errorf("auction got %+v", m)
	}
	// Auction -> sniper, to the JID the message came from.
	price := "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 192; Increment: 7; Bidder: Someone else;"
	auction.send(jid.MustParse(m.From), price)
	from, body := in.next(t)
	if from != auction.jid.String() || body != price {
		t.Errorf("sniper got %q from %s", body, from)
	}
	// And to the sniper's bare JID.
	auction.send(jid.MustParse("sniper@localhost"), "bare")
	if from, body := in.next(t); body != "bare" || from != auction.jid.String() {
		t.Errorf("sniper got %q from %s", body, from)
	}

	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for _, l := range logs() {
		if strings.Contains(l, "secret") {
			t.Errorf("password in server log: %s", l)
		}
	}
}

func TestXMPPClientWrongPasswordIsErrAuth(t *testing.T) {
	srv := startServer(t, Config{})
	srv.AddUser("sniper", "right")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := xmppclient.Dial(ctx, sniperConfig(srv, "sniper@localhost/Auction", "wrong"), nil)
	if !errors.Is(err, xmppclient.ErrAuth) {
		t.Errorf("err = %v, want ErrAuth", err)
	}
}

func TestXMPPClientOverSTARTTLS(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	srv := startServer(t, Config{TLS: serverTLS})
	srv.AddUser("sniper", "pw")
	srv.AddUser("auction-item-1", "pw")
	auction := mustDial(t, srv, "auction-item-1", "pw", "Auction", clientOpts{tls: clientTLS})

	for _, mode := range []xmppclient.TLSMode{xmppclient.TLSRequire, xmppclient.TLSSkipVerify} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := sniperConfig(srv, "sniper@localhost/Auction", "pw")
			cfg.TLS = mode
			if mode == xmppclient.TLSRequire {
				cfg.RootCAs = clientTLS.RootCAs
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := xmppclient.Dial(ctx, cfg, nil)
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer s.Close()
			if err := s.Send(ctx, auction.jid, "over tls "+string(mode)); err != nil {
				t.Fatal(err)
			}
			if m := auction.recv(); m.Body != "over tls "+string(mode) || m.From != "sniper@localhost/Auction" {
				t.Errorf("got %+v", m)
			}
		})
	}

	// An untrusted certificate is a TLS error, not a login.
	cfg := sniperConfig(srv, "sniper@localhost/Auction", "pw")
	cfg.TLS = xmppclient.TLSRequire
	cfg.RootCAs = x509.NewCertPool()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := xmppclient.Dial(ctx, cfg, nil); !errors.Is(err, xmppclient.ErrTLS) {
		t.Errorf("untrusted cert: err = %v, want ErrTLS", err)
	}
}

// Conn.Run keeps the sniper connected: it logs in, exchanges messages, and
// when another login takes its resource (the server closes it with a
// conflict) it comes back.
func TestXMPPClientConnRun(t *testing.T) {
	srv := startServer(t, Config{})
	srv.AddUser("sniper", "pw")
	srv.AddUser("auction-item-7", "pw")
	auction := mustDial(t, srv, "auction-item-7", "pw", "Auction", clientOpts{})

	states := make(chan bool, 16)
	in := make(clientInbox, 16)
	cfg := sniperConfig(srv, "sniper@localhost/Auction", "pw")
	cfg.MinBackoff = 10 * time.Millisecond
	cfg.MaxBackoff = 50 * time.Millisecond
	cfg.OnStateChange = func(up bool) { states <- up }
	conn := xmppclient.New(cfg, in.handler)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = conn.Run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
		if runErr != nil {
			t.Errorf("Run: %v", runErr)
		}
	}()
	waitState := func(want bool) {
		t.Helper()
		select {
		case up := <-states:
			if up != want {
				t.Fatalf("state %v, want %v", up, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no state change to %v", want)
		}
	}

	waitState(true)
	exchange := func(round int) {
		t.Helper()
		body := fmt.Sprint("BID ", round)
		if err := conn.Send(ctx, auction.jid, body); err != nil {
			t.Fatalf("Send: %v", err)
		}
		if m := auction.recv(); m.Body != body || m.From != "sniper@localhost/Auction" {
			t.Fatalf("auction got %+v", m)
		}
		auction.send(jid.MustParse("sniper@localhost/Auction"), fmt.Sprint("PRICE ", round))
		if from, body := in.next(t); body != fmt.Sprint("PRICE ", round) || from != auction.jid.String() {
			t.Fatalf("sniper got %q from %s", body, from)
		}
	}
	exchange(1)

	// Someone else logs in as sniper/Auction: the server drops the Conn's
	// session (conflict), and the Conn reconnects, replacing the intruder.
	intruder := mustDial(t, srv, "sniper", "pw", "Auction", clientOpts{})
	waitState(false)
	waitState(true)
	if err := intruder.ended(); !errors.Is(err, stream.Conflict) {
		t.Errorf("intruder ended with %v, want conflict", err)
	}
	exchange(2)

	// The server goes away: the Conn notices.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	waitState(false)
	if conn.Connected() {
		t.Error("still connected after server Close")
	}
}

// xmppclient's Send returns only once the server has answered a ping sent
// right behind the message; this server answers it with a result (an
// error would do too, but means the ping went unrecognised).
func TestXMPPClientSendConfirmedByPingResult(t *testing.T) {
	srv := startServer(t, Config{})
	srv.AddUser("sniper", "pw")
	srv.AddUser("auction-item-9", "pw")
	auction := mustDial(t, srv, "auction-item-9", "pw", "Auction", clientOpts{})

	clientLog, lines := newLogRecorder(t)
	cfg := sniperConfig(srv, "sniper@localhost/Auction", "pw")
	cfg.Logger = clientLog
	cfg.ConfirmTimeout = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := xmppclient.Dial(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer s.Close()
	const n = 20
	for i := range n {
		if err := s.Send(ctx, auction.jid, fmt.Sprint("BID ", i)); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	for i := range n {
		if m := auction.recv(); m.Body != fmt.Sprint("BID ", i) {
			t.Fatalf("auction got %+v, want BID %d", m, i)
		}
	}
	for _, l := range lines() {
		if strings.Contains(l, "answered ping with an error") {
			t.Errorf("ping not answered with a result: %s", l)
		}
	}
}
