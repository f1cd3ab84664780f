package testkit

import (
	"context"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"sniper/jetstream"
)

// NATS is an embedded nats-server with JetStream on a temp dir, as
// `sniper run` starts it, plus a client connection and the SNIPER log.
type NATS struct {
	DataDir string
	Server  *jetstream.Server
	Conn    *nats.Conn
	Log     *jetstream.Log
	t       testing.TB
}

// StartNATS starts an embedded server on a fresh temp dir and a free port.
// It is stopped when the test ends.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	return StartNATSIn(t, t.TempDir())
}

// StartNATSIn starts an embedded server on dir, which may hold the store of
// an earlier server: how tests restart the log.
func StartNATSIn(t testing.TB, dir string) *NATS {
	t.Helper()
	return StartNATSOn(t, dir, "127.0.0.1:0")
}

// Stop closes the connection and shuts the server down; safe to call twice.
func (n *NATS) Stop() {
	if n.Conn != nil {
		n.Conn.Close()
		n.Conn = nil
	}
	if n.Server != nil {
		n.Server.Shutdown()
		n.Server = nil
	}
}

// Logger returns a slog logger that writes through t.Log, so a test's
// output shows what the system logged, and only when it fails (or -v).
// Lines logged after the test ended are dropped: testing panics on them.
func Logger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// Eventually polls cond until it returns true or the deadline passes, then
// fails the test with msg. It is the only way tests wait. Pass a pointer
// among args to report a variable's value at the deadline, not when the
// call was made.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: "+msg, append([]any{timeout}, deref(args)...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Consistently checks cond on every poll for d and fails the test at the
// first error: what a test can say about "nothing happens" without one
// blind sleep.
func Consistently(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := cond(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func deref(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		if v := reflect.ValueOf(a); v.Kind() == reflect.Pointer && !v.IsNil() {
			a = v.Elem().Interface()
		}
		out[i] = a
	}
	return out
}

// StartNATSOn is StartNATSIn with the client listener on listen (host:port):
// a server that another process, or the app under test with --nats-url,
// reaches over TCP, and that a test restarts on the same address by
// stopping it and calling StartNATSOn again with the same dir and
// ClientAddr.
func StartNATSOn(t testing.TB, dir, listen string) *NATS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	srv, err := jetstream.StartEmbedded(ctx, jetstream.EmbeddedConfig{
		DataDir: dir, Listen: listen, SyncInterval: time.Minute, Logger: Logger(t),
	})
	if err != nil {
		t.Fatalf("start embedded nats on %s: %v", listen, err)
	}
	nc, err := srv.Connect("test")
	if err != nil {
		srv.Shutdown()
		t.Fatalf("connect: %v", err)
	}
	log, err := jetstream.Open(ctx, nc, jetstream.StreamConfig{})
	if err != nil {
		nc.Close()
		srv.Shutdown()
		t.Fatalf("open log: %v", err)
	}
	n := &NATS{DataDir: dir, Server: srv, Conn: nc, Log: log, t: t}
	t.Cleanup(n.Stop)
	return n
}

// ClientAddr is the host:port the server's TCP listener is bound to, to
// restart it on the same address with StartNATSOn.
func (n *NATS) ClientAddr() string {
	return strings.TrimPrefix(n.Server.ClientURL(), "nats://")
}
