package xmppclient

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"
)

const (
	nsBind = "urn:ietf:params:xml:ns:xmpp-bind"
	nsPing = "urn:xmpp:ping"
)

// A Send's message and ping carry ids made of one random key and these
// prefixes, so that an answer to either finds the Send (see pendingSend).
const (
	msgIDPrefix  = "m"
	pingIDPrefix = "p"
)

// closeTimeout bounds how long Close waits for the server to end its
// side of the stream before dropping the connection.
const closeTimeout = 2 * time.Second

// readAhead is how many received messages may wait for the handler while
// the session goes on reading. Reading must not stop for a busy handler
// while a Send waits for the server's answer to its ping (a handler that
// itself calls Send would otherwise wait for an answer only it could
// read); past readAhead waiting messages it does stop, which is the
// handler's backpressure.
const readAhead = 256

// Session is one negotiated client session. Incoming chat messages go to
// the handler given to Dial, one at a time and in order, on the session's
// own delivery goroutine. Reading goes on while the handler runs, up to
// readAhead waiting messages; beyond that a handler that blocks holds up
// reading (which is how a caller applies backpressure). Messages already
// read when the session ends are still handed over, and Close waits for
// that, so the handler must not call Close (Send is fine).
type Session struct {
	xs             *xmpp.Session
	raw            net.Conn // the TCP conn we dialled (a quickAckConn): deadlines go here
	local          jid.JID
	server         jid.JID // our domain: pings go here and answer from here
	handler        func(from jid.JID, body string)
	log            *slog.Logger
	writeTimeout   time.Duration
	confirmTimeout time.Duration

	// sendSem serialises Sends' writes so that the write deadline one of
	// them sets is not moved by another; a channel so that waiting honours
	// ctx. It is not held while a Send waits for its confirmation.
	sendSem chan struct{}

	// pending maps the key of each Send waiting for its ping's answer
	// (the random part of its message's and ping's ids) to its state.
	pendMu  sync.Mutex
	pending map[string]*pendingSend

	inbox chan inMessage // read, waiting for the handler; closed when reading ends

	closeOnce sync.Once
	closing   chan struct{} // closed when Close starts
	readDone  chan struct{} // closed when reading has ended (err is set)
	done      chan struct{} // closed when reading and handler calls have ended

	mu  sync.Mutex
	err error
}

