// Package xmppserver is a minimal in-process XMPP client-to-server (c2s)
// server: just enough of an auction house's XMPP server for `sniper run`
// without an external server, for the sniper and simulated auction
// accounts. The sniper talks to it with its normal XMPP client code.
//
// What it does:
//   - Stream negotiation with mellium.im/xmpp (ReceiveSession): optional
//     STARTTLS, SASL PLAIN against in-memory accounts (AddUser), resource
//     binding that honours the requested resource.
//   - Routing of <message/> stanzas between bound sessions of its one
//     domain, with `from` stamped by the server.
//   - Answers to IQs addressed to the server (roster get, ping, session:
//     empty result; anything else: service-unavailable).
//
// What it does not do (by design): s2s, rosters, presence broadcast,
// offline storage, stream management, SCRAM, IQ routing between users,
// message carbons.
//
// Policies:
//
// TLS. When Config.TLS is nil the server speaks plaintext and offers SASL
// PLAIN without TLS; because the password then crosses the wire in clear,
// Start refuses a non-loopback listen address in that mode. When
// Config.TLS is set, STARTTLS is offered as required (mellium's STARTTLS
// feature always advertises <required/>) and SASL is offered only after
// TLS, like Prosody's default c2s_require_encryption.
//
// Authentication. Only PLAIN: mellium does not wire SCRAM on the server
// side. A wrong password (or unknown user) gets the SASL failure
// <not-authorized/> and the connection is closed (no retry on the same
// stream).
//
// Binding. The requested resource is bound as is; a random one is made up
// when none is requested. If that full JID is already online, the old
// session is closed with a <conflict/> stream error and the new one takes
// its place (what Prosody does by default).
//
// Routing. A message to a full JID goes to that session. A message to a
// bare JID goes to the most recently bound session of that user. A chat or
// normal message to a full JID that is not online falls back to the bare
// JID (RFC 6121 §8.5.3.2.1). If no session can take it, the sender gets an
// error message <service-unavailable/> back (like Prosody with offline
// storage disabled); messages of type error are dropped instead, so two
// bouncing parties cannot loop. Messages for other domains bounce with
// <remote-server-not-found/>. There is no offline storage: a message
// queued for a session that dies before it is written is lost, like on any
// server without stream management.
//
// IQs. get/set addressed to the server or to the user's own bare JID:
// roster get, ping and session get an empty result, anything else
// <service-unavailable/>. IQs addressed to other users are not routed;
// they too get <service-unavailable/>. Presence is accepted and ignored.
//
// Robustness. Every session has a bounded outbound queue drained by its own
// writer goroutine, the only writer once the stream is up, and every write
// on the socket has a deadline (5 s): a client that does not read cannot
// block the server or other sessions; when its queue overflows or a write
// times out, it is disconnected. Stanzas larger than about 64 KiB end the
// offending stream with <policy-violation/>, bad XML with
// <not-well-formed/> or <bad-format/>; other sessions are unaffected.
// Negotiation must complete within 10 s. A session stops being routable
// the moment the client's </stream:stream> is read, so a message sent
// after that bounces instead of vanishing into a closing stream.
//
// Logging: log/slog, with the session's full JID (or remote address before
// binding). Passwords are never logged.
package xmppserver

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stream"
)

// Tuning. Constants rather than Config fields: the server is a test and
// demo fixture and these values suit loopback use.
const (
	// negotiateTimeout bounds stream negotiation (TLS, SASL, bind).
	negotiateTimeout = 10 * time.Second
	// writeTimeout bounds every single write on a client socket.
	writeTimeout = 5 * time.Second
	// closeGrace bounds the final write of a stream error when the server
	// closes a session (conflict, shutdown).
	closeGrace = time.Second
	// maxStanzaBytes is the approximate largest stanza accepted.
	maxStanzaBytes = 64 << 10
	// outQueueLen is the number of stanzas that may wait for a session's
	// writer before the session is considered stuck and closed.
	outQueueLen = 512
)

// Config configures a Server.
type Config struct {
	// Addr is the TCP listen address, e.g. "127.0.0.1:0" (the default).
	// Without TLS it must be a loopback address.
	Addr string
	// Domain is the server's XMPP domain, e.g. "localhost" (the default).
	Domain string
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// TLS, when set, makes the server offer (and require) STARTTLS.
	TLS *tls.Config
}

// Server is a running in-process XMPP c2s server. Its methods are safe for
// concurrent use.
type Server struct {
	domain jid.JID
	tls    *tls.Config
	log    *slog.Logger
	ln     net.Listener

	stopCtx func() bool    // detaches Start's ctx
	wg      sync.WaitGroup // every goroutine the server owns

	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed when Close starts

	usersMu sync.RWMutex
	users   map[string]string // normalised localpart -> password

	mu       sync.RWMutex
	closed   bool
	sessions map[*session]struct{} // every accepted connection
	full     map[string]*session   // full JID -> bound session
	bare     map[string][]*session // bare JID -> bound sessions, oldest first
}

