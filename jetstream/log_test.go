package jetstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
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

// decision builds what the sniper commits after the input at inputSeq.
func decision(t *testing.T, item string, fence, inputSeq uint64, state auction.State, outs ...auction.Output) jetstream.Decision {
	t.Helper()
	out, err := messages.Outputs(item, inputSeq, outs)
	if err != nil {
		t.Fatal(err)
	}
	snap := auction.Snapshot{Item: item, State: state, LastPrice: 1000, LastBid: 1098, StopPrice: 1100}
	return jetstream.Decision{Item: item, Fence: fence, InputSeq: inputSeq, Snapshot: messages.NewSnapshot(snap, inputSeq), Outputs: out}
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

// subjectCount returns how many messages the stream holds on subject.
func subjectCount(t *testing.T, ctx context.Context, l *jetstream.Log, subject string) uint64 {
	t.Helper()
	info, err := l.Stream().Info(ctx, natsjs.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
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

func TestCommit(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	const item = "item-54321"

	startSeq := appendInput(t, ctx, l, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, 1100))
	d := decision(t, item, 0, startSeq, auction.Joining, auction.Join{}, auction.Bid{Price: 1098})
	snapSeq, err := l.Commit(ctx, d)
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	if snapSeq != startSeq+1 {
		t.Errorf("snapshot at %d, want %d (right after the input)", snapSeq, startSeq+1)
	}

	// Snapshot first, then the outputs, consecutively, each with its id.
	want := []struct {
		subject string
		payload any
	}{
		{messages.Subject(item, messages.KindState, messages.TypeSnapshot), d.Snapshot},
		{messages.Subject(item, messages.KindOut, messages.TypeJoin), messages.JoinRequest{Type: "join", Item: item, InputSeq: startSeq}},
		{messages.Subject(item, messages.KindOut, messages.TypeBid), messages.BidRequest{Type: "bid", Item: item, Price: 1098, InputSeq: startSeq}},
	}
	for i, w := range want {
		seq := snapSeq + uint64(i)
		raw, err := l.Stream().GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		if raw.Subject != w.subject {
			t.Errorf("message %d on %q, want %q", seq, raw.Subject, w.subject)
		}
		wantID := fmt.Sprintf("%s/%d/%d", item, startSeq, i)
		if id := raw.Header.Get(natsjs.MsgIDHeader); id != wantID {
			t.Errorf("message %d has id %q, want %q", seq, id, wantID)
		}
		wantData, _ := json.Marshal(w.payload)
		if string(raw.Data) != string(wantData) {
			t.Errorf("message %d is %s, want %s", seq, raw.Data, wantData)
		}
	}
	if _, last := streamState(t, ctx, l); last != snapSeq+2 {
		t.Errorf("stream ends at %d, want %d", last, snapSeq+2)
	}

	got, err := l.LastSnapshot(ctx, item)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != snapSeq || got.SnapshotEvent != d.Snapshot {
		t.Errorf("LastSnapshot = %+v, want seq %d %+v", got, snapSeq, d.Snapshot)
	}
}

func TestCommitWithoutOutputs(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	stopSeq := appendInput(t, ctx, l, messages.Subject("i", messages.KindCmd, messages.TypeStop), messages.NewStop("i"))
	snapSeq, err := l.Commit(ctx, decision(t, "i", 0, stopSeq, auction.Stopped))
	if err != nil {
		t.Fatal(err)
	}
	if _, last := streamState(t, ctx, l); last != snapSeq {
		t.Errorf("snapshot at %d, stream ends at %d", snapSeq, last)
	}
	raw, err := l.Stream().GetMsg(ctx, snapSeq)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Subject != "sniper.i.state.snapshot" || raw.Header.Get(natsjs.MsgIDHeader) != fmt.Sprintf("i/%d/0", stopSeq) {
		t.Errorf("stored %s with id %q", raw.Subject, raw.Header.Get(natsjs.MsgIDHeader))
	}
}

func TestCommitFence(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	const item = "item-1"
	priceSubject := messages.Subject(item, messages.KindIn, messages.TypePrice)

	startSeq := appendInput(t, ctx, l, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, 1100))
	snap1, err := l.Commit(ctx, decision(t, item, 0, startSeq, auction.Joining, auction.Join{}))
	if err != nil {
		t.Fatal(err)
	}

	// A second writer that still believes there is no snapshot is refused,
	// and none of its batch is stored.
	p1 := appendInput(t, ctx, l, priceSubject, messages.NewPrice(item, 1000, 98, "other", false))
	msgsBefore, lastBefore := streamState(t, ctx, l)
	_, err = l.Commit(ctx, decision(t, item, 0, p1, auction.Bidding, auction.Bid{Price: 1098}))
	if !errors.Is(err, jetstream.ErrConflict) {
		t.Fatalf("stale fence: err = %v, want ErrConflict", err)
	}
	if msgs, last := streamState(t, ctx, l); msgs != msgsBefore || last != lastBefore {
		t.Errorf("stale commit stored something: %d msgs up to %d, was %d up to %d", msgs, last, msgsBefore, lastBefore)
	}

	// A fence on a snapshot that never existed is refused too.
	if _, err := l.Commit(ctx, decision(t, item, snap1+100, p1, auction.Bidding, auction.Bid{Price: 1098})); !errors.Is(err, jetstream.ErrConflict) {
		t.Fatalf("future fence: err = %v, want ErrConflict", err)
	}

	// New inputs of the same auction landing meanwhile do not move the
	// fence: it sits on the snapshot subject only.
	p2 := appendInput(t, ctx, l, priceSubject, messages.NewPrice(item, 1098, 97, "sniper", true))
	appendInput(t, ctx, l, messages.Subject(item, messages.KindIn, messages.TypeClose), messages.NewClose(item))
	d2 := decision(t, item, snap1, p1, auction.Bidding, auction.Bid{Price: 1098})
	snap2, err := l.Commit(ctx, d2)
	if err != nil {
		t.Fatalf("commit on the right fence after new inputs: %v", err)
	}
	if snap2 <= p2 {
		t.Errorf("snapshot at %d, before the input at %d", snap2, p2)
	}
	got, err := l.LastSnapshot(ctx, item)
	if err != nil || got.Seq != snap2 || got.InputSeq != p1 {
		t.Errorf("LastSnapshot = %+v, %v; want seq %d for input %d", got, err, snap2, p1)
	}

	// Re-committing the stored decision (a retry after a lost ack, with a
	// fence that is fresh again) is refused: its ids are already stored.
	msgsBefore, lastBefore = streamState(t, ctx, l)
	d2.Fence = snap2
	if _, err := l.Commit(ctx, d2); !errors.Is(err, jetstream.ErrConflict) {
		t.Fatalf("re-commit: err = %v, want ErrConflict", err)
	}
	if msgs, last := streamState(t, ctx, l); msgs != msgsBefore || last != lastBefore {
		t.Errorf("re-commit stored something: %d msgs up to %d, was %d up to %d", msgs, last, msgsBefore, lastBefore)
	}

	// The next decision on the latest fence goes through.
	d3 := decision(t, item, snap2, p2, auction.Winning)
	snap3, err := l.Commit(ctx, d3)
	if err != nil {
		t.Fatalf("next decision: %v", err)
	}
	if snap3 <= snap2 {
		t.Errorf("snapshot %d after %d", snap3, snap2)
	}
	if n := subjectCount(t, ctx, l, messages.Subject(item, messages.KindState, messages.TypeSnapshot)); n != 3 {
		t.Errorf("%d snapshots stored, want 3", n)
	}
	if n := subjectCount(t, ctx, l, messages.Subject(item, messages.KindOut, messages.TypeBid)); n != 1 {
		t.Errorf("%d bids stored, want 1", n)
	}
}

// Several writers deciding for the same auction from the same snapshot at
// once: the fence lets exactly one through.
func TestCommitRace(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	const item = "item-race"
	const writers = 8

	start := make(chan struct{})
	errs := make([]error, writers)
	seqs := make([]uint64, writers)
	var wg sync.WaitGroup
	for i := range writers {
		d := decision(t, item, 0, uint64(100+i), auction.Bidding, auction.Bid{Price: int64(1000 + i)})
		wg.Go(func() {
			<-start
			seqs[i], errs[i] = l.Commit(ctx, d)
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
	}
	if winner < 0 {
		t.Fatal("no writer committed")
	}
	if n := subjectCount(t, ctx, l, messages.Subject(item, messages.KindState, messages.TypeSnapshot)); n != 1 {
		t.Errorf("%d snapshots stored, want 1", n)
	}
	if n := subjectCount(t, ctx, l, messages.Subject(item, messages.KindOut, messages.TypeBid)); n != 1 {
		t.Errorf("%d bids stored, want 1", n)
	}
	got, err := l.LastSnapshot(ctx, item)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != seqs[winner] || got.InputSeq != uint64(100+winner) {
		t.Errorf("LastSnapshot = %+v, want the winner's (seq %d, input %d)", got, seqs[winner], 100+winner)
	}
}

func TestLastSnapshotNotFound(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	if _, err := l.LastSnapshot(ctx, "nobody"); !errors.Is(err, jetstream.ErrNotFound) {
		t.Errorf("empty log: err = %v, want ErrNotFound", err)
	}
	// Inputs alone are no snapshot.
	appendInput(t, ctx, l, messages.Subject("item-1", messages.KindCmd, messages.TypeStart), messages.NewStart("item-1", 5))
	if _, err := l.LastSnapshot(ctx, "item-1"); !errors.Is(err, jetstream.ErrNotFound) {
		t.Errorf("item without snapshot: err = %v, want ErrNotFound", err)
	}
}

func TestSnapshots(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log

	got, err := l.Snapshots(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty log: Snapshots = %+v, %v", got, err)
	}
	appendInput(t, ctx, l, messages.Subject("a", messages.KindCmd, messages.TypeStart), messages.NewStart("a", 5))
	if got, err := l.Snapshots(ctx); err != nil || len(got) != 0 {
		t.Fatalf("log without snapshots: Snapshots = %+v, %v", got, err)
	}

	// Several auctions, some with several snapshots: only the last counts.
	last := map[string]uint64{}
	fence := map[string]uint64{}
	for i, item := range []string{"a", "b", "c", "b", "a", "b"} {
		seq, err := l.Commit(ctx, decision(t, item, fence[item], uint64(1000+i), auction.Bidding))
		if err != nil {
			t.Fatalf("commit %d on %s: %v", i, item, err)
		}
		fence[item] = seq
		last[item] = uint64(1000 + i)
	}
	got, err = l.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(x, y jetstream.StoredSnapshot) int { return cmpString(x.Item, y.Item) })
	if len(got) != 3 {
		t.Fatalf("Snapshots = %+v, want 3", got)
	}
	for _, s := range got {
		if s.Seq != fence[s.Item] || s.InputSeq != last[s.Item] || s.Type != messages.TypeSnapshot {
			t.Errorf("snapshot of %s = %+v, want seq %d input %d", s.Item, s, fence[s.Item], last[s.Item])
		}
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestStartedItems(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	if got, err := l.StartedItems(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty log: StartedItems = %+v, %v", got, err)
	}
	for _, item := range []string{"x", "y", "z"} {
		appendInput(t, ctx, l, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, int64(len(item)*100)))
	}
	appendInput(t, ctx, l, messages.Subject("w", messages.KindCmd, messages.TypeStop), messages.NewStop("w"))
	got, err := l.StartedItems(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b messages.StartCommand) int { return cmpString(a.Item, b.Item) })
	want := []messages.StartCommand{messages.NewStart("x", 100), messages.NewStart("y", 100), messages.NewStart("z", 100)}
	if !slices.Equal(got, want) {
		t.Errorf("StartedItems = %+v, want %+v", got, want)
	}
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
	if _, err := l.Commit(ctx, d); err != nil {
		t.Fatal(err)
	}
	want = append(want, entry{messages.Subject(item, messages.KindState, messages.TypeSnapshot), d.Snapshot}, entry{d.Outputs[0].Subject, d.Outputs[0].Payload})
	priceSeq := add(item, messages.Subject(item, messages.KindIn, messages.TypePrice), messages.NewPrice(item, 1000, 98, "other", false))
	add("item-h2", messages.Subject("item-h2", messages.KindIn, messages.TypeClose), messages.NewClose("item-h2")) // a prefix, not the item
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
	if got[0].Seq != startSeq {
		t.Errorf("history starts at %d, want %d", got[0].Seq, startSeq)
	}

	upTo, err := l.HistoryUpTo(ctx, item, priceSeq)
	if err != nil {
		t.Fatal(err)
	}
	if len(upTo) != 4 || upTo[3].Seq != priceSeq {
		t.Errorf("HistoryUpTo(%d) = %+v, want the first 4 records", priceSeq, upTo)
	}
	// A sequence between two of the item's messages stops before the later one.
	upTo, err = l.HistoryUpTo(ctx, item, priceSeq+1)
	if err != nil || len(upTo) != 4 {
		t.Errorf("HistoryUpTo(%d) = %+v, %v, want 4 records", priceSeq+1, upTo, err)
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

func TestRestartKeepsTheLog(t *testing.T) {
	ctx := testContext(t)
	n := testkit.StartNATS(t)
	const item = "item-r"

	startSeq := appendInput(t, ctx, n.Log, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, 1100))
	snapSeq, err := n.Log.Commit(ctx, decision(t, item, 0, startSeq, auction.Joining, auction.Join{}))
	if err != nil {
		t.Fatal(err)
	}
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
	if len(after) != len(before) || len(after) != 3 {
		t.Fatalf("after restart %d records, before %d", len(after), len(before))
	}
	for i := range after {
		if after[i].Seq != before[i].Seq || after[i].Subject != before[i].Subject || string(after[i].Data) != string(before[i].Data) {
			t.Errorf("record %d changed: %+v -> %+v", i, before[i], after[i])
		}
	}
	snap, err := n2.Log.LastSnapshot(ctx, item)
	if err != nil || snap.Seq != snapSeq || snap.InputSeq != startSeq {
		t.Errorf("LastSnapshot after restart = %+v, %v", snap, err)
	}
	started, err := n2.Log.StartedItems(ctx)
	if err != nil || len(started) != 1 || started[0] != messages.NewStart(item, 1100) {
		t.Errorf("StartedItems after restart = %+v, %v", started, err)
	}
	// The fence survives: a stale writer is still refused, the right one not.
	if _, err := n2.Log.Commit(ctx, decision(t, item, 0, startSeq+10, auction.Bidding)); !errors.Is(err, jetstream.ErrConflict) {
		t.Errorf("stale fence after restart: %v", err)
	}
	if _, err := n2.Log.Commit(ctx, decision(t, item, snapSeq, startSeq+10, auction.Bidding)); err != nil {
		t.Errorf("commit after restart: %v", err)
	}
	// And so does de-duplication of appends.
	seq, err := n2.Log.Append(ctx, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, 1), jetstream.FirstOfSubject())
	if !errors.Is(err, jetstream.ErrExists) {
		t.Errorf("second start after restart: seq %d, err %v", seq, err)
	}
}

// SnapshotsUpTo reads the log as it stood at a sequence: later snapshots
// and auctions started later are not in it.
func TestSnapshotsUpTo(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	appendInput(t, ctx, l, messages.Subject("a", messages.KindCmd, messages.TypeStart), messages.NewStart("a", 5))
	a1, err := l.Commit(ctx, decision(t, "a", 0, 1, auction.Joining))
	if err != nil {
		t.Fatal(err)
	}
	b1, err := l.Commit(ctx, decision(t, "b", 0, 2, auction.Joining))
	if err != nil {
		t.Fatal(err)
	}
	cut := b1
	a2, err := l.Commit(ctx, decision(t, "a", a1, 3, auction.Bidding))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Commit(ctx, decision(t, "c", 0, 4, auction.Joining)); err != nil {
		t.Fatal(err)
	}

	got, err := l.SnapshotsUpTo(ctx, cut)
	if err != nil {
		t.Fatal(err)
	}
	seqs := map[string]uint64{}
	for _, s := range got {
		seqs[s.Item] = s.Seq
	}
	if want := map[string]uint64{"a": a1, "b": b1}; !maps.Equal(seqs, want) {
		t.Errorf("SnapshotsUpTo(%d) = %v, want %v", cut, seqs, want)
	}
	got, err = l.SnapshotsUpTo(ctx, a1-1)
	if err != nil || len(got) != 0 {
		t.Errorf("SnapshotsUpTo before the first snapshot = %+v, %v", got, err)
	}
	got, err = l.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clear(seqs)
	for _, s := range got {
		seqs[s.Item] = s.Seq
	}
	if len(seqs) != 3 || seqs["a"] != a2 || seqs["b"] != b1 {
		t.Errorf("Snapshots = %v", seqs)
	}
}

// Recovery reads one snapshot per auction; the server answers at most 1024
// subjects per multi-last request, and more auctions than that must still
// be read, consistently as of the cut.
func TestSnapshotsManyAuctions(t *testing.T) {
	ctx := testContext(t)
	l := testkit.StartNATS(t).Log
	const auctions = 2100 // three requests' worth

	item := func(i int) string { return fmt.Sprintf("item-%04d", i) }
	snap := func(i int, inputSeq uint64) messages.SnapshotEvent {
		return messages.NewSnapshot(auction.Snapshot{Item: item(i), State: auction.Bidding}, inputSeq)
	}
	for i := range auctions {
		appendInput(t, ctx, l, messages.Subject(item(i), messages.KindCmd, messages.TypeStart), messages.NewStart(item(i), int64(i+1)))
		appendInput(t, ctx, l, messages.Subject(item(i), messages.KindState, messages.TypeSnapshot), snap(i, 1))
	}
	_, cut := streamState(t, ctx, l)
	// After the cut: a newer snapshot of every third auction, and a new one.
	for i := 0; i < auctions; i += 3 {
		appendInput(t, ctx, l, messages.Subject(item(i), messages.KindState, messages.TypeSnapshot), snap(i, 2))
	}
	appendInput(t, ctx, l, messages.Subject(item(auctions), messages.KindState, messages.TypeSnapshot), snap(auctions, 2))

	check := func(name string, got []jetstream.StoredSnapshot, err error, n int, inputSeq func(i int) uint64) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		byItem := map[string]uint64{}
		for _, s := range got {
			if _, dup := byItem[s.Item]; dup {
				t.Errorf("%s: %s twice", name, s.Item)
			}
			byItem[s.Item] = s.InputSeq
		}
		if len(byItem) != n {
			t.Fatalf("%s: %d auctions, want %d", name, len(byItem), n)
		}
		for i := range n {
			if got, want := byItem[item(i)], inputSeq(i); got != want {
				t.Errorf("%s: %s at input %d, want %d", name, item(i), got, want)
			}
		}
	}
	got, err := l.SnapshotsUpTo(ctx, cut)
	check("SnapshotsUpTo", got, err, auctions, func(int) uint64 { return 1 })
	got, err = l.Snapshots(ctx)
	check("Snapshots", got, err, auctions+1, func(i int) uint64 {
		if i%3 == 0 || i == auctions {
			return 2
		}
		return 1
	})
	starts, err := l.StartedItems(ctx)
	if err != nil || len(starts) != auctions {
		t.Errorf("StartedItems: %d commands, %v; want %d", len(starts), err, auctions)
	}
}
