package actors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"sniper/actors"
	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
)

func startSystem(t *testing.T, n *testkit.NATS, hook actors.FaultHook) *actors.System {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sys, err := actors.StartSystem(ctx, actors.Deps{Log: n.Log, Logger: testkit.Logger(t), Fault: hook})
	if err != nil {
		t.Fatalf("start actors: %v", err)
	}
	t.Cleanup(func() { stopSystem(sys) })
	return sys
}

func appendInput(t *testing.T, log *jetstream.Log, item, kind, typ string, payload any) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	seq, err := log.Append(ctx, messages.Subject(item, kind, typ), payload)
	if err != nil {
		t.Fatalf("append %s %s: %v", item, typ, err)
	}
	return seq
}

func start(t *testing.T, log *jetstream.Log, item string, stop int64) uint64 {
	return appendInput(t, log, item, messages.KindCmd, messages.TypeStart, messages.NewStart(item, stop))
}

func price(t *testing.T, log *jetstream.Log, item string, p, inc int64, bidder string, fromSniper bool) uint64 {
	return appendInput(t, log, item, messages.KindIn, messages.TypePrice, messages.NewPrice(item, p, inc, bidder, fromSniper))
}

func closeAuction(t *testing.T, log *jetstream.Log, item string) uint64 {
	return appendInput(t, log, item, messages.KindIn, messages.TypeClose, messages.NewClose(item))
}

func history(t *testing.T, log *jetstream.Log, item string) []jetstream.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	recs, err := log.History(ctx, item)
	if err != nil {
		t.Fatalf("history of %s: %v", item, err)
	}
	return recs
}

// decisions returns the auction's decisions in log order.
// stopSystem stops sys as the app does, with the default drain grace.
func stopSystem(sys *actors.System) {
	ctx, cancel := context.WithTimeout(context.Background(), actors.DefaultDrainGrace)
	defer cancel()
	sys.Stop(ctx)
}

func decisions(t *testing.T, log *jetstream.Log, item string) []messages.DecisionEvent {
	t.Helper()
	var out []messages.DecisionEvent
	for _, r := range history(t, log, item) {
		if _, kind, _, _ := messages.ParseSubject(r.Subject); kind != messages.KindDec {
			continue
		}
		var s messages.DecisionEvent
		if err := json.Unmarshal(r.Data, &s); err != nil {
			t.Fatalf("decode decision %d: %v", r.Seq, err)
		}
		out = append(out, s)
	}
	return out
}

// bids returns the prices of the auction's bid decisions, in log order.
func bids(t *testing.T, log *jetstream.Log, item string) []int64 {
	t.Helper()
	var out []int64
	for _, d := range decisions(t, log, item) {
		for _, r := range d.Send {
			if r.Type == messages.TypeBid {
				out = append(out, r.Price)
			}
		}
	}
	return out
}

func count(recs []jetstream.Record, subject string) int {
	n := 0
	for _, r := range recs {
		if r.Subject == subject {
			n++
		}
	}
	return n
}

// waitDecided waits until the auction's last decision has decided seq.
func waitDecided(t *testing.T, log *jetstream.Log, item string, seq uint64) messages.DecisionEvent {
	t.Helper()
	var last jetstream.StoredDecision
	testkit.Eventually(t, 10*time.Second, func() bool {
		s, err := log.LastDecision(context.Background(), item)
		last = s
		return err == nil && s.InputSeq >= seq
	}, "input %d of %s never decided (last decision %+v)", seq, item, &last)
	return last.DecisionEvent
}

