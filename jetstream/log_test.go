package jetstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	return testContextFor(t, 10*time.Second)
}

func testContextFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// appendInput stores one input and returns its sequence.
func appendInput(t *testing.T, ctx context.Context, l *jetstream.Log, subject string, payload any) uint64 {
	t.Helper()
	seq, err := l.Append(ctx, subject, payload)
	if err != nil {
		t.Fatalf("append %s: %v", subject, err)
	}
	return seq
}

// decision builds what the sniper commits after the input at inputSeq,
// fenced on the auction's last decision at fence.
func decision(t *testing.T, item string, fence, inputSeq uint64, state auction.State, outs ...auction.Output) jetstream.Decision {
	t.Helper()
	snap := auction.Snapshot{Item: item, State: state, LastPrice: 1000, LastBid: 1098, StopPrice: 1100}
	ev, err := messages.NewDecision(snap, inputSeq, outs)
	if err != nil {
		t.Fatal(err)
	}
	return jetstream.Decision{Item: item, Fence: fence, Event: ev}
}

// commit commits d and fails the test if the log refuses it.
func commit(t *testing.T, ctx context.Context, l *jetstream.Log, d jetstream.Decision) uint64 {
	t.Helper()
	seq, err := l.Commit(ctx, d)
	if err != nil {
		t.Fatalf("commit on %s for input %d (fence %d): %v", d.Item, d.Event.InputSeq, d.Fence, err)
	}
	return seq
}

// streamState returns the stream's message count and last sequence.
func streamState(t *testing.T, ctx context.Context, l *jetstream.Log) (msgs, last uint64) {
	t.Helper()
	info, err := l.Stream().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs, info.State.LastSeq
}

