package xmppserver

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/stream"
)

// guardConn is the net.Conn a session's mellium stream runs on (TLS, when
// negotiated, wraps it). It
//   - gives every Write a fresh deadline (writeTimeout from now), whichever
//     path the write comes from (negotiation, Serve's handler, the writer
//     goroutine, mellium's own stream close), or the fixed, earlier
//     deadline set by beginClose once the session is being closed;
//   - counts the bytes read since the last resetRead (called at the start
//     of every stanza) and fails reads once a stanza has grown beyond
//     maxStanzaBytes, so a client cannot make the XML decoder buffer an
//     endless element. The count includes read-ahead (and TLS framing), so
//     the limit is approximate: slack is added.
//
// It deliberately does not forward SetDeadline calls differently: mellium
// only sets deadlines when a context it was given ends, and the server
// never gives it a context that ends.
type guardConn struct {
	net.Conn

	mu      sync.Mutex
	closeBy time.Time // non-zero once closing: the write deadline

	read    atomic.Int64
	limit   int64
	onLimit func() // called (once per failing read) before failing it
}

// errStanzaTooLarge is the read error once the limit is hit. A stream.Error
// so that mellium's Serve, if it gets to report it, reports this condition.
var errStanzaTooLarge = stream.PolicyViolation

func newGuardConn(c net.Conn, limit int64, onLimit func()) *guardConn {
	return &guardConn{Conn: c, limit: limit, onLimit: onLimit}
}

func (c *guardConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	d := c.closeBy
	if d.IsZero() {
		d = time.Now().Add(writeTimeout)
	}
	err := c.Conn.SetWriteDeadline(d)
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// beginClose caps the deadline of the write in progress, if any, and of all
// later writes at now+grace.
func (c *guardConn) beginClose(grace time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closeBy.IsZero() {
		return
	}
	c.closeBy = time.Now().Add(grace)
	_ = c.Conn.SetWriteDeadline(c.closeBy)
}

func (c *guardConn) Read(p []byte) (int, error) {
	if c.read.Load() > c.limit {
		if c.onLimit != nil {
			c.onLimit()
		}
		return 0, errStanzaTooLarge
	}
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// resetRead starts the byte count of a new stanza.
func (c *guardConn) resetRead() { c.read.Store(0) }
