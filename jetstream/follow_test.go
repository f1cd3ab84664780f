package jetstream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
)

// followWait bounds how long a follower may take to hand over what the
// log holds; a restart of the server takes longer (see the restart test).
const followWait = 10 * time.Second

// collector keeps what a follower delivered.
type collector struct {
	mu  sync.Mutex
	got []jetstream.Delivery
}

func (c *collector) add(d jetstream.Delivery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, d)
}

func (c *collector) deliveries() []jetstream.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

func (c *collector) seqs() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]uint64, len(c.got))
	for i, d := range c.got {
		out[i] = d.Seq
	}
	return out
}

// run runs f until the returned stop (also called when the test ends),
// which waits for Run to return.
func run(t *testing.T, f *jetstream.Follower) (*collector, func()) {
	t.Helper()
	c := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, c.add) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("follower at %d: Run = %v", f.Delivered(), err)
				}
			case <-time.After(followWait):
				t.Errorf("follower at %d: Run did not return %s after its context ended", f.Delivered(), followWait)
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

// waitSeqs waits until c holds exactly want, in that order, and checks
// that nothing else comes for a moment.
func waitSeqs(t *testing.T, c *collector, timeout time.Duration, want []uint64) {
	t.Helper()
	var got []uint64
	testkit.Eventually(t, timeout, func() bool {
		got = c.seqs()
		return len(got) >= len(want)
	}, "delivered %v, want %v", &got, want)
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	testkit.Consistently(t, 200*time.Millisecond, func() error {
		if got := c.seqs(); !slices.Equal(got, want) {
			return fmt.Errorf("delivered %v, want only %v", got, want)
		}
		return nil
	})
}