func TestStartJoinsAndBids(t *testing.T) {
	n := testkit.StartNATS(t)
	startSystem(t, n, nil)
	const item = "item-54321"

	seq := start(t, n.Log, item, 1100)
	s := waitDecided(t, n.Log, item, seq)
	if s.State != auction.Joining || s.StopPrice != 1100 || s.Type != messages.TypeJoin {
		t.Fatalf("after start: %+v, want a join decision, Joining with stop price 1100", s)
	}
	recs := history(t, n.Log, item)
	if got := count(recs, messages.DecisionSubject(item, messages.TypeJoin)); got != 1 {
		t.Fatalf("dec.join messages = %d, want 1", got)
	}

	seq = price(t, n.Log, item, 1000, 98, "other bidder", false)
	s = waitDecided(t, n.Log, item, seq)
	if s.State != auction.Bidding || s.LastPrice != 1000 || s.LastBid != 1098 {
		t.Fatalf("after price: %+v, want Bidding(1000, 1098)", s)
	}
	// The decision is one message: the state and what to send, together.
	want := []messages.Request{{Type: messages.TypeBid, Price: 1098}}
	if s.Type != messages.TypeBid || !reflect.DeepEqual(s.Send, want) || s.InputSeq != seq {
		t.Fatalf("decision %+v, want a bid decision sending %v for input %d", s, want, seq)
	}
	if got := count(history(t, n.Log, item), messages.DecisionSubject(item, messages.TypeBid)); got != 1 {
		t.Fatalf("dec.bid messages = %d, want 1", got)
	}
}

// A sniper that fails right after its decision is in the log (before the
// checkpoint could move past the input) is given the input again by the
// restart from its last decision, and skips it.
func TestInputDecidedBeforeAFailureIsNotDecidedAgain(t *testing.T) {
	n := testkit.StartNATS(t)
	const item = "item-redeliver"
	var crashes atomic.Int32
	startSystem(t, n, func(point, it string) {
		if point == actors.FaultAfterCommit && it == item && crashes.Add(1) == 2 {
			panic("test crash between commit and the checkpoint")
		}
	})
	start(t, n.Log, item, 1100)
	seq := price(t, n.Log, item, 1000, 98, "other bidder", false)
	waitDecided(t, n.Log, item, seq)
	// A later input proves the sniper is past the failure.
	seq2 := price(t, n.Log, item, 1098, 2, "sniper", true)
	s := waitDecided(t, n.Log, item, seq2)
	if s.State != auction.Winning {
		t.Fatalf("state %s, want Winning", s.State)
	}
	if crashes.Load() < 2 {
		t.Fatalf("the crash never happened")
	}
	if got := bids(t, n.Log, item); len(got) != 1 {
		t.Fatalf("bids %v, want one (the price decided twice?)", got)
	}
	assertOneDecisionPerInput(t, n.Log, item)
}

// assertOneDecisionPerInput checks the exactly-once property on the log:
// every decision names a distinct input, in increasing order.
func assertOneDecisionPerInput(t *testing.T, log *jetstream.Log, item string) {
	t.Helper()
	seen := map[uint64]bool{}
	var last uint64
	for _, s := range decisions(t, log, item) {
		if s.Followup {
			continue // a group's decision for this member, on another's input
		}
		if seen[s.InputSeq] {
			t.Fatalf("input %d of %s decided twice", s.InputSeq, item)
		}
		if s.InputSeq < last {
			t.Fatalf("input %d decided after %d", s.InputSeq, last)
		}
		seen[s.InputSeq], last = true, s.InputSeq
	}
}

func TestPanickingSniperRetriesFromItsLastDecision(t *testing.T) {
	n := testkit.StartNATS(t)
	const item = "item-panic"
	var panics atomic.Int32
	startSystem(t, n, func(point, it string) {
		if point == actors.FaultBeforeDecide && it == item && panics.Add(1) == 3 {
			panic("test bug in the sniper")
		}
	})
	start(t, n.Log, item, 1100)
	price(t, n.Log, item, 1000, 98, "other bidder", false)
	seq := price(t, n.Log, item, 1098, 97, "sniper", true)
	closeSeq := closeAuction(t, n.Log, item)
	s := waitDecided(t, n.Log, item, closeSeq)
	if s.State != auction.Won || s.LastBid != 1098 {
		t.Fatalf("final %+v, want Won with last bid 1098", s)
	}
	if panics.Load() < 3 {
		t.Fatalf("the sniper never panicked")
	}
	_ = seq
	assertOneDecisionPerInput(t, n.Log, item)
	if got := len(decisions(t, n.Log, item)); got != 4 {
		t.Fatalf("%d decisions, want 4 (one per input)", got)
	}
}