// subjectCount returns how many messages the stream holds on the subjects
// matching filter (wildcards allowed).
func subjectCount(t *testing.T, ctx context.Context, l *jetstream.Log, filter string) uint64 {
	t.Helper()
	info, err := l.Stream().Info(ctx, natsjs.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// decisionCount is how many decisions the stream holds for item.
func decisionCount(t *testing.T, ctx context.Context, l *jetstream.Log, item string) uint64 {
	t.Helper()
	return subjectCount(t, ctx, l, messages.DecisionFilter(item))
}

// unchanged fails the test if the stream moved since msgs/last.
func unchanged(t *testing.T, ctx context.Context, l *jetstream.Log, what string, msgs, last uint64) {
	t.Helper()
	if m, s := streamState(t, ctx, l); m != msgs || s != last {
		t.Errorf("%s stored something: %d msgs up to %d, was %d up to %d", what, m, s, msgs, last)
	}
}

// checkStoredDecision checks that the message at seq is d, alone on its
// subject's decision, with the id of its input.
func checkStoredDecision(t *testing.T, ctx context.Context, l *jetstream.Log, seq uint64, d jetstream.Decision) {
	t.Helper()
	raw, err := l.Stream().GetMsg(ctx, seq)
	if err != nil {
		t.Fatalf("get %d: %v", seq, err)
	}
	if want := messages.DecisionSubject(d.Item, d.Event.Type); raw.Subject != want {
		t.Errorf("decision %d on %q, want %q", seq, raw.Subject, want)
	}
	if id, want := raw.Header.Get(natsjs.MsgIDHeader), d.Item+"/"+strconv.FormatUint(d.Event.InputSeq, 10); id != want {
		t.Errorf("decision %d has id %q, want %q", seq, id, want)
	}
	wantData, err := json.Marshal(d.Event)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw.Data) != string(wantData) {
		t.Errorf("decision %d is %s, want %s", seq, raw.Data, wantData)
	}
	var got messages.DecisionEvent
	if err := json.Unmarshal(raw.Data, &got); err != nil || !reflect.DeepEqual(got, d.Event) {
		t.Errorf("decision %d decodes to %+v (%v), want %+v", seq, got, err, d.Event)
	}
}

func TestAppend(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	subject := messages.Subject("item-1", messages.KindIn, messages.TypePrice)

	var last uint64
	for i := range 5 {
		seq, err := l.Append(ctx, subject, messages.NewPrice("item-1", int64(1000+i), 10, "other", false))
		if err != nil {
			t.Fatal(err)
		}
		if seq <= last {
			t.Fatalf("append %d got seq %d after %d", i, seq, last)
		}
		last = seq
	}
	raw, err := l.Stream().GetMsg(ctx, last)
	if err != nil {
		t.Fatal(err)
	}
	var p messages.PriceEvent
	if err := json.Unmarshal(raw.Data, &p); err != nil || p != messages.NewPrice("item-1", 1004, 10, "other", false) {
		t.Errorf("stored %s (%v)", raw.Data, err)
	}
	if raw.Subject != subject {
		t.Errorf("stored on %q, want %q", raw.Subject, subject)
	}
	if seq, err := l.LastSeq(ctx); err != nil || seq != last {
		t.Errorf("LastSeq = %d, %v; want %d", seq, err, last)
	}
}

func TestAppendWithMsgIDDeduplicates(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	subject := messages.Subject("item-1", messages.KindIn, messages.TypeClose)

	first, err := l.Append(ctx, subject, messages.NewClose("item-1"), jetstream.WithMsgID("xmpp/abc"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := l.Append(ctx, subject, messages.NewClose("item-1"), jetstream.WithMsgID("xmpp/abc"))
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if again != first {
		t.Errorf("retry got seq %d, want the original %d", again, first)
	}
	if n := subjectCount(t, ctx, l, subject); n != 1 {
		t.Errorf("%d messages stored, want 1", n)
	}
	other, err := l.Append(ctx, subject, messages.NewClose("item-1"), jetstream.WithMsgID("xmpp/def"))
	if err != nil {
		t.Fatal(err)
	}
	if other <= first {
		t.Errorf("new id got seq %d, want > %d", other, first)
	}
}

func TestAppendFirstOfSubject(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	start := messages.Subject("item-1", messages.KindCmd, messages.TypeStart)

	seq, err := l.Append(ctx, start, messages.NewStart("item-1", 1100), jetstream.FirstOfSubject())
	if err != nil {
		t.Fatalf("first start: %v", err)
	}
	_, err = l.Append(ctx, start, messages.NewStart("item-1", 2000), jetstream.FirstOfSubject())
	if !errors.Is(err, jetstream.ErrExists) {
		t.Fatalf("second start: err = %v, want ErrExists", err)
	}
	if n := subjectCount(t, ctx, l, start); n != 1 {
		t.Errorf("%d start commands stored, want 1", n)
	}
	// Other subjects, even of the same auction, are not affected.
	other := messages.Subject("item-2", messages.KindCmd, messages.TypeStart)
	seq2, err := l.Append(ctx, other, messages.NewStart("item-2", 1100), jetstream.FirstOfSubject())
	if err != nil {
		t.Fatalf("start of another item: %v", err)
	}
	if seq2 <= seq {
		t.Errorf("seq %d after %d", seq2, seq)
	}
	if _, err := l.Append(ctx, messages.Subject("item-1", messages.KindCmd, messages.TypeStop), messages.NewStop("item-1"), jetstream.FirstOfSubject()); err != nil {
		t.Errorf("stop after start: %v", err)
	}
}

// A decision is one message, on the subject of its type, with the id of
// its input; LastDecision reads it back.
func TestCommit(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	const item = "item-54321"

	startSeq := appendInput(t, ctx, l, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, 1100))
	d := decision(t, item, 0, startSeq, auction.Joining, auction.Join{}, auction.Bid{Price: 1098})
	if d.Event.Type != messages.TypeJoin || len(d.Event.Send) != 2 {
		t.Fatalf("test decision = %+v, want a join with two requests", d.Event)
	}
	seq := commit(t, ctx, l, d)
	if seq != startSeq+1 {
		t.Errorf("decision at %d, want %d (right after the input)", seq, startSeq+1)
	}
	if msgs, last := streamState(t, ctx, l); msgs != 2 || last != seq {
		t.Errorf("stream holds %d msgs up to %d, want 2 up to %d: one message per decision", msgs, last, seq)
	}
	checkStoredDecision(t, ctx, l, seq, d)

	got, err := l.LastDecision(ctx, item)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != seq || !reflect.DeepEqual(got.DecisionEvent, d.Event) {
		t.Errorf("LastDecision = %+v, want seq %d %+v", got, seq, d.Event)
	}
}

// Each type of decision has its own subject, and LastDecision picks the
// latest whatever its subject.
func TestCommitTypesAndLastDecision(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	const item = "item-t"

	steps := []struct {
		state auction.State
		outs  []auction.Output
		typ   string
	}{
		{auction.Joining, []auction.Output{auction.Join{}}, messages.TypeJoin},
		{auction.Bidding, []auction.Output{auction.Bid{Price: 1098}}, messages.TypeBid},
		{auction.Winning, nil, messages.TypeState},
		{auction.Bidding, []auction.Output{auction.Bid{Price: 1200}}, messages.TypeBid},
		{auction.Lost, nil, messages.TypeState},
	}
	var fence uint64
	for i, s := range steps {
		in := appendInput(t, ctx, l, messages.Subject(item, messages.KindIn, messages.TypePrice), messages.NewPrice(item, int64(1000+i), 10, "other", false))
		d := decision(t, item, fence, in, s.state, s.outs...)
		if d.Event.Type != s.typ {
			t.Fatalf("step %d: decision of type %q, want %q", i, d.Event.Type, s.typ)
		}
		seq := commit(t, ctx, l, d)
		checkStoredDecision(t, ctx, l, seq, d)
		got, err := l.LastDecision(ctx, item)
		if err != nil {
			t.Fatalf("step %d: LastDecision: %v", i, err)
		}
		if got.Seq != seq || got.Type != s.typ || got.InputSeq != in || got.State != s.state {
			t.Errorf("step %d: LastDecision = %+v, want seq %d type %s input %d state %s", i, got, seq, s.typ, in, s.state)
		}
		fence = seq
	}
	for typ, want := range map[string]uint64{messages.TypeJoin: 1, messages.TypeBid: 2, messages.TypeState: 2} {
		if n := subjectCount(t, ctx, l, messages.DecisionSubject(item, typ)); n != want {
			t.Errorf("%d decisions on %s, want %d", n, messages.DecisionSubject(item, typ), want)
		}
	}
}

func TestCommitFence(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	const item = "item-1"
	priceSubject := messages.Subject(item, messages.KindIn, messages.TypePrice)

	startSeq := appendInput(t, ctx, l, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, 1100))
	dec1 := commit(t, ctx, l, decision(t, item, 0, startSeq, auction.Joining, auction.Join{}))

	// A second writer that still believes there is no decision is refused,
	// and nothing of it is stored.
	p1 := appendInput(t, ctx, l, priceSubject, messages.NewPrice(item, 1000, 98, "other", false))
	msgs, last := streamState(t, ctx, l)
	if _, err := l.Commit(ctx, decision(t, item, 0, p1, auction.Bidding, auction.Bid{Price: 1098})); !errors.Is(err, jetstream.ErrConflict) {
		t.Fatalf("stale fence: err = %v, want ErrConflict", err)
	}
	unchanged(t, ctx, l, "stale commit", msgs, last)
	// A fence on a decision that never existed is refused, and so is one
	// on a message of the auction that is no decision (its input).
	for _, fence := range []uint64{dec1 + 100, p1, startSeq} {
		if _, err := l.Commit(ctx, decision(t, item, fence, p1, auction.Bidding, auction.Bid{Price: 1098})); !errors.Is(err, jetstream.ErrConflict) {
			t.Fatalf("fence %d (last decision at %d): err = %v, want ErrConflict", fence, dec1, err)
		}
	}
	unchanged(t, ctx, l, "wrong fences", msgs, last)

	// New inputs of the same auction landing meanwhile, commands as well as
	// auction events, do not move the fence: it covers the auction's
	// decisions only. Nor do another auction's decisions.
	p2 := appendInput(t, ctx, l, priceSubject, messages.NewPrice(item, 1098, 97, "sniper", true))
	appendInput(t, ctx, l, messages.Subject(item, messages.KindIn, messages.TypeMalformed), messages.NewMalformed(item, "junk", "bad"))
	appendInput(t, ctx, l, messages.Subject(item, messages.KindCmd, messages.TypeStop), messages.NewStop(item))
	commit(t, ctx, l, decision(t, "item-2", 0, p2, auction.Joining, auction.Join{}))
	commit(t, ctx, l, decision(t, "item-10", 0, p2, auction.Joining, auction.Join{}))
	d2 := decision(t, item, dec1, p1, auction.Bidding, auction.Bid{Price: 1098})
	dec2, err := l.Commit(ctx, d2)
	if err != nil {
		t.Fatalf("commit on the right fence after new inputs: %v", err)
	}
	if dec2 <= p2 {
		t.Errorf("decision at %d, before the input at %d", dec2, p2)
	}
	checkStoredDecision(t, ctx, l, dec2, d2)

	// The next decision is fenced on the latest one, whatever its subject
	// (dec2 is on dec.bid, dec1 on dec.join).
	if _, err := l.Commit(ctx, decision(t, item, dec1, p2, auction.Winning)); !errors.Is(err, jetstream.ErrConflict) {
		t.Fatalf("fence on the older decision of another type: err = %v, want ErrConflict", err)
	}
	dec3 := commit(t, ctx, l, decision(t, item, dec2, p2, auction.Winning))
	if dec3 <= dec2 {
		t.Errorf("decision %d after %d", dec3, dec2)
	}
	if n := decisionCount(t, ctx, l, item); n != 3 {
		t.Errorf("%d decisions stored, want 3", n)
	}
	got, err := l.LastDecision(ctx, item)
	if err != nil || got.Seq != dec3 || got.InputSeq != p2 || got.Type != messages.TypeState {
		t.Errorf("LastDecision = %+v, %v; want seq %d for input %d", got, err, dec3, p2)
	}
}

// A retry of a decision already stored (its ack was lost, or another
// writer decided the same input) is refused, and stores nothing: the
// decision's id is its input.
func TestCommitRetryIsRefused(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	const item = "item-retry"

	startSeq := appendInput(t, ctx, l, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, 1100))
	dec1 := commit(t, ctx, l, decision(t, item, 0, startSeq, auction.Joining, auction.Join{}))
	priceSeq := appendInput(t, ctx, l, messages.Subject(item, messages.KindIn, messages.TypePrice), messages.NewPrice(item, 1000, 98, "other", false))
	d := decision(t, item, dec1, priceSeq, auction.Bidding, auction.Bid{Price: 1098})
	dec2 := commit(t, ctx, l, d)
	msgs, last := streamState(t, ctx, l)

	// The same decision on the fence it was decided on: the fence moved.
	if _, err := l.Commit(ctx, d); !errors.Is(err, jetstream.ErrConflict) {
		t.Fatalf("retry on the old fence: err = %v, want ErrConflict", err)
	}
	unchanged(t, ctx, l, "retry on the old fence", msgs, last)

	// On a fresh fence (a writer that reloaded the decision and decided the
	// same input again, even differently) the id refuses it: not a second
	// message for one input.
	for _, again := range []jetstream.Decision{
		d,
		decision(t, item, dec2, priceSeq, auction.Lost),
		decision(t, item, dec2, priceSeq, auction.Bidding, auction.Bid{Price: 1200}),
	} {
		again.Fence = dec2
		_, err := l.Commit(ctx, again)
		if !errors.Is(err, jetstream.ErrConflict) {
			t.Fatalf("retry of input %d (%s) on a fresh fence: err = %v, want ErrConflict", priceSeq, again.Event.Type, err)
		}
		if !strings.Contains(err.Error(), "stored already") {
			t.Errorf("retry of input %d (%s) on a fresh fence: %v, want it refused as a duplicate id", priceSeq, again.Event.Type, err)
		}
	}
	unchanged(t, ctx, l, "retries on a fresh fence", msgs, last)
	if n := decisionCount(t, ctx, l, item); n != 2 {
		t.Errorf("%d decisions stored, want 2", n)
	}
	got, err := l.LastDecision(ctx, item)
	if err != nil || got.Seq != dec2 || !reflect.DeepEqual(got.DecisionEvent, d.Event) {
		t.Errorf("LastDecision = %+v, %v; want the first commit at %d", got, err, dec2)
	}

	// The same input seq in another auction is another decision.
	commit(t, ctx, l, decision(t, "item-other", 0, priceSeq, auction.Joining, auction.Join{}))
}

