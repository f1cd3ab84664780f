package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // XEP-0114 defines the handshake as SHA-1
	"crypto/tls"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// The bench's own XMPP client, built on mellium directly rather than on
// the sniper's xmppclient: it is the auction house's side (and the echo
// bot), and it sends the plain way an auction house would, one flushed
// <message/> per Send, with no confirmation round trip.

// inMsg is one chat message received, stamped when it was read.
type inMsg struct {
	from jid.JID
	body string
	at   time.Time
}

// xclient is one logged-in XMPP session. Received chat messages go to
// onMsg on the session's read goroutine.
type xclient struct {
	xs   *xmpp.Session
	raw  net.Conn
	self jid.JID
	done chan struct{} // closed when reading ends
	err  atomic.Value  // error: why reading ended
}

// dialXMPP logs in as self (a full JID whose resource is bound exactly)
// over STARTTLS (the test server's certificate is self-signed) and starts
// reading.
func dialXMPP(ctx context.Context, addr string, self jid.JID, password string, onMsg func(inMsg)) (*xclient, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	// Bound by the conn's deadline, not by a ctx given to mellium (which
	// would set a past deadline on the live conn when that ctx ends).
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(30 * time.Second)
	}
	_ = raw.SetDeadline(dl)
	tc := &tls.Config{ServerName: self.Domainpart(), MinVersion: tls.VersionTLS12, InsecureSkipVerify: true} //nolint:gosec // the test server's own certificate
	features := []xmpp.StreamFeature{
		xmpp.StartTLS(tc),
		xmpp.SASL("", password, sasl.ScramSha256, sasl.ScramSha1, sasl.Plain),
		bindExactly(self.Resourcepart()),
	}
	bg := context.Background()
	xs, err := xmpp.NewSession(bg, self.Domain(), self, raw, 0,
		xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
			return xmpp.StreamConfig{Features: features}
		}))
	if err == nil && !xs.LocalAddr().Equal(self) {
		err = fmt.Errorf("server bound %s, want %s", xs.LocalAddr(), self)
	}
	if err == nil {
		err = xs.Send(bg, stanza.Presence{}.Wrap(nil))
	}
	if err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("log in as %s: %w", self, err)
	}
	_ = raw.SetDeadline(time.Time{})
	c := &xclient{xs: xs, raw: raw, self: self, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		err := xs.Serve(xmpp.HandlerFunc(func(t xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			if start.Name.Local != "message" {
				return nil
			}
			var m struct {
				From string `xml:"from,attr"`
				Type string `xml:"type,attr"`
				Body string `xml:"body"`
			}
			at := time.Now()
			if err := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(start.Copy()), t)).Decode(&m); err != nil {
				return err
			}
			if m.Type == string(stanza.ErrorMessage) || m.Body == "" {
				return nil
			}
			from, err := jid.Parse(m.From)
			if err != nil {
				return nil
			}
			onMsg(inMsg{from: from, body: m.Body, at: at})
			return nil
		}))
		if err == nil {
			err = io.EOF
		}
		c.err.Store(err)
	}()
	return c, nil
}

// send writes one chat message and flushes it. The ctx given to mellium
// never ends (see the mellium race in DESIGN.md); a write deadline on the
// conn bounds it instead.
func (c *xclient) send(to jid.JID, body string) error {
	select {
	case <-c.done:
		return fmt.Errorf("%s: session ended: %v", c.self, c.err.Load())
	default:
	}
	return c.xs.Send(context.Background(), stanza.Message{To: to, Type: stanza.ChatMessage}.Wrap(
		xmlstream.Wrap(xmlstream.Token(xml.CharData(body)), xml.StartElement{Name: xml.Name{Local: "body"}}),
	))
}

func (c *xclient) close() {
	_ = c.raw.SetDeadline(time.Now().Add(2 * time.Second))
	_ = c.xs.Close()
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
	}
	_ = c.raw.Close()
	<-c.done
}