// Dial connects, negotiates TLS per cfg.TLS, authenticates (SCRAM-SHA-256,
// SCRAM-SHA-1, then PLAIN, as offered), binds exactly cfg.JID's resource,
// sends initial presence and starts reading. handler receives every chat
// or normal message with a non-empty body; it may be nil.
//
// Errors wrap ErrAuth or ErrTLS when retrying cannot help.
func Dial(ctx context.Context, cfg Config, handler func(from jid.JID, body string)) (*Session, error) {
	local, err := jid.Parse(cfg.JID)
	if err != nil {
		return nil, fmt.Errorf("xmppclient: parse JID %q: %w", cfg.JID, err)
	}
	if local.Localpart() == "" || local.Resourcepart() == "" {
		return nil, fmt.Errorf("xmppclient: JID %q must be a full JID user@domain/resource", cfg.JID)
	}
	mode := cfg.tlsMode()
	if _, err := ParseTLSMode(string(mode)); err != nil {
		return nil, fmt.Errorf("xmppclient: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(cfg.DialTimeout, DefaultDialTimeout))
	defer cancel()

	var d net.Dialer
	tcp, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("xmppclient: dial %s: %w", cfg.Addr, err)
	}
	// ACK every read at once: a delayed ACK of a ping's answer would make
	// a Nagle-on server (Prosody's default) hold its next stanza to us.
	raw := withQuickAck(tcp)
	// The time limit lives on the conn, not in the ctx given to mellium:
	// mellium answers a ctx that ends by setting the conn's deadline in
	// the past from a goroutine that can run after negotiation returned,
	// killing the live session's first read. So mellium gets a ctx that
	// never ends, and the caller's ctx is watched here instead.
	dl, _ := ctx.Deadline()
	_ = raw.SetDeadline(dl)
	stopWatch := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	nctx := context.WithoutCancel(ctx)

	var state xmpp.SessionState
	features := make([]xmpp.StreamFeature, 0, 3)
	switch mode {
	case TLSOff:
		// mellium only offers SASL on a Secure stream; plaintext was
		// asked for explicitly, so declare it acceptable.
		state = xmpp.Secure
	case TLSRequire, TLSSkipVerify:
		tc := &tls.Config{
			ServerName: local.Domainpart(),
			MinVersion: tls.VersionTLS12,
			RootCAs:    cfg.RootCAs,
			// Test and demo servers have self-signed certificates.
			InsecureSkipVerify: mode == TLSSkipVerify, //nolint:gosec // opt-in mode
		}
		features = append(features, startTLS(tc))
	}
	features = append(features,
		saslAuth(cfg.Password, mode != TLSOff),
		bindExactly(local.Resourcepart()),
	)

	xs, err := xmpp.NewSession(nctx, local.Domain(), local, raw, state,
		xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
			return xmpp.StreamConfig{Features: features}
		}))
	if err == nil && mode != TLSOff && !xs.ConnectionState().HandshakeComplete {
		// Never a plaintext session when TLS was asked for, whatever path
		// negotiation took.
		err = fmt.Errorf("%w: stream is not encrypted", ErrTLS)
	}
	if err == nil {
		if got := xs.LocalAddr(); !got.Equal(local) {
			err = fmt.Errorf("server bound %s, want %s", got, local)
		}
	}
	if err == nil {
		// Initial presence makes us available: the server then routes
		// messages for the bare JID to this resource.
		if perr := xs.Send(nctx, stanza.Presence{}.Wrap(nil)); perr != nil {
			err = fmt.Errorf("initial presence: %w", perr)
		}
	}
	if !stopWatch() && ctx.Err() != nil {
		// The watcher fired: the conn's deadline is in the past.
		err = errors.Join(ctx.Err(), err)
	}
	if err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("xmppclient: connect to %s as %s: %w", cfg.Addr, local, err)
	}
	_ = raw.SetDeadline(time.Time{})

	s := &Session{
		xs:             xs,
		raw:            raw,
		local:          local,
		server:         local.Domain(),
		handler:        handler,
		log:            cfg.logger().With("jid", local.String()),
		writeTimeout:   orDefault(cfg.WriteTimeout, DefaultWriteTimeout),
		confirmTimeout: orDefault(cfg.ConfirmTimeout, DefaultConfirmTimeout),
		sendSem:        make(chan struct{}, 1),
		pending:        make(map[string]*pendingSend),
		inbox:          make(chan inMessage, readAhead),
		closing:        make(chan struct{}),
		readDone:       make(chan struct{}),
		done:           make(chan struct{}),
	}
	go s.serve()
	return s, nil
}

// LocalJID is the full JID the session is bound to.
func (s *Session) LocalJID() jid.JID { return s.local }