// Several writers deciding for the same auction from the same decision at
// once: the fence lets exactly one through. Writers for other auctions,
// racing alongside, all commit.
func TestCommitRace(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	const item = "item-race"
	const writers = 8

	start := make(chan struct{})
	errs := make([]error, writers)
	seqs := make([]uint64, writers)
	others := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		d := decision(t, item, 0, uint64(100+i), auction.Bidding, auction.Bid{Price: int64(1000 + i)})
		other := decision(t, fmt.Sprintf("item-race-%d", i), 0, uint64(100+i), auction.Bidding, auction.Bid{Price: 1000})
		wg.Go(func() {
			<-start
			seqs[i], errs[i] = l.Commit(ctx, d)
		})
		wg.Go(func() {
			<-start
			_, others[i] = l.Commit(ctx, other)
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Errorf("writers %d and %d both committed", winner, i)
			}
			winner = i
		case !errors.Is(err, jetstream.ErrConflict):
			t.Errorf("writer %d: err = %v, want ErrConflict", i, err)
		}
		if others[i] != nil {
			t.Errorf("writer for another auction %d: %v", i, others[i])
		}
	}
	if winner < 0 {
		t.Fatal("no writer committed")
	}
	if n := decisionCount(t, ctx, l, item); n != 1 {
		t.Errorf("%d decisions stored, want 1", n)
	}
	got, err := l.LastDecision(ctx, item)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != seqs[winner] || got.InputSeq != uint64(100+winner) || got.Send[0].Price != int64(1000+winner) {
		t.Errorf("LastDecision = %+v, want the winner's (seq %d, input %d)", got, seqs[winner], 100+winner)
	}
}

