package xmppserver

import (
	"context"
	"crypto/rand"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"
)

var connIDs atomic.Uint64

// streamEnd as a kill reason closes the stream politely, without an error.
var streamEnd = stream.Error{}

// session is one client connection, from accept to close.
//
// Goroutines: run (negotiation, then the read loop: routes messages,
// answers IQs) and, once the stream is negotiated, writeLoop, which drains
// the outbound queue and is the only writer after negotiation. Both are
// counted in Server.wg.
//
// Closing: kill marks the session dead once. A hard kill (reason nil)
// closes the socket at once; a kill with a reason lets the writer flush
// what is queued, send the stream error (none for streamEnd), close the
// stream and the socket, all within closeGrace. Either way the blocked
// read fails and run cleans up.
type session struct {
	srv  *Server
	raw  net.Conn
	nc   *guardConn
	base *slog.Logger // remote address and connection id; immutable

	// jid and log are set (during negotiation) before the session is
	// published to the router, sess before writeLoop starts; read-only
	// afterwards.
	sess *xmpp.Session
	jid  jid.JID
	log  *slog.Logger

	// Negotiation state, touched only by run's goroutine (mellium calls the
	// SASL and bind callbacks synchronously from ReceiveSession).
	streamTo jid.JID
	user     string

	out        chan []xml.Token
	dead       chan struct{}
	writerDone chan struct{}

	mu            sync.Mutex
	killed        bool
	reason        *stream.Error
	bound         bool // past resource binding: negotiation reads no more
	writerStarted bool
}