// Done is closed when the session has ended, by Close or because the
// connection died; Err then says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is nil while the session is alive, then the reason it ended
// (wrapping ErrClosed after Close).
func (s *Session) Err() error {
	select {
	case <-s.done:
	default:
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// setErr keeps the first reason: later ones are consequences.
func (s *Session) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// Send sends body to `to` as a chat message and returns once the server
// has processed it: right behind the message, in the same write, goes an
// XEP-0199 ping to the server, and Send waits for the answer. A server
// handles a stream's stanzas in order, so any answer to the ping (a
// result, or an error from a server without ping support) proves that the
// message was taken in, routed or bounced, and no longer depends on this
// connection; a message merely written could still die in the socket
// buffers if the process were killed.
//
// A message the server could not deliver (the recipient is offline and
// the server stores nothing offline, say) comes back as an error message
// with the message's id. The server sends that bounce while processing the
// message, so before it answers the ping: Send then fails with an error
// wrapping ErrUndelivered, which says the message is certainly not
// delivered and leaves the session as it was. A bounce the server sent
// only after answering the ping (a server that routes asynchronously; not
// Prosody, not xmppserver) comes too late and is only logged.
//
// ctx bounds the wait for other Sends' writes and for the confirmation;
// the write itself is bounded by Config.WriteTimeout and the confirmation
// by Config.ConfirmTimeout. A failed write or a missing confirmation ends
// the session, and the error wraps ErrClosed. After any other error than
// ErrUndelivered the message may or may not have been delivered.
func (s *Session) Send(ctx context.Context, to jid.JID, body string) error {
	fail := func(err error) error { return fmt.Errorf("xmppclient: send to %s: %w", to, err) }
	select {
	case s.sendSem <- struct{}{}:
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-s.closing:
		return fail(ErrClosed)
	case <-s.readDone:
		return fail(ErrClosed)
	}
	select {
	case <-s.closing:
		<-s.sendSem
		return fail(ErrClosed)
	case <-s.readDone:
		<-s.sendSem
		return fail(ErrClosed)
	default:
	}

	id, err := randomID()
	if err != nil {
		<-s.sendSem
		return fail(err)
	}
	// Registered before the write: the answer can beat the write's return.
	p := &pendingSend{to: to, answered: make(chan struct{})}
	confirmed := p.answered
	s.pendMu.Lock()
	s.pending[id] = p
	s.pendMu.Unlock()

	msg := stanza.Message{ID: msgIDPrefix + id, To: to, Type: stanza.ChatMessage}.Wrap(
		xmlstream.Wrap(xmlstream.Token(xml.CharData(body)), xml.StartElement{Name: xml.Name{Local: "body"}}),
	)
	ping := stanza.IQ{ID: pingIDPrefix + id, To: s.server, Type: stanza.GetIQ}.Wrap(
		xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Space: nsPing, Local: "ping"}}),
	)
	err = s.write(msg, ping)
	<-s.sendSem
	if err != nil {
		s.forget(id)
		s.abort(fail(err)) // the stream may hold half a stanza
		return fail(fmt.Errorf("%w: %w", ErrClosed, err))
	}

	// The reader set p.bounce, if at all, before it closed confirmed.
	answered := func() error {
		if p.bounce != nil {
			return fail(p.bounce)
		}
		return nil
	}
	timer := time.NewTimer(s.confirmTimeout)
	defer timer.Stop()
	select {
	case <-confirmed:
		return answered()
	case <-s.readDone:
	case <-timer.C:
	case <-ctx.Done():
	}
	// An answer that arrived meanwhile still counts.
	select {
	case <-confirmed:
		return answered()
	default:
	}
	s.forget(id)
	select {
	case <-s.readDone:
		return fail(fmt.Errorf("%w before the server confirmed the message: %w", ErrClosed, s.readErr()))
	default:
	}
	if ctx.Err() != nil {
		return fail(fmt.Errorf("waiting for the server to confirm the message: %w", ctx.Err()))
	}
	cause := fmt.Errorf("xmppclient: server did not answer a ping within %s", s.confirmTimeout)
	s.abort(cause)
	return fail(fmt.Errorf("%w: %w", ErrClosed, cause))
}

// write writes the stanzas and flushes them, all at once, within
// WriteTimeout. The caller holds sendSem. No ctx goes to mellium: it sets
// the conn's write deadline in the past when a write's ctx ends, which can
// kill a concurrent write; the deadline bounds the time instead.
func (s *Session) write(stanzas ...xml.TokenReader) error {
	_ = s.raw.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	defer func() { _ = s.raw.SetWriteDeadline(time.Time{}) }()
	w := s.xs.TokenWriter() // takes mellium's output lock until Close
	var err error
	for _, st := range stanzas {
		if _, err = xmlstream.Copy(w, st); err != nil {
			break
		}
	}
	if cerr := w.Close(); err == nil { // flushes, releases the lock
		err = cerr
	}
	return err
}