func newFollower(t *testing.T, l *jetstream.Log, spec jetstream.FollowSpec) *jetstream.Follower {
	t.Helper()
	if spec.Filters == nil {
		spec.Filters = messages.InputSubjects("*")
	}
	spec.Logger = testkit.Logger(t)
	f, err := l.Follower(testContext(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// storedCheckpoint is the checkpoint stored for the follower called name,
// and how many messages its subject holds.
func storedCheckpoint(t *testing.T, ctx context.Context, l *jetstream.Log, name string) (seq, count uint64) {
	t.Helper()
	subject := jetstream.CheckpointSubject(name)
	if count = subjectCount(t, ctx, l, subject); count == 0 {
		return 0, 0
	}
	raw, err := l.Stream().GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Type     string `json:"type"`
		Follower string `json:"follower"`
		Seq      uint64 `json:"seq"`
	}
	if err := json.Unmarshal(raw.Data, &c); err != nil || c.Type != "checkpoint" || c.Follower != name {
		t.Fatalf("checkpoint of %s is %s (%v)", name, raw.Data, err)
	}
	return c.Seq, count
}

// A follower hands over the messages on its subjects, and only those, in
// log order: what the log held when it started and what comes later.
func TestFollowerDeliversItsSubjectsInLogOrder(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log

	type stored struct {
		subject string
		data    string
	}
	want := map[uint64]stored{}
	var wantSeqs []uint64
	input := func(item, kind, typ string, payload any) {
		subject := messages.Subject(item, kind, typ)
		seq := appendInput(t, ctx, l, subject, payload)
		data, _ := json.Marshal(payload)
		want[seq] = stored{subject, string(data)}
		wantSeqs = append(wantSeqs, seq)
	}
	other := func(item string, inputSeq uint64) {
		commit(t, ctx, l, decision(t, item, 0, inputSeq, auction.Joining, auction.Join{}))
		appendInput(t, ctx, l, messages.Subject(item, messages.KindOut, messages.TypeSent), messages.SentEvent{Type: messages.TypeSent, Item: item, OutSeq: inputSeq})
	}

	input("a", messages.KindCmd, messages.TypeStart, messages.NewStart("a", 1100))
	other("a", 1)
	input("b", messages.KindCmd, messages.TypeStart, messages.NewStart("b", 1100))
	input("a", messages.KindIn, messages.TypePrice, messages.NewPrice("a", 1000, 98, "other", false))
	other("b", 3)

	f := newFollower(t, l, jetstream.FollowSpec{Name: "order"})
	if f.Start() != 1 || f.Delivered() != 0 || f.Checkpoint() != 0 {
		t.Errorf("fresh follower: start %d, delivered %d, checkpoint %d; want 1, 0, 0", f.Start(), f.Delivered(), f.Checkpoint())
	}
	c, _ := run(t, f)
	waitSeqs(t, c, followWait, wantSeqs)

	// Live: later messages follow, in order, still only the inputs.
	input("b", messages.KindIn, messages.TypeMalformed, messages.NewMalformed("b", "junk", "bad"))
	other("c", 7)
	input("a", messages.KindIn, messages.TypeClose, messages.NewClose("a"))
	input("b", messages.KindCmd, messages.TypeStop, messages.NewStop("b"))
	waitSeqs(t, c, followWait, wantSeqs)

	for _, d := range c.deliveries() {
		w := want[d.Seq]
		if d.Subject != w.subject || string(d.Data) != w.data || d.Time.IsZero() {
			t.Errorf("delivery %d = %s %s at %s, want %s %s", d.Seq, d.Subject, d.Data, d.Time, w.subject, w.data)
		}
	}
	if last := wantSeqs[len(wantSeqs)-1]; f.Delivered() != last {
		t.Errorf("Delivered = %d, want %d", f.Delivered(), last)
	}
	if f.Pending() != len(wantSeqs) {
		t.Errorf("Pending = %d, want %d (nothing done)", f.Pending(), len(wantSeqs))
	}

	// From: a follower without a checkpoint starts where it is told.
	from := wantSeqs[3]
	g := newFollower(t, l, jetstream.FollowSpec{Name: "from", From: from})
	if g.Start() != from || g.Checkpoint() != from-1 {
		t.Errorf("follower from %d: start %d, checkpoint %d", from, g.Start(), g.Checkpoint())
	}
	gc, _ := run(t, g)
	waitSeqs(t, gc, followWait, wantSeqs[3:])

	// Other filters: the decisions only.
	h := newFollower(t, l, jetstream.FollowSpec{Name: "decisions", Filters: []string{messages.DecisionFilter("*")}})
	hc, _ := run(t, h)
	var decisions []uint64
	testkit.Eventually(t, followWait, func() bool {
		decisions = hc.seqs()
		return len(decisions) == 3
	}, "decisions delivered: %v, want 3", &decisions)
	decisions = nil
	for _, d := range hc.deliveries() {
		if _, kind, _, err := messages.ParseSubject(d.Subject); err != nil || kind != messages.KindDec {
			t.Errorf("decision follower got %d on %s", d.Seq, d.Subject)
		}
		decisions = append(decisions, d.Seq)
	}
	if !slices.IsSorted(decisions) {
		t.Errorf("decisions delivered out of order: %v", decisions)
	}
}

// Done in any order moves the checkpoint only up to the low-water mark:
// below it every delivery is done. Pending counts what is not.
func TestFollowerCheckpointIsTheLowWaterMark(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log

	var s []uint64
	for i := range 5 {
		s = append(s, appendInput(t, ctx, l, messages.Subject("a", messages.KindIn, messages.TypePrice), messages.NewPrice("a", int64(1000+i), 10, "x", false)))
		// Between two inputs, a message the follower does not read.
		commit(t, ctx, l, decision(t, fmt.Sprintf("d%d", i), 0, uint64(i+1), auction.Stopped))
	}
	f := newFollower(t, l, jetstream.FollowSpec{Name: "lwm"})
	c, _ := run(t, f)
	waitSeqs(t, c, followWait, s)

	check := func(step string, checkpoint uint64, pending int) {
		t.Helper()
		if got := f.Checkpoint(); got != checkpoint {
			t.Errorf("%s: Checkpoint = %d, want %d", step, got, checkpoint)
		}
		if got := f.Pending(); got != pending {
			t.Errorf("%s: Pending = %d, want %d", step, got, pending)
		}
	}
	check("nothing done", 0, 5)
	f.Done(s[2])
	check("third done", 0, 4)
	f.Done(s[0])
	check("first done", s[1]-1, 3) // up to the message before the second, which is not an input
	f.Done(s[1])
	check("second done", s[3]-1, 2) // the third was done already
	f.Done(s[4])
	check("fifth done", s[3]-1, 1)
	f.Done(s[3])
	check("all done", s[4], 0)

	// New deliveries are pending again, and the mark waits for them.
	next := appendInput(t, ctx, l, messages.Subject("a", messages.KindIn, messages.TypeClose), messages.NewClose("a"))
	waitSeqs(t, c, followWait, append(slices.Clone(s), next))
	check("new delivery", next-1, 1)
	f.Done(next)
	check("new delivery done", next, 0)
}

// SaveCheckpoint stores the low-water mark; a new follower of the same
// name starts right after it, and reads again what was not done.
func TestFollowerStartsAfterItsCheckpoint(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	spec := jetstream.FollowSpec{Name: "restart", Checkpointed: true, CheckpointEvery: time.Hour}

	var s []uint64
	for i := range 5 {
		s = append(s, appendInput(t, ctx, l, messages.Subject("a", messages.KindIn, messages.TypePrice), messages.NewPrice("a", int64(1000+i), 10, "x", false)))
	}
	f := newFollower(t, l, spec)
	if f.Start() != 1 {
		t.Errorf("no checkpoint: Start = %d, want 1", f.Start())
	}
	c, stop := run(t, f)
	waitSeqs(t, c, followWait, s)
	f.Done(s[0])
	f.Done(s[1])
	f.Done(s[3])
	if err := f.SaveCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	stop()
	if seq, n := storedCheckpoint(t, ctx, l, spec.Name); seq != s[2]-1 || n != 1 {
		t.Fatalf("stored checkpoint %d (%d messages), want %d (1)", seq, n, s[2]-1)
	}
	// Nothing moved: saving again writes nothing.
	msgs, last := streamState(t, ctx, l)
	if err := f.SaveCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	unchanged(t, ctx, l, "a checkpoint that did not move", msgs, last)

	s = append(s, appendInput(t, ctx, l, messages.Subject("b", messages.KindCmd, messages.TypeStart), messages.NewStart("b", 5)))
	g := newFollower(t, l, spec)
	if g.Start() != s[2] || g.Checkpoint() != s[2]-1 || g.Pending() != 0 {
		t.Errorf("after the checkpoint: start %d, checkpoint %d, pending %d; want %d, %d, 0", g.Start(), g.Checkpoint(), g.Pending(), s[2], s[2]-1)
	}
	gc, _ := run(t, g)
	// s[3] was done, but above the checkpoint: it comes again (the caller
	// skips what its own state says it handled).
	waitSeqs(t, gc, followWait, s[2:])
	// And a follower that saved nothing new writes nothing.
	if err := g.SaveCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if seq, n := storedCheckpoint(t, ctx, l, spec.Name); seq != s[2]-1 || n != 1 {
		t.Errorf("stored checkpoint %d (%d messages), want %d (1)", seq, n, s[2]-1)
	}

	// Another name, or no checkpointing, starts from the beginning.
	if h := newFollower(t, l, jetstream.FollowSpec{Name: "another", Checkpointed: true}); h.Start() != 1 {
		t.Errorf("another follower: Start = %d, want 1", h.Start())
	}
	if h := newFollower(t, l, jetstream.FollowSpec{Name: spec.Name}); h.Start() != 1 {
		t.Errorf("same name without Checkpointed: Start = %d, want 1", h.Start())
	}
	// A follower that does not keep a checkpoint writes none.
	u := newFollower(t, l, jetstream.FollowSpec{Name: "uncheckpointed"})
	uc, stopU := run(t, u)
	waitSeqs(t, uc, followWait, s)
	for _, seq := range s {
		u.Done(seq)
	}
	if err := u.SaveCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	stopU()
	if _, n := storedCheckpoint(t, ctx, l, "uncheckpointed"); n != 0 {
		t.Errorf("a follower without Checkpointed stored %d checkpoints", n)
	}
}

// Only the latest checkpoint stays in the log, whether written by
// SaveCheckpoint or every CheckpointEvery while the follower runs.
func TestFollowerCheckpointRollsUp(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	subject := messages.Subject("a", messages.KindIn, messages.TypePrice)
	price := func(i int) uint64 {
		return appendInput(t, ctx, l, subject, messages.NewPrice("a", int64(1000+i), 10, "x", false))
	}

	var s []uint64
	for i := range 4 {
		s = append(s, price(i))
	}
	f := newFollower(t, l, jetstream.FollowSpec{Name: "saved", Checkpointed: true, CheckpointEvery: time.Hour})
	c, _ := run(t, f)
	waitSeqs(t, c, followWait, s)
	for _, seq := range s {
		f.Done(seq)
		if err := f.SaveCheckpoint(ctx); err != nil {
			t.Fatal(err)
		}
		if got, n := storedCheckpoint(t, ctx, l, "saved"); got != seq || n != 1 {
			t.Errorf("after saving %d: checkpoint %d, %d messages on its subject; want 1", seq, got, n)
		}
	}
	if msgs, _ := streamState(t, ctx, l); msgs != uint64(len(s))+1 {
		t.Errorf("stream holds %d messages, want the %d inputs and one checkpoint", msgs, len(s))
	}

	// Written by the follower itself while it runs.
	g := newFollower(t, l, jetstream.FollowSpec{Name: "periodic", Checkpointed: true, CheckpointEvery: 20 * time.Millisecond})
	gc, _ := run(t, g)
	waitSeqs(t, gc, followWait, s)
	var stored uint64
	for i := range 3 {
		s = append(s, price(10+i))
		waitSeqs(t, gc, followWait, s)
		g.Done(s[len(s)-1]) // out of order: the mark waits for the rest
		testkit.Consistently(t, 100*time.Millisecond, func() error {
			if got, _ := storedCheckpoint(t, ctx, l, "periodic"); got >= s[0] {
				return fmt.Errorf("checkpoint %d stored while %d is not done", got, s[0])
			}
			return nil
		})
	}
	for _, seq := range s[:len(s)-1] {
		g.Done(seq)
	}
	want := s[len(s)-1]
	var n uint64
	testkit.Eventually(t, followWait, func() bool {
		stored, n = storedCheckpoint(t, ctx, l, "periodic")
		return stored == want
	}, "stored checkpoint %d, want %d", &stored, want)
	if n != 1 {
		t.Errorf("%d checkpoints of the periodic follower stored, want 1", n)
	}
	if _, n := storedCheckpoint(t, ctx, l, "saved"); n != 1 {
		t.Errorf("%d checkpoints of the other follower stored, want 1", n)
	}
}

// A follower on a connection that reconnects goes on through a restart of
// the server: what was appended after the restart arrives, nothing twice
// and nothing missed, and its checkpoint is written to the new server.
func TestFollowerSurvivesARestartOfTheServer(t *testing.T) {
	ctx := testContextFor(t, time.Minute)
	n := testkit.StartNATS(t)
	dir, addr := n.DataDir, n.ClientAddr()

	// Over TCP: an in-process connection cannot outlive its server.
	nc, err := nats.Connect(n.Server.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l, err := jetstream.Open(ctx, nc, jetstream.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const name = "survivor"
	f := newFollower(t, l, jetstream.FollowSpec{Name: name, Checkpointed: true, CheckpointEvery: time.Hour})
	c, stop := run(t, f)

	var want []uint64
	prices := func(w *jetstream.Log, from, count int) {
		for i := from; i < from+count; i++ {
			want = append(want, appendInput(t, ctx, w, messages.Subject("a", messages.KindIn, messages.TypePrice), messages.NewPrice("a", int64(1000+i), 10, "x", false)))
			appendInput(t, ctx, w, messages.Subject("a", messages.KindOut, messages.TypeSent), messages.SentEvent{Type: messages.TypeSent, Item: "a", OutSeq: uint64(i)})
		}
	}
	prices(n.Log, 0, 5)
	waitSeqs(t, c, followWait, want)
	for _, seq := range want {
		f.Done(seq)
	}

	n.Stop()
	restarted := time.Now()
	n2 := testkit.StartNATSOn(t, dir, addr)
	prices(n2.Log, 5, 5)
	// Allow for the ordered consumer's missed heartbeats, or the
	// follower's own check, to notice that its reader is gone.
	waitSeqs(t, c, 30*time.Second, want)
	t.Logf("all deliveries after the restart %s later", time.Since(restarted).Round(time.Millisecond))
	prices(n2.Log, 10, 3)
	waitSeqs(t, c, followWait, want)

	if got := f.Pending(); got != 8 {
		t.Errorf("Pending = %d, want the 8 deliveries since the restart", got)
	}
	for _, seq := range want[5:] {
		f.Done(seq)
	}
	if got := f.Pending(); got != 0 {
		t.Errorf("Pending = %d after all done, want 0", got)
	}
	testkit.Eventually(t, followWait, func() bool { return f.SaveCheckpoint(ctx) == nil }, "cannot save the checkpoint after the restart")
	if seq, cnt := storedCheckpoint(t, ctx, n2.Log, name); seq != want[len(want)-1] || cnt != 1 {
		t.Errorf("stored checkpoint %d (%d messages), want %d (1)", seq, cnt, want[len(want)-1])
	}
	stop()
}

// A follower run again, and another follower of the same name running
// alongside (a second instance), each read on where they are, although
// the server still holds the ordered consumer of the reader before
// (nats.go leaves it to expire after its InactiveThreshold).
func TestFollowerOfTheSameNameReadsAgain(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	price := func(i int) uint64 {
		return appendInput(t, ctx, l, messages.Subject("a", messages.KindIn, messages.TypePrice), messages.NewPrice("a", int64(1000+i), 10, "x", false))
	}
	var s []uint64
	for i := range 3 {
		s = append(s, price(i))
	}
	spec := jetstream.FollowSpec{Name: "again"}
	f := newFollower(t, l, spec)
	c, stop := run(t, f)
	waitSeqs(t, c, followWait, s)
	stop()

	twin := newFollower(t, l, spec)
	tc, _ := run(t, twin)
	waitSeqs(t, tc, followWait, s)

	s = append(s, price(3), price(4))
	c2, _ := run(t, f)
	waitSeqs(t, c2, followWait, s[3:]) // on from where it stopped
	waitSeqs(t, tc, followWait, s)
	if f.Pending() != len(s) {
		t.Errorf("Pending = %d, want %d: every delivery of both runs", f.Pending(), len(s))
	}
}
