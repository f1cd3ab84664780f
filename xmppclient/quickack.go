package xmppclient

import (
	"net"
	"syscall"
)

// quickAckConn is the TCP connection a Session dials, with TCP_QUICKACK
// re-armed after every read that returned data.
//
// Why: Send follows each message with a ping and waits for the pong. Servers
// such as Prosody 0.12 (Debian) keep Nagle on by default. Having just sent,
// Linux treats the connection as interactive and delays the ACK of the small
// pong (up to 40 ms) in the hope of piggybacking it on our next write; until
// that ACK arrives, Nagle keeps the server's *next* stanza to us (the
// auction's next PRICE) in its send queue. A PRICE -> BID loop measured
// ~44 ms p50 that way, against ~1 ms without the stall. Re-arming
// TCP_QUICKACK after a read sends the pending ACK at once (the kernel clears
// the flag again as it goes, hence every read: armed only once at dial,
// the loop measured the same ~44 ms). Auction houses will not
// turn Nagle off for us, so the fix has to be here.
//
// Cost: one setsockopt syscall per read that returned data, on top of the
// read syscall itself (TLS and mellium read in chunks, so this is per
// burst of stanzas received, not per stanza or byte): ~0.4 us measured
// here, against the tens of milliseconds a stall costs.
//
// Why not XEP-0198 (stream management, which Prosody 0.12 ships as
// mod_smacks) instead of the ping: mellium v0.22.0 has no implementation,
// and a hand-made one must count every stanza both ways, including the
// IQ errors mellium writes by itself, which we never see. Above all it
// would not remove the stall: the server's <a h='N'/> answering our <r/>
// is the same small segment as the pong, with the same delayed ACK
// behind it; only acks batched over many messages would avoid it, and
// that gives up confirming each BID before it is recorded as sent.
//
// Only Read is changed. Deadlines, Close and the rest are the TCP conn's
// own (net.Conn's methods, promoted), so the Session's deadlines on raw
// still work, and TLS (STARTTLS) runs over this wrapper like over the bare
// conn. It embeds net.Conn rather than *net.TCPConn so that no ReadFrom/
// WriteTo shortcut can read around Read.
type quickAckConn struct {
	net.Conn
	tcp *net.TCPConn
	rc  syscall.RawConn
}

// withQuickAck wraps c if it is a TCP connection whose socket can be
// reached; anything else is returned as it is.
func withQuickAck(c net.Conn) net.Conn {
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return c
	}
	q := &quickAckConn{Conn: tcp, tcp: tcp, rc: rc}
	q.arm()
	return q
}

func (c *quickAckConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.arm()
	}
	return n, err
}

// arm sets TCP_QUICKACK (a no-op where there is none). A failure (the
// socket closed under us, say) costs at most a delayed ACK, so it is
// ignored.
func (c *quickAckConn) arm() {
	_ = c.rc.Control(setQuickAck)
}