func newSession(s *Server, raw net.Conn) *session {
	c := &session{
		srv:        s,
		raw:        raw,
		out:        make(chan []xml.Token, outQueueLen),
		dead:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	c.base = s.log.With("conn", connIDs.Add(1), "remote", raw.RemoteAddr().String())
	c.log = c.base
	c.nc = newGuardConn(raw, maxStanzaBytes+32<<10, c.stanzaTooLarge)
	return c
}

// kill closes the session (idempotent). With a reason the writer sends it
// as a stream error before closing the socket; without one (or before the
// writer runs) the socket is closed at once.
func (c *session) kill(reason *stream.Error, why string) {
	c.mu.Lock()
	if c.killed {
		c.mu.Unlock()
		return
	}
	c.killed = true
	c.reason = reason
	close(c.dead)
	// Graceful only if someone will write the stream error and then close
	// the socket: the writer, or run right after negotiation (which, once
	// bound, blocks on no read).
	graceful := reason != nil && (c.writerStarted || c.bound)
	c.mu.Unlock()

	c.base.Debug("xmpp session closing", "why", why)
	if graceful {
		c.nc.beginClose(closeGrace)
	} else {
		_ = c.raw.Close()
	}
}

func (c *session) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// fail closes the session with a stream error from run's goroutine and
// waits until the writer has sent it. It returns the error, for the read
// loop to return.
func (c *session) fail(reason *stream.Error, why string) error {
	c.kill(reason, why)
	c.mu.Lock()
	started := c.writerStarted
	c.mu.Unlock()
	if started {
		<-c.writerDone
	}
	return *reason
}

// stanzaTooLarge is guardConn's limit callback; it runs in run's goroutine
// (the only reader).
func (c *session) stanzaTooLarge() {
	c.log.Warn("xmpp stanza too large; closing session", "limit_bytes", maxStanzaBytes)
	_ = c.fail(&stream.PolicyViolation, "stanza too large")
}

func (c *session) run() {
	defer c.srv.wg.Done()
	defer func() {
		c.kill(nil, "session ended")
		c.srv.unbind(c)
		c.mu.Lock()
		started := c.writerStarted
		c.mu.Unlock()
		if started {
			<-c.writerDone
		}
		_ = c.raw.Close()
	}()

	sess, err := c.negotiate()
	if err != nil {
		if !c.isDead() {
			c.base.Info("xmpp stream negotiation failed", "err", err)
		}
		if sess != nil {
			_ = sess.Close() // </stream:stream>, best effort
		}
		return
	}
	c.sess = sess

	c.mu.Lock()
	if c.killed {
		// Replaced or shut down while finishing negotiation.
		reason := c.reason
		c.mu.Unlock()
		if reason != nil {
			c.writeStreamError(*reason)
		}
		return
	}
	c.writerStarted = true
	c.srv.wg.Add(1)
	c.mu.Unlock()
	go c.writeLoop()

	c.log.Info("xmpp session online", "tls", sess.ConnectionState().Version != 0)
	err = c.readLoop()
	switch {
	case c.isDead():
		c.log.Info("xmpp session offline", "closed_by", "server")
	case errors.Is(err, io.EOF):
		// The client ended its stream: stop routing to it at once, then
		// end ours (after what is already queued for it).
		c.srv.unbind(c)
		c.kill(&streamEnd, "client closed stream")
		c.log.Info("xmpp session offline")
	default:
		var se stream.Error
		switch {
		case errors.As(err, &se):
			c.log.Info("xmpp session offline", "client_stream_error", se.Err)
			c.kill(&streamEnd, "client sent stream error")
		case isNetErr(err):
			c.log.Info("xmpp session offline", "err", err)
		default:
			var syntax *xml.SyntaxError
			reason := &stream.BadFormat
			if errors.As(err, &syntax) {
				reason = &stream.NotWellFormed
			}
			c.log.Info("xmpp session offline: bad XML", "err", err, "condition", reason.Err)
			_ = c.fail(reason, "bad XML")
		}
	}
}

// readLoop reads the client's stream one top-level element at a time until
// the stream or the connection ends. (mellium's Session.Serve would do
// this, but it writes its answers itself, leaves the stream errors it sends
// unflushed, and gives no hook between the client's </stream:stream> and
// its own, which is when the session must stop being routable.)
func (c *session) readLoop() error {
	for {
		r := c.sess.TokenReader() // mellium's reader: ends with io.EOF at </stream:stream>, returns stream errors
		tok, err := r.Token()
		if err != nil {
			_ = r.Close()
			return err
		}
		switch t := tok.(type) {
		case xml.CharData:
			// Whitespace keepalive (other text is an error from the reader).
		case xml.StartElement:
			inner := xmlstream.InnerElement(r)
			err = c.handle(inner, &t)
			if err == nil {
				// Skip what the handler left unread.
				_, err = xmlstream.Copy(xmlstream.Discard(), inner)
			}
		default:
			err = fmt.Errorf("unexpected %T at stream level", tok)
		}
		_ = r.Close()
		if err != nil {
			return err
		}
	}
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// negotiate runs stream negotiation: STARTTLS (if configured), SASL PLAIN,
// resource binding. It returns with the full JID in c.jid.
func (c *session) negotiate() (*xmpp.Session, error) {
	var features []xmpp.StreamFeature
	state := xmpp.Secure // plaintext on loopback: let SASL be offered at once
	if c.srv.tls != nil {
		features = append(features, xmpp.StartTLS(c.srv.tls))
		state = 0
	}
	features = append(features,
		xmpp.SASLServer(c.permit, sasl.Plain),
		xmpp.BindCustom(c.bindResource),
	)
	negotiator := xmpp.NewNegotiator(func(s *xmpp.Session, _ *xmpp.StreamConfig) xmpp.StreamConfig {
		if s != nil {
			c.streamTo = s.LocalAddr() // the 'to' of the stream header just read
		}
		return xmpp.StreamConfig{Features: features}
	})

	// The deadline bounds the whole negotiation, including a client that
	// connects and says nothing. Close unblocks it by closing the socket.
	// (No context deadline: mellium would set the connection's deadline in
	// the past from a goroutine when that context ended.)
	_ = c.raw.SetReadDeadline(time.Now().Add(negotiateTimeout))
	sess, err := xmpp.ReceiveSession(context.Background(), c.nc, state, negotiator)
	if err != nil {
		return sess, err
	}
	if c.jid.Equal(jid.JID{}) {
		// mellium answers a failed bind with an error IQ but still
		// declares the stream ready.
		return sess, errors.New("resource binding failed")
	}
	if err := c.raw.SetReadDeadline(time.Time{}); err != nil {
		return sess, err
	}
	return sess, nil
}

// permit is the SASL PLAIN permissions callback.
func (c *session) permit(n *sasl.Negotiator) bool {
	user, password, identity := n.Credentials()
	log := c.base.With("user", string(user))
	if c.streamTo.Domainpart() != c.srv.domain.Domainpart() {
		log.Info("xmpp auth failed", "reason", "stream addressed to unknown host", "to", c.streamTo.String())
		return false
	}
	local, ok := c.srv.checkPassword(user, password)
	if !ok {
		log.Info("xmpp auth failed", "reason", "unknown user or wrong password")
		return false
	}
	if len(identity) > 0 {
		// Only "act as myself" authorisation identities are allowed.
		authz, err := c.srv.normaliseUser(string(identity))
		if err != nil || authz != local {
			log.Info("xmpp auth failed", "reason", "authorisation identity not allowed")
			return false
		}
	}
	c.user = local
	log.Debug("xmpp auth ok")
	return true
}

// bindResource is the server side of resource binding: the requested
// resource as is, or a random one. The JID from the stream header is
// ignored: only the SASL-authenticated user counts.
func (c *session) bindResource(_ jid.JID, resource string) (jid.JID, error) {
	if c.user == "" {
		return jid.JID{}, stanza.Error{Type: stanza.Auth, Condition: stanza.NotAuthorized}
	}
	if resource == "" {
		resource = rand.Text()[:16]
	}
	j, err := jid.New(c.user, c.srv.domain.Domainpart(), resource)
	if err != nil {
		c.base.Info("xmpp bind failed", "user", c.user, "err", err)
		return jid.JID{}, stanza.Error{Type: stanza.Modify, Condition: stanza.BadRequest}
	}
	// Routable from now on, before the client sees the bind result: a
	// message sent to it right after it bound must not bounce. Until the
	// writer starts, stanzas for it wait in its queue.
	c.jid = j
	c.log = c.base.With("jid", j.String())
	c.mu.Lock()
	c.bound = true
	c.mu.Unlock()
	if !c.srv.bind(c) { // closing down
		c.jid = jid.JID{}
		return jid.JID{}, stanza.Error{Type: stanza.Wait, Condition: stanza.ServiceUnavailable}
	}
	return j, nil
}

// enqueue hands a stanza to the session's writer without blocking. A
// session whose queue is full is not keeping up: it is disconnected.
func (c *session) enqueue(st []xml.Token) bool {
	if c.isDead() {
		return false
	}
	select {
	case c.out <- st:
		return true
	default:
		c.log.Warn("xmpp outbound queue full; disconnecting slow client", "queue", outQueueLen)
		c.kill(nil, "outbound queue overflow")
		return false
	}
}

// writeLoop writes queued stanzas, batching what is already queued into one
// flush. On kill it sends the stream error, if any, and closes the socket.
func (c *session) writeLoop() {
	defer c.srv.wg.Done()
	defer close(c.writerDone)
	defer func() { _ = c.raw.Close() }()
	batch := make([][]xml.Token, 0, 64)
	for {
		select {
		case <-c.dead:
			c.mu.Lock()
			reason := c.reason
			c.mu.Unlock()
			if reason != nil {
				c.flushQueue()
				c.writeStreamError(*reason)
			}
			return
		case st := <-c.out:
			batch = append(batch[:0], st)
		drain:
			for len(batch) < cap(batch) {
				select {
				case st := <-c.out:
					batch = append(batch, st)
				default:
					break drain
				}
			}
			if err := c.writeStanzas(batch); err != nil {
				if !c.isDead() {
					c.log.Warn("xmpp write failed; closing session", "err", err)
				}
				c.kill(nil, "write failed")
				return
			}
		}
	}
}

// flushQueue writes what is still queued, best effort (closing: the
// deadline is already short).
func (c *session) flushQueue() {
	var batch [][]xml.Token
	for {
		select {
		case st := <-c.out:
			batch = append(batch, st)
		default:
			if len(batch) > 0 {
				_ = c.writeStanzas(batch)
			}
			return
		}
	}
}

func (c *session) writeStanzas(batch [][]xml.Token) error {
	w := c.sess.TokenWriter() // takes the session's output lock
	for _, st := range batch {
		for _, tok := range st {
			if err := w.EncodeToken(tok); err != nil {
				_ = w.Close()
				return err
			}
		}
	}
	return w.Close() // flushes, releases the lock
}

// writeStreamError sends reason (unless it is streamEnd) and
// </stream:stream>.
func (c *session) writeStreamError(reason stream.Error) {
	var err error
	if reason.Err != "" {
		w := c.sess.TokenWriter()
		_, err = reason.WriteXML(w)
		if err == nil {
			err = w.Flush()
		}
		_ = w.Close()
	}
	if err == nil {
		err = c.sess.Close() // </stream:stream>
	}
	if err != nil {
		c.base.Debug("xmpp stream error not delivered", "condition", reason.Err, "err", err)
	}
}