// bindExactly binds the given resource (mellium's BindResource lets the
// server pick one; an auction lives at .../Auction).
func bindExactly(resource string) xmpp.StreamFeature {
	const nsBind = "urn:ietf:params:xml:ns:xmpp-bind"
	return xmpp.StreamFeature{
		Name:       xml.Name{Space: nsBind, Local: "bind"},
		Necessary:  xmpp.Authn,
		Prohibited: xmpp.Ready,
		List: func(context.Context, xmlstream.TokenWriter, xml.StartElement) (bool, error) {
			return true, errors.New("bind is client-side only")
		},
		Parse: func(_ context.Context, d *xml.Decoder, _ *xml.StartElement) (bool, any, error) {
			return true, nil, d.Skip()
		},
		Negotiate: func(_ context.Context, session *xmpp.Session, _ any) (xmpp.SessionState, io.ReadWriter, error) {
			id := randomHex(8)
			w := session.TokenWriter()
			req := stanza.IQ{XMLName: xml.Name{Space: stanza.NSClient, Local: "iq"}, ID: id, Type: stanza.SetIQ}.Wrap(xmlstream.Wrap(
				xmlstream.Wrap(xmlstream.Token(xml.CharData(resource)), xml.StartElement{Name: xml.Name{Local: "resource"}}),
				xml.StartElement{Name: xml.Name{Space: nsBind, Local: "bind"}},
			))
			_, err := xmlstream.Copy(w, req)
			if err == nil {
				err = w.Flush()
			}
			w.Close()
			if err != nil {
				return 0, nil, fmt.Errorf("bind request: %w", err)
			}
			r := session.TokenReader()
			defer r.Close()
			d := xml.NewTokenDecoder(r)
			for {
				tok, err := d.Token()
				if err != nil {
					return 0, nil, fmt.Errorf("bind response: %w", err)
				}
				start, ok := tok.(xml.StartElement)
				if !ok {
					continue
				}
				var resp struct {
					ID   string `xml:"id,attr"`
					Type string `xml:"type,attr"`
					JID  string `xml:"urn:ietf:params:xml:ns:xmpp-bind bind>jid"`
				}
				if err := d.DecodeElement(&resp, &start); err != nil {
					return 0, nil, fmt.Errorf("bind response: %w", err)
				}
				if resp.ID != id || resp.Type != string(stanza.ResultIQ) {
					return 0, nil, fmt.Errorf("bind %q refused (type %q)", resource, resp.Type)
				}
				bound, err := jid.Parse(resp.JID)
				if err != nil {
					return 0, nil, fmt.Errorf("bind response: %w", err)
				}
				session.UpdateAddr(bound)
				return xmpp.Ready, nil, nil
			}
		},
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sink is an external component (XEP-0114) on Prosody that takes every
// stanza sent to any address of its domain and drops it. The log-only and
// scale stages point the sniper's --auction-domain at it, so that its JOINs
// and BIDs are delivered somewhere (no bounces, no retries) without one
// XMPP account per auction.
type sink struct {
	conn     net.Conn
	messages atomic.Int64
	done     chan struct{}
}

func dialSink(ctx context.Context, addr, domain, secret string) (*sink, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sink: dial %s: %w", addr, err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fail := func(err error) (*sink, error) {
		conn.Close()
		return nil, fmt.Errorf("sink %s: %w", domain, err)
	}
	if _, err := fmt.Fprintf(conn, "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='%s'>", domain); err != nil {
		return fail(err)
	}
	dec := xml.NewDecoder(bufio.NewReader(conn))
	var streamID string
	for streamID == "" {
		tok, err := dec.Token()
		if err != nil {
			return fail(fmt.Errorf("stream header: %w", err))
		}
		if st, ok := tok.(xml.StartElement); ok {
			for _, a := range st.Attr {
				if a.Name.Local == "id" {
					streamID = a.Value
				}
			}
			if streamID == "" {
				return fail(fmt.Errorf("stream header <%s> has no id", st.Name.Local))
			}
		}
	}
	sum := sha1.Sum([]byte(streamID + secret)) //nolint:gosec // XEP-0114
	if _, err := fmt.Fprintf(conn, "<handshake>%s</handshake>", hex.EncodeToString(sum[:])); err != nil {
		return fail(err)
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return fail(fmt.Errorf("handshake: %w", err))
		}
		if st, ok := tok.(xml.StartElement); ok {
			if st.Name.Local != "handshake" {
				return fail(fmt.Errorf("handshake refused: <%s>", st.Name.Local))
			}
			if err := dec.Skip(); err != nil {
				return fail(err)
			}
			break
		}
	}
	_ = conn.SetDeadline(time.Time{})
	s := &sink{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		depth := 0
		for {
			tok, err := dec.RawToken()
			if err != nil {
				return
			}
			switch t := tok.(type) {
			case xml.StartElement:
				if depth == 0 && t.Name.Local == "message" {
					s.messages.Add(1)
				}
				depth++
			case xml.EndElement:
				depth--
			}
		}
	}()
	return s, nil
}

func (s *sink) close() {
	_, _ = io.WriteString(s.conn, "</stream:stream>")
	_ = s.conn.Close()
	<-s.done
}