// Start listens on cfg.Addr and serves XMPP clients until Close is called
// or ctx is cancelled (which has the same effect as Close).
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	domain, err := jid.New("", cfg.Domain, "")
	if err != nil {
		return nil, fmt.Errorf("xmppserver: invalid domain %q: %w", cfg.Domain, err)
	}
	if cfg.TLS == nil {
		if err := requireLoopback(cfg.Addr); err != nil {
			return nil, err
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("xmppserver: listen: %w", err)
	}
	s := &Server{
		domain:   domain,
		tls:      cfg.TLS,
		log:      log.With("component", "xmppserver", "domain", domain.String()),
		ln:       ln,
		done:     make(chan struct{}),
		users:    make(map[string]string),
		sessions: make(map[*session]struct{}),
		full:     make(map[string]*session),
		bare:     make(map[string][]*session),
	}
	s.stopCtx = context.AfterFunc(ctx, func() { _ = s.Close() })
	s.wg.Add(1)
	go s.acceptLoop()
	s.log.Info("xmpp server listening", "addr", s.Addr(), "starttls", cfg.TLS != nil)
	return s, nil
}

func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("xmppserver: bad address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("xmppserver: refusing plaintext (SASL PLAIN without TLS) on non-loopback address %q; set Config.TLS", addr)
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Domain returns the server's XMPP domain, e.g. "localhost".
func (s *Server) Domain() string { return s.domain.String() }

// AddUser creates the account user@Domain with password, or changes its
// password. It may be called while the server runs; sessions already
// logged in are not affected. user is a localpart ("sniper"), or a bare
// JID of this domain ("sniper@localhost"). An invalid name is logged and
// ignored.
func (s *Server) AddUser(user, password string) {
	local, err := s.normaliseUser(user)
	if err != nil {
		s.log.Error("xmpp server: cannot add user", "user", user, "err", err)
		return
	}
	s.usersMu.Lock()
	s.users[local] = password
	s.usersMu.Unlock()
	s.log.Debug("xmpp user added", "user", local)
}

func (s *Server) normaliseUser(user string) (string, error) {
	if j, err := jid.Parse(user); err == nil && j.Localpart() != "" {
		if j.Domainpart() != s.domain.Domainpart() || j.Resourcepart() != "" {
			return "", fmt.Errorf("not a bare JID of %s", s.domain)
		}
		return j.Localpart(), nil
	}
	j, err := jid.New(user, s.domain.Domainpart(), "")
	if err != nil {
		return "", err
	}
	if j.Localpart() == "" {
		return "", errors.New("empty user name")
	}
	return j.Localpart(), nil
}

// checkPassword reports whether user (a localpart as sent by the client)
// exists with that password, and the normalised localpart.
func (s *Server) checkPassword(user, password []byte) (string, bool) {
	local, err := s.normaliseUser(string(user))
	if err != nil {
		return "", false
	}
	s.usersMu.RLock()
	want, ok := s.users[local]
	s.usersMu.RUnlock()
	if !ok {
		// Compare anyway so that unknown users cost the same time.
		subtle.ConstantTimeCompare(password, password)
		return local, false
	}
	return local, subtle.ConstantTimeCompare([]byte(want), password) == 1
}

// Close stops accepting connections, closes every session (with a
// <system-shutdown/> stream error) and waits for all of the server's
// goroutines to end. Calling it again returns the first result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.stopCtx()
		close(s.done)
		s.mu.Lock()
		s.closed = true
		all := make([]*session, 0, len(s.sessions))
		for c := range s.sessions {
			all = append(all, c)
		}
		s.mu.Unlock()
		if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.closeErr = err
		}
		for _, c := range all {
			c.kill(&stream.SystemShutdown, "server shutdown")
		}
		s.wg.Wait()
		s.log.Info("xmpp server stopped")
	})
	return s.closeErr
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		raw, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary trouble (e.g. out of file descriptors): back off a
			// little instead of spinning.
			s.log.Warn("xmpp accept failed", "err", err)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		c := newSession(s, raw)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = raw.Close()
			return
		}
		s.sessions[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.run()
	}
}

// bind registers c under its full JID. An older session with the same full
// JID is closed with a <conflict/> stream error. It returns false if the
// server is closing or c was killed meanwhile.
func (s *Server) bind(c *session) bool {
	key, bareKey := c.jid.String(), c.jid.Bare().String()
	s.mu.Lock()
	if s.closed || c.isDead() {
		s.mu.Unlock()
		return false
	}
	old := s.full[key]
	if old != nil {
		s.unbindLocked(old)
	}
	s.full[key] = c
	s.bare[bareKey] = append(s.bare[bareKey], c)
	s.mu.Unlock()
	if old != nil {
		old.log.Info("xmpp session replaced by a new login with the same resource")
		old.kill(&stream.Conflict, "replaced by new session")
	}
	return true
}

// unbind removes c from the routing tables if it is still registered.
func (s *Server) unbind(c *session) {
	s.mu.Lock()
	s.unbindLocked(c)
	delete(s.sessions, c)
	s.mu.Unlock()
}

func (s *Server) unbindLocked(c *session) {
	if c.jid.Equal(jid.JID{}) {
		return
	}
	key, bareKey := c.jid.String(), c.jid.Bare().String()
	if s.full[key] == c {
		delete(s.full, key)
	}
	list := s.bare[bareKey]
	for i, x := range list {
		if x == c {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.bare, bareKey)
	} else {
		s.bare[bareKey] = list
	}
}

// lookup finds the session a stanza to `to` should be delivered to; nil if
// none. fallbackToBare makes a full JID that is not online resolve like its
// bare JID.
func (s *Server) lookup(to jid.JID, fallbackToBare bool) *session {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if to.Resourcepart() != "" {
		if c := s.full[to.String()]; c != nil {
			return c
		}
		if !fallbackToBare {
			return nil
		}
	}
	list := s.bare[to.Bare().String()]
	if len(list) == 0 {
		return nil
	}
	return list[len(list)-1]
}

// online reports the number of bound sessions (for tests and logs).
func (s *Server) online() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.full)
}