func TestRestartOnTheSameDataDirContinues(t *testing.T) {
	dir := t.TempDir()
	n := testkit.StartNATSIn(t, dir)
	sys := startSystem(t, n, nil)
	items := []string{"item-a", "item-b", "item-c"}
	want := map[string]messages.DecisionEvent{}
	for i, item := range items {
		start(t, n.Log, item, 1000)
		seq := price(t, n.Log, item, int64(100*(i+1)), 10, "other", false)
		want[item] = waitDecided(t, n.Log, item, seq)
	}
	stopSystem(sys)
	n.Stop()

	n2 := testkit.StartNATSIn(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snaps, err := n2.Log.Decisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != len(items) {
		t.Fatalf("%d decisions after restart, want %d", len(snaps), len(items))
	}
	for _, s := range snaps {
		if !reflect.DeepEqual(s.DecisionEvent, want[s.Item]) {
			t.Fatalf("after restart %s is %+v, want %+v", s.Item, s.DecisionEvent, want[s.Item])
		}
	}
	startSystem(t, n2, nil)
	for _, item := range items {
		seq := price(t, n2.Log, item, 500, 5, "other", false)
		s := waitDecided(t, n2.Log, item, seq)
		if s.State != auction.Bidding || s.LastBid != 505 {
			t.Fatalf("%s after restart: %+v, want Bidding with bid 505", item, s)
		}
		if got := count(history(t, n2.Log, item), messages.DecisionSubject(item, messages.TypeJoin)); got != 1 {
			t.Fatalf("%s: %d joins, want 1 (restart re-joined)", item, got)
		}
	}
}

func TestTwoSystemsOnOneLogDecideEachInputOnce(t *testing.T) {
	n := testkit.StartNATS(t)
	startSystem(t, n, nil)
	startSystem(t, n, nil)
	const items = 4
	var last [items]uint64
	for i := range items {
		start(t, n.Log, fmt.Sprintf("race-%d", i), 1_000_000)
	}
	for p := int64(1); p <= 20; p++ {
		for i := range items {
			last[i] = price(t, n.Log, fmt.Sprintf("race-%d", i), p*10, 1, "other", false)
		}
	}
	for i := range items {
		item := fmt.Sprintf("race-%d", i)
		s := waitDecided(t, n.Log, item, last[i])
		if s.LastBid != 201 {
			t.Fatalf("%s: %+v, want last bid 201", item, s)
		}
		assertOneDecisionPerInput(t, n.Log, item)
		if got := bids(t, n.Log, item); len(got) != 20 {
			t.Fatalf("%s: bids %v, want 20", item, got)
		}
	}
}

func TestFinishedSniperIgnoresLaterInputs(t *testing.T) {
	n := testkit.StartNATS(t)
	sys := startSystem(t, n, nil)
	const item = "item-done"
	start(t, n.Log, item, 1100)
	seq := closeAuction(t, n.Log, item)
	if s := waitDecided(t, n.Log, item, seq); s.State != auction.Lost {
		t.Fatalf("state %s, want Lost", s.State)
	}
	// The finished sniper leaves memory.
	var counts actors.SniperCounts
	testkit.Eventually(t, 5*time.Second, func() bool {
		counts, _ = sys.Counts(context.Background())
		return counts.Live == 0 && counts.Finished == 1
	}, "a finished sniper is still live: %+v", &counts)
	price(t, n.Log, item, 2000, 1, "other", false)
	testkit.Consistently(t, 500*time.Millisecond, func() error {
		if got := len(decisions(t, n.Log, item)); got != 2 {
			return fmt.Errorf("a finished sniper decided a later input: %d decisions, want 2", got)
		}
		return nil
	})
	testkit.Eventually(t, 5*time.Second, func() bool { return sys.InputBacklog() == 0 },
		"the later input was never settled")
}