func TestLastDecisionNotFound(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	if _, err := l.LastDecision(ctx, "nobody"); !errors.Is(err, jetstream.ErrNotFound) {
		t.Errorf("empty log: err = %v, want ErrNotFound", err)
	}
	// Inputs alone are no decision, nor is another auction's decision, even
	// one whose id starts with this one's.
	appendInput(t, ctx, l, messages.Subject("item-1", messages.KindCmd, messages.TypeStart), messages.NewStart("item-1", 5))
	appendInput(t, ctx, l, messages.Subject("item-1", messages.KindIn, messages.TypePrice), messages.NewPrice("item-1", 1, 1, "x", false))
	commit(t, ctx, l, decision(t, "item-10", 0, 1, auction.Joining, auction.Join{}))
	if _, err := l.LastDecision(ctx, "item-1"); !errors.Is(err, jetstream.ErrNotFound) {
		t.Errorf("item without decisions: err = %v, want ErrNotFound", err)
	}
}

// decisionSeqs maps each item to the sequence of its decision in ds, and
// fails the test on an item listed twice.
func decisionSeqs(t *testing.T, ds []jetstream.StoredDecision) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, d := range ds {
		if _, dup := out[d.Item]; dup {
			t.Errorf("%s listed twice", d.Item)
		}
		out[d.Item] = d.Seq
	}
	return out
}