// pendingSend is a Send waiting for the answer to its ping. The reader
// sets bounce when the message comes back as undeliverable, then closes
// answered when the ping's answer arrives, which (stanzas being processed
// in order) comes after any bounce.
type pendingSend struct {
	to       jid.JID
	answered chan struct{}
	bounce   error // wraps ErrUndelivered; written only by the reader
}

// forget drops a ping that will not be waited for.
func (s *Session) forget(id string) {
	s.pendMu.Lock()
	delete(s.pending, id)
	s.pendMu.Unlock()
}

// abort ends a session that can no longer be trusted, at once: no
// polite close on a stream that may hold half a stanza or a server that
// does not answer. Closing the conn ends serve, which closes done.
func (s *Session) abort(err error) {
	s.setErr(err)
	_ = s.raw.Close()
}

// readErr is why reading ended; call it only after readDone is closed.
func (s *Session) readErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the stream, waits for the server to end its side (briefly),
// meanwhile still taking in its answers to pings in flight, then for the
// handler to have been given every message read. It is safe to call more
// than once and concurrently.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.setErr(ErrClosed)
		_ = s.raw.SetDeadline(time.Now().Add(closeTimeout))
		if err := s.xs.Close(); err != nil {
			s.log.Debug("xmpp close stream", "err", err)
		}
		t := time.NewTimer(closeTimeout)
		defer t.Stop()
		select {
		case <-s.readDone:
		case <-t.C:
		}
		_ = s.raw.Close()
	})
	<-s.done
	return nil
}

func (s *Session) serve() {
	delivered := make(chan struct{})
	go s.deliver(delivered)
	err := s.xs.Serve(xmpp.HandlerFunc(s.handle))
	if err == nil {
		err = errors.New("stream closed by server")
	}
	s.setErr(fmt.Errorf("xmppclient: %w", err))
	_ = s.raw.Close()
	close(s.readDone)
	close(s.inbox) // only this goroutine sends on it
	<-delivered
	close(s.done)
}

// deliver calls the handler for each message read, in order, until the
// inbox is closed and empty.
func (s *Session) deliver(delivered chan<- struct{}) {
	defer close(delivered)
	for m := range s.inbox {
		s.handler(m.from, m.body)
	}
}

type inMessage struct {
	from jid.JID
	body string
}

type wireMessage struct {
	XMLName xml.Name
	ID      string     `xml:"id,attr"`
	From    string     `xml:"from,attr"`
	Type    string     `xml:"type,attr"`
	Body    string     `xml:"body"`
	Error   *wireError `xml:"error"`
}

// wireError is a stanza error (RFC 6120 8.3), read leniently: mellium's
// stanza.Error fails on a malformed 'by', and a bad bounce must not end
// the session.
type wireError struct {
	Type  string `xml:"type,attr"`
	Conds []struct {
		XMLName xml.Name
	} `xml:",any"`
	Text string `xml:"urn:ietf:params:xml:ns:xmpp-stanzas text"`
}

// describe is the error's condition, with its type and text if any, e.g.
// "service-unavailable (cancel)".
func (e *wireError) describe() string {
	if e == nil {
		return "no error given"
	}
	cond := "no condition given"
	for _, c := range e.Conds {
		if c.XMLName.Space == stanza.NSError && c.XMLName.Local != "text" {
			cond = c.XMLName.Local
			break
		}
	}
	if e.Type != "" {
		cond += " (" + e.Type + ")"
	}
	if t := strings.TrimSpace(e.Text); t != "" {
		cond += ": " + t
	}
	return cond
}

