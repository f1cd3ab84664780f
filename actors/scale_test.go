package actors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"sniper/actors"
	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
)

// publishAll appends the messages with async publishes: thousands of
// inputs in well under a second, as a busy auction house would make them.
func publishAll(t *testing.T, nc *nats.Conn, msgs []*nats.Msg) {
	t.Helper()
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		// A loaded machine acknowledges slowly: wait for room rather than
		// fail after nats.go's default 200 ms.
		if _, err := js.PublishMsgAsync(m, natsjs.WithStallWait(30*time.Second)); err != nil {
			t.Fatalf("publish %s: %v", m.Subject, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatalf("%d publishes not acknowledged within 30 s", js.PublishAsyncPending())
	}
}

func inputMsg(t *testing.T, item, kind, typ string, payload any) *nats.Msg {
	t.Helper()
	data, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Subject: messages.Subject(item, kind, typ), Data: data}
}

// quietSystem is startSystem without the per-decision debug lines, which
// thousands of auctions would turn into megabytes of test output.
func quietSystem(t *testing.T, n *testkit.NATS) *actors.System {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sys, err := actors.StartSystem(ctx, actors.Deps{Log: n.Log, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("start actors: %v", err)
	}
	t.Cleanup(func() { stopSystem(sys) })
	return sys
}

func consumerCount(t *testing.T, l *jetstream.Log) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	infos, err := l.ConsumerInfos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return len(infos)
}

// waitStates waits until every item's last decision satisfies ok.
func waitStates(t *testing.T, l *jetstream.Log, items []string, ok func(messages.DecisionEvent) bool) map[string]jetstream.StoredDecision {
	t.Helper()
	var got map[string]jetstream.StoredDecision
	var bad string
	testkit.Eventually(t, 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ds, err := l.Decisions(ctx)
		if err != nil {
			bad = err.Error()
			return false
		}
		got = map[string]jetstream.StoredDecision{}
		for _, d := range ds {
			got[d.Item] = d
		}
		for _, item := range items {
			if d, found := got[item]; !found || !ok(d.DecisionEvent) {
				bad = fmt.Sprintf("%s: %+v", item, d)
				return false
			}
		}
		return true
	}, "not every auction got there; first one behind: %s", &bad)
	return got
}

// Thousands of auctions, each started and bid in through the real log: all
// decided, and the server holds the same consumers as with five.
func TestThousandsOfAuctionsShareOneReader(t *testing.T) {
	n := testkit.StartNATS(t)
	sys := quietSystem(t, n)
	run := func(prefix string, count int) []string {
		items := make([]string, count)
		var msgs []*nats.Msg
		for i := range items {
			items[i] = fmt.Sprintf("%s-%d", prefix, i)
			msgs = append(msgs, inputMsg(t, items[i], messages.KindCmd, messages.TypeStart, messages.NewStart(items[i], 1_000_000)))
		}
		for _, item := range items {
			msgs = append(msgs, inputMsg(t, item, messages.KindIn, messages.TypePrice, messages.NewPrice(item, 100, 1, "other", false)))
		}
		publishAll(t, n.Conn, msgs)
		waitStates(t, n.Log, items, func(d messages.DecisionEvent) bool {
			return d.State == auction.Bidding && d.LastBid == 101 && d.Type == messages.TypeBid
		})
		return items
	}
	run("few", 5)
	withFive := consumerCount(t, n.Log)
	began := time.Now()
	const many = 5000
	run("many", many)
	t.Logf("%d auctions started and bid in %s", many, time.Since(began).Round(time.Millisecond))
	if got := consumerCount(t, n.Log); got != withFive {
		t.Errorf("%d consumers with %d auctions, %d with 5: consumers grow with auctions", got, many+5, withFive)
	}
	counts, err := sys.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if counts.Live != many+5 {
		t.Errorf("supervisor counts %+v, want %d live snipers", counts, many+5)
	}
	if b := sys.InputBacklog(); b != 0 {
		t.Errorf("%d inputs still undecided", b)
	}
}