func TestDecisions(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log

	got, err := l.Decisions(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty log: Decisions = %+v, %v", got, err)
	}
	appendInput(t, ctx, l, messages.Subject("a", messages.KindCmd, messages.TypeStart), messages.NewStart("a", 5))
	if got, err := l.Decisions(ctx); err != nil || len(got) != 0 {
		t.Fatalf("log without decisions: Decisions = %+v, %v", got, err)
	}

	// Several auctions, some with several decisions of several types: only
	// the last counts.
	type last struct {
		seq, input uint64
		typ        string
	}
	want := map[string]last{}
	steps := []struct {
		item  string
		state auction.State
		outs  []auction.Output
	}{
		{"a", auction.Joining, []auction.Output{auction.Join{}}},
		{"b", auction.Joining, []auction.Output{auction.Join{}}},
		{"c", auction.Stopped, nil},
		{"b", auction.Bidding, []auction.Output{auction.Bid{Price: 10}}},
		{"a", auction.Bidding, []auction.Output{auction.Bid{Price: 10}}},
		{"b", auction.Winning, nil},
		{"a", auction.Bidding, []auction.Output{auction.Bid{Price: 20}}},
	}
	for i, s := range steps {
		d := decision(t, s.item, want[s.item].seq, uint64(1000+i), s.state, s.outs...)
		want[s.item] = last{commit(t, ctx, l, d), uint64(1000 + i), d.Event.Type}
	}
	got, err = l.Decisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Decisions = %+v, want %d", got, len(want))
	}
	for _, d := range got {
		if w := want[d.Item]; d.Seq != w.seq || d.InputSeq != w.input || d.Type != w.typ {
			t.Errorf("decision of %s = %+v, want %+v", d.Item, d, w)
		}
	}
}

// Decisions reads, per auction, the latest over all its decision
// subjects, whatever their order; inputs are not decisions.
func TestDecisionsTakeTheLatestOfEachAuction(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	check := func(want map[string]uint64) {
		t.Helper()
		got, err := l.Decisions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if seqs := decisionSeqs(t, got); !maps.Equal(seqs, want) {
			t.Errorf("Decisions = %v, want %v", seqs, want)
		}
	}
	check(map[string]uint64{})
	appendInput(t, ctx, l, messages.Subject("a", messages.KindCmd, messages.TypeStart), messages.NewStart("a", 5))
	check(map[string]uint64{})
	a1 := commit(t, ctx, l, decision(t, "a", 0, 1, auction.Joining, auction.Join{}))
	check(map[string]uint64{"a": a1})
	b1 := commit(t, ctx, l, decision(t, "b", 0, 2, auction.Bidding, auction.Bid{Price: 5}))
	a2 := commit(t, ctx, l, decision(t, "a", a1, 3, auction.Bidding, auction.Bid{Price: 5}))
	check(map[string]uint64{"a": a2, "b": b1}) // a: dec.bid after dec.join
	a3 := commit(t, ctx, l, decision(t, "a", a2, 4, auction.Winning))
	check(map[string]uint64{"a": a3, "b": b1}) // a: dec.state after dec.bid
	b2 := commit(t, ctx, l, decision(t, "b", b1, 5, auction.Lost))
	c1 := commit(t, ctx, l, decision(t, "c", 0, 6, auction.Joining, auction.Join{}))
	check(map[string]uint64{"a": a3, "b": b2, "c": c1})
	a4 := commit(t, ctx, l, decision(t, "a", a3, 7, auction.Bidding, auction.Bid{Price: 9}))
	appendInput(t, ctx, l, messages.Subject("d", messages.KindCmd, messages.TypeStart), messages.NewStart("d", 5))
	check(map[string]uint64{"a": a4, "b": b2, "c": c1}) // a: dec.bid again, after dec.state
}