func (s *Session) handle(t xmlstream.TokenReadEncoder, start *xml.StartElement) error {
	switch start.Name.Local {
	case "message":
	case "iq":
		s.handleIQ(start)
		return nil
	default:
		return nil
	}
	var msg wireMessage
	d := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(start.Copy()), t))
	if err := d.Decode(&msg); err != nil {
		// The stream is XML we cannot read: nothing after it can be trusted.
		return fmt.Errorf("decode message: %w", err)
	}
	switch stanza.MessageType(msg.Type) {
	case stanza.ChatMessage, stanza.NormalMessage, "":
	case stanza.ErrorMessage:
		// Never a chat message for the handler, whatever it carries.
		s.handleBounce(&msg)
		return nil
	default:
		return nil
	}
	if msg.Body == "" || s.handler == nil {
		return nil
	}
	var from jid.JID
	if msg.From == "" {
		// mellium blanks a from equal to our own bare JID; no from at all
		// also means our own account (RFC 6120 8.1.2.1).
		from = s.local.Bare()
	} else {
		var err error
		if from, err = jid.Parse(msg.From); err != nil {
			s.log.Warn("xmpp message with bad from dropped", "from", msg.From, "err", err)
			return nil
		}
	}
	s.inbox <- inMessage{from: from, body: msg.Body}
	return nil
}

// handleBounce marks the Send whose message came back as an error message
// as undelivered; its ping's answer, which follows, then fails it. An
// error message that matches no waiting Send (its Send gave up already,
// or it is not about one of ours) is only logged.
func (s *Session) handleBounce(msg *wireMessage) {
	why := msg.Error.describe()
	log := s.log.With("from", msg.From, "id", msg.ID, "error", why)
	key, ok := strings.CutPrefix(msg.ID, msgIDPrefix)
	if !ok || key == "" {
		log.Debug("xmpp error message ignored: not about a message sent here")
		return
	}
	s.pendMu.Lock()
	defer s.pendMu.Unlock()
	p, ok := s.pending[key]
	if !ok {
		log.Debug("xmpp bounce for a message no Send waits for ignored")
		return
	}
	// The bounce comes from the recipient's address (as addressed or
	// bare), its domain or our server; mellium blanks a from equal to our
	// own bare JID, and none at all means our account too (RFC 6120
	// 8.1.2.1). Anyone else has no business failing our send.
	from := s.local.Bare()
	if msg.From != "" {
		f, err := jid.Parse(msg.From)
		if err != nil || !(f.Bare().Equal(p.to.Bare()) || f.Equal(p.to.Domain()) || f.Equal(s.server)) {
			log.Warn("xmpp bounce from an unexpected address ignored", "to", p.to.String())
			return
		}
		from = f
	}
	if p.bounce != nil {
		return // the first one says it
	}
	if from.Equal(p.to) {
		p.bounce = fmt.Errorf("%w: bounced: %s", ErrUndelivered, why)
	} else {
		p.bounce = fmt.Errorf("%w: bounced by %s: %s", ErrUndelivered, from, why)
	}
	log.Debug("xmpp message bounced", "to", p.to.String())
}

// handleIQ confirms the Send whose ping this answers. mellium itself
// answers IQ requests (get, set) with service-unavailable.
func (s *Session) handleIQ(start *xml.StartElement) {
	var id, typ, from string
	for _, a := range start.Attr {
		if a.Name.Space != "" {
			continue
		}
		switch a.Name.Local {
		case "id":
			id = a.Value
		case "type":
			typ = a.Value
		case "from":
			from = a.Value
		}
	}
	if typ != string(stanza.ResultIQ) && typ != string(stanza.ErrorIQ) {
		return
	}
	key, ok := strings.CutPrefix(id, pingIDPrefix)
	if !ok {
		return
	}
	s.pendMu.Lock()
	p, ok := s.pending[key]
	s.pendMu.Unlock()
	if !ok {
		return
	}
	// The answer must come from the server the ping went to (mellium blanks
	// a from equal to our bare JID; none at all also means the server).
	if from != "" {
		if f, err := jid.Parse(from); err != nil || !f.Equal(s.server) {
			s.log.Warn("xmpp ping answer from the wrong address ignored", "from", from, "id", id)
			return
		}
	}
	s.forget(key)
	if typ == string(stanza.ErrorIQ) {
		// Still proof that everything before the ping was processed.
		s.log.Debug("xmpp server answered ping with an error", "id", id)
	}
	close(p.answered)
}

