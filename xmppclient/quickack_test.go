package xmppclient

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// The wrapper changes reading only: data, deadlines and EOF behave as on
// the bare TCP conn.
func TestQuickAckConnKeepsConnSemantics(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	tcp, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := withQuickAck(tcp)
	defer c.Close()
	if _, ok := c.(*quickAckConn); !ok {
		t.Fatalf("withQuickAck(%T) = %T, want *quickAckConn", tcp, c)
	}
	peer, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer peer.Close()

	// A read deadline set on the wrapper reaches the socket.
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	// Data both ways.
	if _, err := peer.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf[:4]); err != nil || string(buf[:4]) != "ping" {
		t.Fatalf("read %q, %v; want \"ping\"", buf[:4], err)
	}
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(peer, buf[:4]); err != nil || string(buf[:4]) != "pong" {
		t.Fatalf("peer read %q, %v; want \"pong\"", buf[:4], err)
	}

	// A write deadline in the past fails the write.
	if err := c.SetWriteDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("late")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past deadline: %v, want os.ErrDeadlineExceeded", err)
	}

	// EOF passes through, and arming a closed socket is harmless.
	_ = peer.Close()
	if _, err := c.Read(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("read after peer close: %v, want io.EOF", err)
	}
	_ = c.Close()
	c.(*quickAckConn).arm()
}
