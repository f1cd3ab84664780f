package xmppserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"sniper/testkit"
)

// A tiny XMPP client written directly with mellium, independent of the
// sniper's xmppclient package.

type wireMsg struct {
	XMLName xml.Name `xml:"jabber:client message"`
	From    string   `xml:"from,attr"`
	To      string   `xml:"to,attr"`
	Type    string   `xml:"type,attr"`
	ID      string   `xml:"id,attr"`
	Body    string   `xml:"body"`
	Ext     *struct {
		Value string `xml:"value,attr"`
	} `xml:"urn:example:ext ext"`
	Error *struct {
		Type string `xml:"type,attr"`
		Cond struct {
			XMLName xml.Name
		} `xml:",any"`
	} `xml:"error"`
}

func (m wireMsg) errCond() string {
	if m.Error == nil {
		return ""
	}
	return m.Error.Cond.XMLName.Local
}

type testClient struct {
	t     testing.TB
	conn  net.Conn
	sess  *xmpp.Session
	jid   jid.JID
	in    chan wireMsg
	drops atomic.Int64
	echo  bool // answer chat messages with the same body

	served    chan struct{} // closed when Serve has returned
	serveErr  error         // Serve's result, valid once served is closed
	closeOnce sync.Once
}

type clientOpts struct {
	tls  *tls.Config // STARTTLS with this config
	echo bool
	// noServe leaves the session unread (a slow client).
	noServe bool
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("XMPPSERVER_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// logRecorder is a slog handler that keeps every record's message and
// attributes as text, for tests that check what the server logged.
type logRecorder struct {
	mu    *sync.Mutex
	lines *[]string
	attrs []slog.Attr
	next  slog.Handler
}

func newLogRecorder(t testing.TB) (*slog.Logger, func() []string) {
	r := logRecorder{mu: new(sync.Mutex), lines: new([]string), next: testLogger(t).Handler()}
	return slog.New(r), func() []string {
		r.mu.Lock()
		defer r.mu.Unlock()
		return slices.Clone(*r.lines)
	}
}

func (r logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r logRecorder) Handle(ctx context.Context, rec slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
	for _, a := range r.attrs {
		fmt.Fprintf(&b, " %s", a)
	}
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s", a)
		return true
	})
	r.mu.Lock()
	*r.lines = append(*r.lines, b.String())
	r.mu.Unlock()
	if r.next.Enabled(ctx, rec.Level) {
		return r.next.Handle(ctx, rec)
	}
	return nil
}

func (r logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	r.attrs = append(slices.Clone(r.attrs), as...)
	r.next = r.next.WithAttrs(as)
	return r
}

func (r logRecorder) WithGroup(name string) slog.Handler {
	r.next = r.next.WithGroup(name)
	return r // groups flattened: good enough for tests
}

func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	srv, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		// Runs after the clients' cleanups (LIFO).
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		waitNoServerGoroutines(t)
	})
	return srv
}

// dial logs in as user@domain with the given resource ("" = let the server
// pick one).
func dial(t testing.TB, srv *Server, user, password, resource string, o clientOpts) (*testClient, error) {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		return nil, err
	}
	origin, err := jid.New(user, srv.Domain(), resource)
	if err != nil {
		conn.Close()
		return nil, err
	}
	var features []xmpp.StreamFeature
	state := xmpp.Secure
	if o.tls != nil {
		features = append(features, xmpp.StartTLS(o.tls))
		state = 0
	}
	features = append(features, xmpp.SASL("", password, sasl.Plain), bindExact(resource))
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	sess, err := xmpp.NewSession(context.Background(), origin.Domain(), origin, conn, state,
		xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
			return xmpp.StreamConfig{Features: features}
		}))
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	c := &testClient{
		t:      t,
		conn:   conn,
		sess:   sess,
		jid:    sess.LocalAddr(),
		in:     make(chan wireMsg, 8192),
		served: make(chan struct{}),
		echo:   o.echo,
	}
	if o.noServe {
		close(c.served)
	} else {
		go func() {
			c.serveErr = sess.Serve(xmpp.HandlerFunc(c.handle))
			close(c.served)
		}()
	}
	t.Cleanup(c.close)
	return c, nil
}

func mustDial(t testing.TB, srv *Server, user, password, resource string, o clientOpts) *testClient {
	t.Helper()
	c, err := dial(t, srv, user, password, resource, o)
	if err != nil {
		t.Fatalf("dial %s/%s: %v", user, resource, err)
	}
	return c
}

// close ends the stream and waits (bounded) for the server's end.
func (c *testClient) close() {
	c.closeOnce.Do(func() {
		_ = c.conn.SetDeadline(time.Now().Add(5 * time.Second))
		_ = c.sess.Close()
		select {
		case <-c.served:
		case <-time.After(5 * time.Second):
			c.t.Errorf("%s: Serve did not return after close", c.jid)
		}
		_ = c.conn.Close()
	})
}

func (c *testClient) handle(t xmlstream.TokenReadEncoder, start *xml.StartElement) error {
	if start.Name.Local != "message" {
		return nil
	}
	var m wireMsg
	d := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(start.Copy()), t))
	if err := d.Decode(&m); err != nil {
		return err
	}
	if c.echo && m.Type == "chat" {
		to, err := jid.Parse(m.From)
		if err != nil {
			return err
		}
		// Through the handler's encoder: Serve flushes it afterwards.
		_, err = xmlstream.Copy(t, chatMsg(to, m.Body, m.ID))
		return err
	}
	select {
	case c.in <- m:
	default:
		c.drops.Add(1)
	}
	return nil
}