// Recovery reads one message per auction and decision subject, for more
// auctions than one multi-last request could answer (1,024 subjects).
func TestDecisionsManyAuctions(t *testing.T) {
	ctx := testContextFor(t, 2*time.Minute)
	l := testkit.StartNATS(t).Log
	const auctions = 2100 // 2100 dec.join + 1050 dec.bid, then 700 dec.state: 4 requests' worth

	item := func(i int) string { return fmt.Sprintf("item-%04d", i) }
	last := map[string]uint64{}
	begin := time.Now()
	for i := range auctions {
		last[item(i)] = commit(t, ctx, l, decision(t, item(i), 0, uint64(2*i+1), auction.Joining, auction.Join{}))
		if i%2 == 0 {
			last[item(i)] = commit(t, ctx, l, decision(t, item(i), last[item(i)], uint64(2*i+2), auction.Bidding, auction.Bid{Price: 10}))
		}
	}
	// A newer decision, on another subject, of every third auction, and
	// a new auction.
	for i := 0; i < auctions; i += 3 {
		last[item(i)] = commit(t, ctx, l, decision(t, item(i), last[item(i)], uint64(10_000+i), auction.Winning))
	}
	last[item(auctions)] = commit(t, ctx, l, decision(t, item(auctions), 0, 20_000, auction.Joining, auction.Join{}))
	t.Logf("%d decisions committed in %s", subjectCount(t, ctx, l, messages.DecisionFilter("*")), time.Since(begin).Round(time.Millisecond))

	check := func(name string, got []jetstream.StoredDecision, err error, want map[string]uint64) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		seqs := decisionSeqs(t, got)
		if len(seqs) != len(want) {
			t.Errorf("%s: %d auctions, want %d", name, len(seqs), len(want))
		}
		wrong := 0
		for it, w := range want {
			if seqs[it] != w {
				if wrong++; wrong <= 5 {
					t.Errorf("%s: %s at %d, want %d", name, it, seqs[it], w)
				}
			}
		}
		if wrong > 5 {
			t.Errorf("%s: %d auctions wrong in all", name, wrong)
		}
	}
	begin = time.Now()
	got, err := l.Decisions(ctx)
	t.Logf("Decisions: %d auctions in %s", len(got), time.Since(begin).Round(time.Millisecond))
	check("Decisions", got, err, last)
}