// startTLS is mellium's STARTTLS, plus an explicit handshake so that any
// TLS failure surfaces here, marked ErrTLS, rather than as a read error
// somewhere later in negotiation.
func startTLS(cfg *tls.Config) xmpp.StreamFeature {
	f := xmpp.StartTLS(cfg)
	// mellium negotiates a feature the server marks optional and, if
	// that fails, carries on with the next one, dropping the error: a
	// refused certificate then ends in a plaintext session. TLS was asked
	// for, so it is required whatever the server says.
	parse := f.Parse
	f.Parse = func(ctx context.Context, d *xml.Decoder, start *xml.StartElement) (bool, any, error) {
		_, data, err := parse(ctx, d, start)
		return true, data, err
	}
	negotiate := f.Negotiate
	f.Negotiate = func(ctx context.Context, session *xmpp.Session, data any) (xmpp.SessionState, io.ReadWriter, error) {
		mask, rw, err := negotiate(ctx, session, data)
		if err != nil {
			return mask, rw, classify(ErrTLS, "starttls", err)
		}
		tc, ok := rw.(*tls.Conn)
		if !ok {
			return mask, rw, fmt.Errorf("%w: starttls returned %T", ErrTLS, rw)
		}
		if err := tc.HandshakeContext(ctx); err != nil {
			return 0, nil, classify(ErrTLS, "tls handshake", err)
		}
		return mask, rw, nil
	}
	return f
}

// saslAuth prefers SCRAM, which never sends the password; PLAIN is the
// fallback, and is only reached over TLS or with TLS explicitly off.
func saslAuth(password string, requireTLS bool) xmpp.StreamFeature {
	f := xmpp.SASL("", password, sasl.ScramSha256, sasl.ScramSha1, sasl.Plain)
	negotiate := f.Negotiate
	f.Negotiate = func(ctx context.Context, session *xmpp.Session, data any) (xmpp.SessionState, io.ReadWriter, error) {
		if requireTLS && !session.ConnectionState().HandshakeComplete {
			// Belt and braces against mellium carrying on after a failed
			// STARTTLS (see startTLS): no credentials in the clear.
			return 0, nil, fmt.Errorf("%w: refusing to authenticate on an unencrypted stream", ErrTLS)
		}
		mask, rw, err := negotiate(ctx, session, data)
		if err != nil {
			return mask, rw, classify(ErrAuth, "sasl", err)
		}
		return mask, rw, nil
	}
	return f
}

// classify marks err as the fatal kind unless it is plainly the network
// or the clock, which a redial may cure.
func classify(kind error, step string, err error) error {
	if transient(err) {
		return fmt.Errorf("%s: %w", step, err)
	}
	return fmt.Errorf("%w: %s: %w", kind, step, err)
}