func chatMsg(to jid.JID, body, id string) xml.TokenReader {
	return stanza.Message{To: to, Type: stanza.ChatMessage, ID: id}.Wrap(
		xmlstream.Wrap(xmlstream.Token(xml.CharData(body)), xml.StartElement{Name: xml.Name{Local: "body"}}))
}

// send sends a chat message (Send flushes). The context lives as long as
// the session (see DESIGN: a per-send context can kill concurrent writes).
func (c *testClient) send(to jid.JID, body string) {
	c.t.Helper()
	if err := c.sess.Send(context.Background(), chatMsg(to, body, "")); err != nil {
		c.t.Fatalf("%s: send to %s: %v", c.jid, to, err)
	}
}

// sendRaw sends a stanza built by the caller.
func (c *testClient) sendRaw(r xml.TokenReader) {
	c.t.Helper()
	if err := c.sess.Send(context.Background(), r); err != nil {
		c.t.Fatalf("%s: send: %v", c.jid, err)
	}
}

// recv waits for the next message (bounded, so a bug fails instead of
// hanging the test binary).
func (c *testClient) recv() wireMsg {
	c.t.Helper()
	select {
	case m := <-c.in:
		return m
	case <-c.served:
		c.t.Fatalf("%s: session ended while waiting for a message: %v", c.jid, c.serveErr)
	case <-time.After(10 * time.Second):
		c.t.Fatalf("%s: no message within 10s", c.jid)
	}
	return wireMsg{}
}

// ended waits for the session's Serve to return and gives its error.
func (c *testClient) ended() error {
	c.t.Helper()
	select {
	case <-c.served:
		return c.serveErr
	case <-time.After(10 * time.Second):
		c.t.Fatalf("%s: session still alive after 10s", c.jid)
	}
	return nil
}

// bindExact is a client bind feature that requests the given resource:
// mellium's client BindResource sends an empty <resource/> (it marshals the
// JID where the resource belongs), so the server would pick a random one.
func bindExact(resource string) xmpp.StreamFeature {
	f := xmpp.BindResource()
	f.Negotiate = func(ctx context.Context, s *xmpp.Session, _ any) (xmpp.SessionState, io.ReadWriter, error) {
		w := s.TokenWriter()
		defer w.Close()
		id := rand.Text()
		var payload xml.TokenReader
		if resource != "" {
			payload = xmlstream.Wrap(xmlstream.Token(xml.CharData(resource)), xml.StartElement{Name: xml.Name{Local: "resource"}})
		}
		req := stanza.IQ{ID: id, Type: stanza.SetIQ}.Wrap(
			xmlstream.Wrap(payload, xml.StartElement{Name: xml.Name{Space: "urn:ietf:params:xml:ns:xmpp-bind", Local: "bind"}}))
		if _, err := xmlstream.Copy(w, req); err != nil {
			return 0, nil, err
		}
		if err := w.Flush(); err != nil {
			return 0, nil, err
		}
		r := s.TokenReader()
		defer r.Close()
		d := xml.NewTokenDecoder(r)
		for {
			tok, err := d.Token()
			if err != nil {
				return 0, nil, err
			}
			start, ok := tok.(xml.StartElement)
			if !ok {
				continue
			}
			var resp struct {
				ID   string `xml:"id,attr"`
				Type string `xml:"type,attr"`
				Bind struct {
					JID string `xml:"jid"`
				} `xml:"urn:ietf:params:xml:ns:xmpp-bind bind"`
			}
			if err := d.DecodeElement(&resp, &start); err != nil {
				return 0, nil, err
			}
			if resp.ID != id || resp.Type != "result" {
				return 0, nil, fmt.Errorf("bind failed: id=%q type=%q", resp.ID, resp.Type)
			}
			j, err := jid.Parse(resp.Bind.JID)
			if err != nil {
				return 0, nil, err
			}
			s.UpdateAddr(j)
			return xmpp.Ready, nil, nil
		}
	}
	return f
}

// selfSigned returns a server TLS config for "localhost" and a client
// config trusting it.
func selfSigned(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}
	client = &tls.Config{ServerName: "localhost", RootCAs: pool, MinVersion: tls.VersionTLS12}
	return server, client
}

// serverGoroutines lists live goroutines running the server's code (test
// helpers excluded).
func serverGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "xmppserver.(*Server).") || strings.Contains(g, "xmppserver.(*session).") {
			out = append(out, g)
		}
	}
	return out
}

// waitNoServerGoroutines fails the test if server goroutines outlive the
// deadline. Close has already waited for them all (WaitGroup); this only
// allows for a goroutine that has called Done but not yet returned.
func waitNoServerGoroutines(t testing.TB) {
	t.Helper()
	var left string
	testkit.Eventually(t, 2*time.Second, func() bool {
		g := serverGoroutines()
		left = strings.Join(g, "\n\n")
		return len(g) == 0
	}, "server goroutines still running:\n%s", &left)
}

var errTimeout = errors.New("timeout")

// readUntilClosed drains conn until the server closes it; errTimeout if it
// stays open for d.
func readUntilClosed(conn net.Conn, d time.Duration) ([]byte, error) {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	var all []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := conn.Read(buf)
		if len(all) < 1<<16 {
			all = append(all, buf[:n]...)
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return all, errTimeout
			}
			return all, nil
		}
	}
}