// A stream at its MaxBytes refuses appends and commits with ErrFull (not
// ErrConflict: the sniper must hold the input, not re-decide), stores
// nothing, and takes the same decision once there is room again.
func TestFullLog(t *testing.T) {
	ctx := testContext(t)
	n := testkit.StartNATS(t)
	l, err := jetstream.Open(ctx, n.Conn, jetstream.StreamConfig{MaxBytes: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	const item = "item-full"
	startSeq := appendInput(t, ctx, l, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, 1100))
	fence := commit(t, ctx, l, decision(t, item, 0, startSeq, auction.Joining, auction.Join{}))

	priceSubject := messages.Subject(item, messages.KindIn, messages.TypePrice)
	var lastInput uint64
	for i := 0; ; i++ {
		if i == 1000 {
			t.Fatalf("%d appends to a stream of 4 KiB all succeeded", i)
		}
		seq, err := l.Append(ctx, priceSubject, messages.NewPrice(item, int64(1000+i), 10, "other", false))
		if err != nil {
			if !errors.Is(err, jetstream.ErrFull) {
				t.Fatalf("append %d to a full stream: %v, want ErrFull", i, err)
			}
			t.Logf("append %d refused: %v", i, err)
			break
		}
		lastInput = seq
	}
	msgs, last := streamState(t, ctx, l)

	d := decision(t, item, fence, lastInput, auction.Bidding, auction.Bid{Price: 1098})
	_, err = l.Commit(ctx, d)
	if !errors.Is(err, jetstream.ErrFull) || errors.Is(err, jetstream.ErrConflict) {
		t.Fatalf("commit to a full stream: %v, want ErrFull", err)
	}
	unchanged(t, ctx, l, "commit to a full stream", msgs, last)

	// Room again (the cap lifted): the same decision commits, its id was
	// not taken by the refused write.
	if _, err := jetstream.Open(ctx, n.Conn, jetstream.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	seq := commit(t, ctx, l, d)
	checkStoredDecision(t, ctx, l, seq, d)
}

func TestHistory(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	const item = "item-h"

	if got, err := l.History(ctx, item); err != nil || len(got) != 0 {
		t.Fatalf("empty log: History = %+v, %v", got, err)
	}

	type entry struct {
		subject string
		payload any
	}
	var want []entry
	add := func(it, subject string, payload any) uint64 {
		seq := appendInput(t, ctx, l, subject, payload)
		if it == item {
			want = append(want, entry{subject, payload})
		}
		return seq
	}
	startSeq := add(item, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, 1100))
	add("other", messages.Subject("other", messages.KindCmd, messages.TypeStart), messages.NewStart("other", 1))
	d := decision(t, item, 0, startSeq, auction.Joining, auction.Join{})
	decSeq := commit(t, ctx, l, d)
	want = append(want, entry{messages.DecisionSubject(item, messages.TypeJoin), d.Event})
	commit(t, ctx, l, decision(t, "other", 0, startSeq+1, auction.Joining, auction.Join{}))
	priceSeq := add(item, messages.Subject(item, messages.KindIn, messages.TypePrice), messages.NewPrice(item, 1000, 98, "other", false))
	add("item-h2", messages.Subject("item-h2", messages.KindIn, messages.TypeClose), messages.NewClose("item-h2")) // a prefix, not the item
	add(item, messages.Subject(item, messages.KindOut, messages.TypeSent), messages.SentEvent{Type: messages.TypeSent, Item: item, OutSeq: decSeq, Body: "join"})
	add(item, messages.Subject(item, messages.KindIn, messages.TypeClose), messages.NewClose(item))

	got, err := l.History(ctx, item)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("History has %d records, want %d: %+v", len(got), len(want), got)
	}
	for i, r := range got {
		if i > 0 && r.Seq <= got[i-1].Seq {
			t.Errorf("record %d seq %d after %d", i, r.Seq, got[i-1].Seq)
		}
		data, _ := json.Marshal(want[i].payload)
		if r.Subject != want[i].subject || string(r.Data) != string(data) {
			t.Errorf("record %d = %s %s, want %s %s", i, r.Subject, r.Data, want[i].subject, data)
		}
		if r.Time.IsZero() {
			t.Errorf("record %d has no time", i)
		}
	}
	if got[0].Seq != startSeq || got[1].Seq != decSeq {
		t.Errorf("history starts at %d, %d; want %d, %d", got[0].Seq, got[1].Seq, startSeq, decSeq)
	}

	upTo, err := l.HistoryUpTo(ctx, item, priceSeq)
	if err != nil {
		t.Fatal(err)
	}
	if len(upTo) != 3 || upTo[2].Seq != priceSeq {
		t.Errorf("HistoryUpTo(%d) = %+v, want the first 3 records", priceSeq, upTo)
	}
	// A sequence between two of the item's messages stops before the later one.
	upTo, err = l.HistoryUpTo(ctx, item, priceSeq+1)
	if err != nil || len(upTo) != 3 {
		t.Errorf("HistoryUpTo(%d) = %+v, %v, want 3 records", priceSeq+1, upTo, err)
	}
	upTo, err = l.HistoryUpTo(ctx, item, startSeq)
	if err != nil || len(upTo) != 1 || upTo[0].Seq != startSeq {
		t.Errorf("HistoryUpTo(%d) = %+v, %v, want the start only", startSeq, upTo, err)
	}
	upTo, err = l.HistoryUpTo(ctx, item, got[len(got)-1].Seq+100)
	if err != nil || len(upTo) != len(got) {
		t.Errorf("HistoryUpTo past the end = %d records, %v, want %d", len(upTo), err, len(got))
	}
}