// A restart reads the inputs again from its checkpoint; with the
// checkpoint rewound to the start of the log, every input is read again
// and every one is skipped as decided: the same states, no new decision.
func TestARestartFromAnOldCheckpointDecidesNothingTwice(t *testing.T) {
	dir := t.TempDir()
	n := testkit.StartNATSIn(t, dir)
	sys := quietSystem(t, n)
	const auctions, prices = 200, 5
	items := make([]string, auctions)
	var msgs []*nats.Msg
	for i := range items {
		items[i] = fmt.Sprintf("ckpt-%d", i)
		msgs = append(msgs, inputMsg(t, items[i], messages.KindCmd, messages.TypeStart, messages.NewStart(items[i], 1_000_000)))
	}
	// Interleaved, as auctions run side by side.
	for p := range prices {
		for _, item := range items {
			msgs = append(msgs, inputMsg(t, item, messages.KindIn, messages.TypePrice, messages.NewPrice(item, int64(100*(p+1)), 1, "other", false)))
		}
	}
	publishAll(t, n.Conn, msgs)
	done := func(d messages.DecisionEvent) bool { return d.LastBid == 100*prices+1 }
	before := waitStates(t, n.Log, items, done)
	stopSystem(sys)
	lastBefore, err := n.Log.LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	// Rewind the checkpoint to the beginning of the log.
	rewind, _ := json.Marshal(map[string]any{"type": "checkpoint", "follower": actors.InputFollowerName, "seq": 0})
	m := nats.NewMsg(jetstream.CheckpointSubject(actors.InputFollowerName))
	m.Data = rewind
	m.Header.Set(natsjs.MsgRollup, natsjs.MsgRollupSubject)
	js, _ := natsjs.New(n.Conn)
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	quietSystem(t, n)
	// One more price each proves the restarted snipers read up to the end.
	msgs = msgs[:0]
	for _, item := range items {
		msgs = append(msgs, inputMsg(t, item, messages.KindIn, messages.TypePrice, messages.NewPrice(item, 10_000, 1, "other", false)))
	}
	publishAll(t, n.Conn, msgs)
	after := waitStates(t, n.Log, items, func(d messages.DecisionEvent) bool { return d.LastBid == 10_001 })
	for _, item := range items {
		assertOneDecisionPerInput(t, n.Log, item)
		if got := len(decisions(t, n.Log, item)); got != 1+prices+1 {
			t.Fatalf("%s: %d decisions, want %d (one per input)", item, got, 1+prices+1)
		}
		if after[item].Seq <= lastBefore || before[item].Seq > lastBefore {
			t.Fatalf("%s: decisions at %d then %d around the restart at %d", item, before[item].Seq, after[item].Seq, lastBefore)
		}
	}
}

// Idle snipers are passivated (their actor stops, their last decision
// stays with the supervisor) and come back on their next input, deciding
// it from where they were: inputs that arrive while one is on its way out
// are neither lost nor reordered.
func TestIdleSnipersArePassivatedAndComeBack(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sys, err := actors.StartSystem(ctx, actors.Deps{Log: n.Log, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), PassivateAfter: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopSystem(sys) })
	const auctions, rounds = 50, 6
	items := make([]string, auctions)
	var msgs []*nats.Msg
	for i := range items {
		items[i] = fmt.Sprintf("nap-%d", i)
		msgs = append(msgs, inputMsg(t, items[i], messages.KindCmd, messages.TypeStart, messages.NewStart(items[i], 1_000_000)))
	}
	publishAll(t, n.Conn, msgs)
	passivated := 0
	for r := 1; r <= rounds; r++ {
		// Wait until most snipers have gone to sleep, then wake them all.
		testkit.Eventually(t, 10*time.Second, func() bool {
			c, _ := sys.Counts(context.Background())
			return c.Dormant >= auctions/2
		}, "idle snipers are never passivated")
		passivated++
		msgs = msgs[:0]
		for _, item := range items {
			// Two prices back to back: the second may arrive while the
			// sniper is being passivated after the first.
			msgs = append(msgs,
				inputMsg(t, item, messages.KindIn, messages.TypePrice, messages.NewPrice(item, int64(100*r), 1, "other", false)),
				inputMsg(t, item, messages.KindIn, messages.TypePrice, messages.NewPrice(item, int64(100*r+50), 1, "other", false)))
		}
		publishAll(t, n.Conn, msgs)
		waitStates(t, n.Log, items, func(d messages.DecisionEvent) bool { return d.LastBid == int64(100*r+51) })
	}
	for _, item := range items {
		assertOneDecisionPerInput(t, n.Log, item)
		if got := len(decisions(t, n.Log, item)); got != 1+2*rounds {
			t.Fatalf("%s: %d decisions, want %d", item, got, 1+2*rounds)
		}
	}
}
