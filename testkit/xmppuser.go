package testkit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"sniper/xmppclient"
)

// WaitTimeout is how long the XMPP helpers wait for something to happen
// before failing the test.
const WaitTimeout = 10 * time.Second

// UserPassword is the password NewXMPPUser registers accounts with.
const UserPassword = "password"

// Message is one chat message an XMPPUser received.
type Message struct {
	From string // full JID of the sender
	Body string
	At   time.Time
}

func (m Message) String() string { return fmt.Sprintf("%s: %q", m.From, m.Body) }

// XMPPUser is a test account on a Prosody that records every message it
// receives and sends as itself: the auction house's stand-in, or an
// impostor in spoofing tests. It reconnects by itself if Prosody
// restarts.
type XMPPUser struct {
	t    testing.TB
	p    *Prosody
	jid  jid.JID
	conn *xmppclient.Conn

	mu       sync.Mutex
	received []Message
	up       bool
	changed  chan struct{} // closed and replaced on every change
	runErr   error

	cancel context.CancelFunc
	done   chan struct{}
}

// NewXMPPUser registers user@localhost (password UserPassword) and logs
// in as user@localhost/testkit. It is logged out when the test ends.
func NewXMPPUser(t testing.TB, p *Prosody, user string) *XMPPUser {
	t.Helper()
	return newXMPPUser(t, p, user, UserPassword, "testkit")
}

func newXMPPUser(t testing.TB, p *Prosody, user, password, resource string) *XMPPUser {
	t.Helper()
	if err := p.Register(user, password); err != nil {
		t.Fatalf("register %s: %v", user, err)
	}
	full, err := jid.New(user, p.Domain(), resource)
	if err != nil {
		t.Fatalf("jid for %s: %v", user, err)
	}
	u := &XMPPUser{t: t, p: p, jid: full, changed: make(chan struct{}), done: make(chan struct{})}
	u.conn = xmppclient.New(xmppclient.Config{
		Addr:     p.Addr(),
		JID:      full.String(),
		Password: password,
		TLS:      xmppclient.TLSSkipVerify,
		Logger:   Logger(t).With("testkit", user),
		// Redial quickly after a Prosody restart: tests wait on it.
		MaxBackoff:    200 * time.Millisecond,
		OnStateChange: u.setUp,
	}, u.record)

	ctx, cancel := context.WithCancel(context.Background())
	u.cancel = cancel
	go func() {
		defer close(u.done)
		err := u.conn.Run(ctx)
		u.mu.Lock()
		u.runErr = err
		u.signalLocked()
		u.mu.Unlock()
	}()
	t.Cleanup(u.Close)

	u.waitFor(fmt.Sprintf("%s to log in to %s", full, p.Addr()), func() bool { return u.up || u.runErr != nil })
	u.mu.Lock()
	runErr := u.runErr
	u.mu.Unlock()
	if runErr != nil {
		t.Fatalf("%s log in: %v\n%s", full, runErr, p.LogTail(30))
	}
	return u
}

// JID is the user's full JID, e.g. "auction-54321@localhost/Auction".
func (u *XMPPUser) JID() string { return u.jid.String() }

// Close logs out; it is also done when the test ends.
func (u *XMPPUser) Close() {
	u.cancel()
	<-u.done
}

// WaitConnected waits until the user is logged in, e.g. after a Prosody
// restart, so that messages sent to its full JID do not bounce.
func (u *XMPPUser) WaitConnected() {
	u.t.Helper()
	u.waitFor(u.jid.String()+" to be connected", func() bool { return u.up })
}

// Connected reports whether the user is logged in right now.
func (u *XMPPUser) Connected() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.up
}

// Send sends body to `to` (a bare or full JID), waiting for a connection
// if Prosody is restarting, and fails the test if it cannot.
func (u *XMPPUser) Send(to, body string) {
	u.t.Helper()
	if err := u.TrySend(to, body); err != nil {
		u.t.Fatalf("%s send %q to %s: %v", u.jid, body, to, err)
	}
}

// TrySend is Send returning the error instead of failing the test.
func (u *XMPPUser) TrySend(to, body string) error {
	dst, err := jid.Parse(to)
	if err != nil {
		return fmt.Errorf("parse %q: %w", to, err)
	}
	deadline := time.Now().Add(WaitTimeout)
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err = u.conn.Send(ctx, dst, body)
		cancel()
		if !errors.Is(err, xmppclient.ErrNotConnected) {
			return err
		}
		if !u.waitUntil(deadline, func() bool { return u.up || u.runErr != nil }) {
			return fmt.Errorf("not connected within %s: %w", WaitTimeout, err)
		}
		u.mu.Lock()
		runErr := u.runErr
		u.mu.Unlock()
		if runErr != nil {
			return fmt.Errorf("connection gave up: %w", runErr)
		}
	}
}

// Received returns a copy of every message received so far, oldest first.
func (u *XMPPUser) Received() []Message {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Message(nil), u.received...)
}

// WaitForMessage waits until a received message matches, and returns
// the first that does; it fails the test with what did arrive otherwise.
func (u *XMPPUser) WaitForMessage(what string, match func(Message) bool) Message {
	u.t.Helper()
	var found Message
	u.waitFor(what, func() bool {
		for _, m := range u.received {
			if match(m) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// waitForAll is WaitForMessage for a condition on all messages so far.
func (u *XMPPUser) waitForAll(what string, cond func([]Message) bool) {
	u.t.Helper()
	u.waitFor(what, func() bool { return cond(u.received) })
}

// waitFor fails the test unless cond (called with u.mu held) holds within
// WaitTimeout, showing what arrived and the tail of Prosody's log.
func (u *XMPPUser) waitFor(what string, cond func() bool) {
	u.t.Helper()
	if u.waitUntil(time.Now().Add(WaitTimeout), cond) {
		return
	}
	u.mu.Lock()
	got := make([]string, 0, len(u.received))
	for _, m := range u.received {
		got = append(got, "  "+m.String())
	}
	runErr := u.runErr
	u.mu.Unlock()
	msg := fmt.Sprintf("%s: timed out after %s waiting for %s\nreceived %d message(s):\n%s",
		u.jid, WaitTimeout, what, len(got), strings.Join(got, "\n"))
	if runErr != nil {
		msg += fmt.Sprintf("\nconnection gave up: %v", runErr)
	}
	msg += "\n" + u.p.LogTail(30)
	u.t.Fatal(msg)
}

// waitUntil reports whether cond (called with u.mu held) became true
// before deadline, waking on every recorded change rather than polling.
func (u *XMPPUser) waitUntil(deadline time.Time, cond func() bool) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		u.mu.Lock()
		ok := cond()
		ch := u.changed
		u.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			u.mu.Lock()
			defer u.mu.Unlock()
			return cond()
		}
	}
}

func (u *XMPPUser) record(from jid.JID, body string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.received = append(u.received, Message{From: from.String(), Body: body, At: time.Now()})
	u.signalLocked()
}

func (u *XMPPUser) setUp(up bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.up = up
	u.signalLocked()
}

func (u *XMPPUser) signalLocked() {
	close(u.changed)
	u.changed = make(chan struct{})
}
