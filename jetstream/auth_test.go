package jetstream_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
)

// With auth on, the embedded server is a closed door: a client without
// credentials cannot connect (so neither publish to sniper.> nor call the
// JetStream API), the sniper's user can do everything, and the reader can
// inspect the log (stream info, a message, an ordered consumer) but not
// write to it, nor delete it.
func TestEmbeddedServerAuth(t *testing.T) {
	ctx := testContextFor(t, 30*time.Second)
	auth := jetstream.ServerAuth{User: "sniper", Password: "s3cret", ReaderPassword: "look"}
	srv, err := jetstream.StartEmbedded(ctx, jetstream.EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: auth, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	// The sniper, in-process, with the server's own user.
	own, err := srv.Connect("sniper")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Close)
	l, err := jetstream.Open(ctx, own, jetstream.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const item = "item-auth"
	seq := appendInput(t, ctx, l, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, 100))

	// No credentials, or wrong ones: no connection at all.
	for _, opts := range [][]nats.Option{nil, {nats.UserInfo("sniper", "guess")}, {nats.UserInfo("reader", "wrong")}} {
		nc, err := nats.Connect(srv.ClientURL(), append(opts, nats.MaxReconnects(0))...)
		if err == nil {
			nc.Close()
			t.Fatalf("connected with %d options and no valid credentials", len(opts))
		}
		if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("connect without valid credentials: %v, want an authorization violation", err)
		}
	}

	// The reader.
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(jetstream.ReaderUser, "look"), nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, jetstream.StreamName)
	if err != nil {
		t.Fatalf("the reader cannot read the stream's info: %v", err)
	}
	if _, err := stream.GetMsg(ctx, seq); err != nil {
		t.Errorf("the reader cannot get a message: %v", err)
	}
	cons, err := stream.OrderedConsumer(ctx, natsjs.OrderedConsumerConfig{FilterSubjects: []string{messages.ItemFilter(item)}})
	if err != nil {
		t.Fatalf("the reader cannot make an ordered consumer: %v", err)
	}
	msg, err := cons.Next(natsjs.FetchMaxWait(5 * time.Second))
	if err != nil || msg.Subject() != messages.Subject(item, messages.KindCmd, messages.TypeStart) {
		t.Errorf("the reader's consumer read %v, %v; want the start command", msg, err)
	}
	// Writes are refused: a core publish is dropped with a permission
	// violation, a JetStream publish gets no ack, and the stream cannot
	// be deleted.
	perm := make(chan error, 4)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { perm <- err })
	if err := nc.Publish(messages.Subject(item, messages.KindCmd, messages.TypeStop), []byte(`{"type":"stop"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-perm:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("publish by the reader: %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the reader's publish to sniper.> drew no permissions violation")
	}
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := js.Publish(short, messages.Subject(item, messages.KindCmd, messages.TypeStop), []byte(`{"type":"stop"}`)); err == nil {
		t.Error("the reader's JetStream publish was acknowledged")
	}
	if err := js.DeleteStream(short, jetstream.StreamName); err == nil {
		t.Error("the reader deleted the stream")
	}
	if last, err := l.LastSeq(ctx); err != nil || last != seq {
		t.Errorf("the log's last sequence is %d (%v) after the reader's attempts, want %d: nothing written", last, err, seq)
	}
}