// SentUpTo is, per auction, the highest decision recorded as sent or
// given up.
func TestSentUpTo(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	if got, err := l.SentUpTo(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty log: SentUpTo = %v, %v", got, err)
	}
	sent := func(item string, outSeq uint64) {
		appendInput(t, ctx, l, messages.Subject(item, messages.KindOut, messages.TypeSent), messages.SentEvent{Type: messages.TypeSent, Item: item, OutSeq: outSeq, Body: "b"})
	}
	undelivered := func(item string, outSeq uint64) {
		appendInput(t, ctx, l, messages.Subject(item, messages.KindOut, messages.TypeUndelivered), messages.UndeliveredEvent{Type: messages.TypeUndelivered, Item: item, OutSeq: outSeq, Body: "b", Reason: "r"})
	}
	commit(t, ctx, l, decision(t, "d", 0, 1, auction.Joining, auction.Join{})) // decided, not sent
	sent("a", 3)
	sent("a", 7)
	undelivered("b", 4)
	sent("c", 9)
	undelivered("c", 12)
	sent("b", 10)
	undelivered("a", 5) // older than a's last sent
	got, err := l.SentUpTo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]uint64{"a": 7, "b": 10, "c": 12}; !maps.Equal(got, want) {
		t.Errorf("SentUpTo = %v, want %v", got, want)
	}
}

func TestRestartKeepsTheLog(t *testing.T) {
	ctx := testContext(t)
	n := testkit.StartNATS(t)
	const item = "item-r"

	startSeq := appendInput(t, ctx, n.Log, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, 1100))
	d := decision(t, item, 0, startSeq, auction.Joining, auction.Join{})
	decSeq := commit(t, ctx, n.Log, d)
	before, err := n.Log.History(ctx, item)
	if err != nil {
		t.Fatal(err)
	}
	dir := n.DataDir
	n.Stop()

	n2 := testkit.StartNATSIn(t, dir)
	after, err := n2.Log.History(ctx, item)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) || len(after) != 2 {
		t.Fatalf("after restart %d records, before %d", len(after), len(before))
	}
	for i := range after {
		if after[i].Seq != before[i].Seq || after[i].Subject != before[i].Subject || string(after[i].Data) != string(before[i].Data) {
			t.Errorf("record %d changed: %+v -> %+v", i, before[i], after[i])
		}
	}
	got, err := n2.Log.LastDecision(ctx, item)
	if err != nil || got.Seq != decSeq || !reflect.DeepEqual(got.DecisionEvent, d.Event) {
		t.Errorf("LastDecision after restart = %+v, %v", got, err)
	}
	all, err := n2.Log.Decisions(ctx)
	if err != nil || len(all) != 1 || all[0].Seq != decSeq {
		t.Errorf("Decisions after restart = %+v, %v", all, err)
	}
	// The fence survives: a stale writer is still refused, and so is a
	// retry of the stored decision (its id is remembered); the right one
	// goes through.
	if _, err := n2.Log.Commit(ctx, decision(t, item, 0, startSeq+10, auction.Bidding)); !errors.Is(err, jetstream.ErrConflict) {
		t.Errorf("stale fence after restart: %v", err)
	}
	d.Fence = decSeq
	if _, err := n2.Log.Commit(ctx, d); !errors.Is(err, jetstream.ErrConflict) {
		t.Errorf("retry of a stored decision after restart: %v", err)
	}
	if _, err := n2.Log.Commit(ctx, decision(t, item, decSeq, startSeq+10, auction.Bidding)); err != nil {
		t.Errorf("commit after restart: %v", err)
	}
	// And so does de-duplication of appends.
	seq, err := n2.Log.Append(ctx, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, 1), jetstream.FirstOfSubject())
	if !errors.Is(err, jetstream.ErrExists) {
		t.Errorf("second start after restart: seq %d, err %v", seq, err)
	}
}

func TestAvailable(t *testing.T) {
	n := testkit.StartNATS(t)
	l := n.Log
	if err := l.Available(); err != nil {
		t.Fatalf("connected: Available = %v", err)
	}
	n.Stop()
	if err := l.Available(); !errors.Is(err, jetstream.ErrUnavailable) {
		t.Errorf("closed: Available = %v, want ErrUnavailable", err)
	}
}

// A single server cannot hold three replicas: asking an existing R1
// stream for them fails with an error that names both numbers.
func TestOpenReportsAReplicaCountTheServerCannotMake(t *testing.T) {
	ctx := testContext(t)
	n := testkit.StartNATS(t)
	_, err := jetstream.Open(ctx, n.Conn, jetstream.StreamConfig{Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "has 1 replicas and --replicas asks for 3") {
		t.Fatalf("Open with --replicas 3 on one server: %v, want an error naming 1 and 3", err)
	}
}