func transient(err error) bool {
	var (
		se      stream.Error
		opErr   *net.OpError
		certErr *tls.CertificateVerificationError
		uaErr   x509.UnknownAuthorityError
		hErr    x509.HostnameError
		ciErr   x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &certErr), errors.As(err, &uaErr), errors.As(err, &hErr), errors.As(err, &ciErr):
		return false
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// A TLS alert from the server: it rejected us, not the network.
		return false
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNREFUSED):
		return true
	case errors.As(err, &se):
		// The server ended the stream (shutting down, say) mid-negotiation.
		return true
	case errors.As(err, &opErr):
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// bindExactly binds the given resource. mellium's BindResource puts the
// (empty) JID where the resource belongs, so the server picks a random
// one; the sniper's address must be stable, so this sends the request
// itself.
func bindExactly(resource string) xmpp.StreamFeature {
	return xmpp.StreamFeature{
		Name:       xml.Name{Space: nsBind, Local: "bind"},
		Necessary:  xmpp.Authn,
		Prohibited: xmpp.Ready,
		List: func(context.Context, xmlstream.TokenWriter, xml.StartElement) (bool, error) {
			return true, errors.New("xmppclient: bind is client-side only")
		},
		Parse: func(_ context.Context, d *xml.Decoder, _ *xml.StartElement) (bool, any, error) {
			return true, nil, d.Skip()
		},
		Negotiate: func(ctx context.Context, session *xmpp.Session, _ any) (xmpp.SessionState, io.ReadWriter, error) {
			id, err := randomID()
			if err != nil {
				return 0, nil, err
			}
			w := session.TokenWriter()
			defer w.Close()
			req := stanza.IQ{
				XMLName: xml.Name{Space: stanza.NSClient, Local: "iq"},
				ID:      id,
				Type:    stanza.SetIQ,
			}.Wrap(xmlstream.Wrap(
				xmlstream.Wrap(xmlstream.Token(xml.CharData(resource)), xml.StartElement{Name: xml.Name{Local: "resource"}}),
				xml.StartElement{Name: xml.Name{Space: nsBind, Local: "bind"}},
			))
			if _, err := xmlstream.Copy(w, req); err != nil {
				return 0, nil, fmt.Errorf("bind request: %w", err)
			}
			if err := w.Flush(); err != nil {
				return 0, nil, fmt.Errorf("bind request: %w", err)
			}

			r := session.TokenReader()
			defer r.Close()
			d := xml.NewTokenDecoder(r)
			var start xml.StartElement
			for {
				tok, err := d.Token()
				if err != nil {
					return 0, nil, fmt.Errorf("bind response: %w", err)
				}
				if st, ok := tok.(xml.StartElement); ok {
					start = st
					break
				}
			}
			var resp struct {
				ID   string `xml:"id,attr"`
				Type string `xml:"type,attr"`
				JID  string `xml:"urn:ietf:params:xml:ns:xmpp-bind bind>jid"`
				Err  *struct {
					Inner []byte `xml:",innerxml"`
				} `xml:"error"`
			}
			if start.Name.Local != "iq" {
				return 0, nil, fmt.Errorf("bind response: got <%s>, want <iq>", start.Name.Local)
			}
			if err := d.DecodeElement(&resp, &start); err != nil {
				return 0, nil, fmt.Errorf("bind response: %w", err)
			}
			switch {
			case resp.ID != id:
				return 0, nil, fmt.Errorf("bind response: id %q, want %q", resp.ID, id)
			case resp.Type == string(stanza.ErrorIQ):
				detail := ""
				if resp.Err != nil {
					detail = string(resp.Err.Inner)
				}
				return 0, nil, fmt.Errorf("bind %q refused: %s", resource, detail)
			case resp.Type != string(stanza.ResultIQ):
				return 0, nil, fmt.Errorf("bind response: type %q", resp.Type)
			}
			bound, err := jid.Parse(resp.JID)
			if err != nil {
				return 0, nil, fmt.Errorf("bind response: jid %q: %w", resp.JID, err)
			}
			if bound.Resourcepart() != resource {
				return 0, nil, fmt.Errorf("server bound resource %q, want %q", bound.Resourcepart(), resource)
			}
			session.UpdateAddr(bound)
			return xmpp.Ready, nil, nil
		},
	}
}

func randomID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return hex.EncodeToString(b), nil
}
