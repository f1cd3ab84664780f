// Package xmppclient is the sniper's XMPP connection to the auction house:
// one client session (Session) and a wrapper that keeps one alive across
// disconnects (Conn). It carries chat message bodies both ways and nothing
// else; what the bodies mean is for its callers.
package xmppclient

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Errors for errors.Is. ErrAuth and ErrTLS are fatal: redialling cannot
// fix a wrong password or an untrusted certificate, so Conn.Run stops on
// them instead of hammering the server.
var (
	// ErrAuth: the server refused the credentials (SASL failure).
	ErrAuth = errors.New("xmpp authentication failed")
	// ErrTLS: STARTTLS was refused or the server's certificate is invalid.
	ErrTLS = errors.New("xmpp TLS failed")
	// ErrClosed: the session is closed or its connection died.
	ErrClosed = errors.New("xmpp session closed")
	// ErrNotConnected: Conn has no live session right now; retry later.
	ErrNotConnected = errors.New("xmpp not connected")
	// ErrUndelivered: the server processed the message but could not
	// deliver it and bounced it (e.g. service-unavailable: the recipient
	// is offline and nothing is stored offline). The message is not
	// delivered; the session is unaffected. Retry later.
	ErrUndelivered = errors.New("xmpp message not delivered")
)

// TLSMode says how a session secures its stream.
type TLSMode string

const (
	// TLSRequire negotiates STARTTLS and verifies the server certificate
	// against Config.RootCAs (the system roots when nil).
	TLSRequire TLSMode = "require"
	// TLSSkipVerify negotiates STARTTLS but accepts any certificate: for
	// self-signed test and demo servers.
	TLSSkipVerify TLSMode = "skip-verify"
	// TLSOff talks plaintext (SCRAM still keeps the password off the wire
	// when the server offers it).
	TLSOff TLSMode = "off"
)

// ParseTLSMode parses a --tls flag value.
func ParseTLSMode(s string) (TLSMode, error) {
	switch m := TLSMode(strings.ToLower(strings.TrimSpace(s))); m {
	case TLSRequire, TLSSkipVerify, TLSOff:
		return m, nil
	default:
		return "", fmt.Errorf("unknown TLS mode %q (want %q, %q or %q)", s, TLSRequire, TLSSkipVerify, TLSOff)
	}
}

// String implements fmt.Stringer and flag.Value.
func (m TLSMode) String() string { return string(m) }

// Set implements flag.Value.
func (m *TLSMode) Set(s string) error {
	v, err := ParseTLSMode(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Defaults for the zero values of Config's tuning fields.
const (
	DefaultDialTimeout  = 10 * time.Second
	DefaultWriteTimeout = 10 * time.Second
	// DefaultConfirmTimeout: see Config.ConfirmTimeout.
	DefaultConfirmTimeout = 10 * time.Second
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
)

// Config says where and as whom to connect.
type Config struct {
	// Addr is host:port, dialled as is (no SRV lookup).
	Addr string
	// JID is the full JID to bind, e.g. sniper@localhost/Auction. The
	// resource is bound exactly; a session never runs under another one.
	JID string
	// Password is never logged (Config's String and LogValue hide it).
	Password string
	// TLS is the TLS mode; empty means TLSRequire.
	TLS TLSMode
	// RootCAs verifies the server in TLSRequire mode; nil means the
	// system roots.
	RootCAs *x509.CertPool
	// Logger receives state changes; nil discards them.
	Logger *slog.Logger

	// DialTimeout bounds TCP connect plus stream negotiation (default 10s).
	DialTimeout time.Duration
	// WriteTimeout bounds one Send's write; a send that exceeds it kills
	// the session, since a timed-out TLS write leaves the stream unusable
	// (default 10s).
	WriteTimeout time.Duration
	// ConfirmTimeout bounds the wait, after a Send's write, for the
	// server's answer to the ping that follows the message (see
	// Session.Send). A server that does not answer in time is taken for
	// dead: the session is closed and Send fails with ErrClosed
	// (default 10s).
	ConfirmTimeout time.Duration

	// MinBackoff and MaxBackoff bound Conn's redial delay, which doubles
	// from MinBackoff up to MaxBackoff with jitter (defaults 100ms, 10s).
	MinBackoff, MaxBackoff time.Duration
	// OnStateChange, if set, is called by Conn.Run each time the session
	// comes up (true) or goes down (false). Calls come from Run's
	// goroutine, one at a time and in order; keep them short.
	OnStateChange func(connected bool)
	// OnDialFailed, if set, is called by Conn.Run after each attempt to
	// connect that failed and will be retried (the server is down, say),
	// from Run's goroutine.
	OnDialFailed func(err error)
}

// String hides the password, so a Config printed by mistake leaks nothing.
func (c Config) String() string {
	return fmt.Sprintf("xmppclient.Config{Addr:%s JID:%s TLS:%s}", c.Addr, c.JID, c.tlsMode())
}

// LogValue hides the password from slog.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.String("jid", c.JID),
		slog.String("tls", string(c.tlsMode())),
	)
}

func (c Config) tlsMode() TLSMode {
	if c.TLS == "" {
		return TLSRequire
	}
	return c.TLS
}

func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// GoString hides the password from %#v too.
func (c Config) GoString() string { return c.String() }
