package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
)

// candidate runs one instance's election on its own connection to n, and
// records its terms.
type candidate struct {
	name     string
	election *jetstream.Election
	leading  atomic.Int32 // terms running now
	terms    atomic.Int32 // terms begun
	stop     context.CancelFunc
	done     chan struct{}
	log      *jetstream.Log
}

func startCandidate(t *testing.T, n *testkit.NATS, name string, ttl time.Duration, running *atomic.Int32, overlap *atomic.Bool) *candidate {
	t.Helper()
	nc, err := n.Server.Connect(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := testContext(t)
	l, err := jetstream.Open(ctx, nc, jetstream.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := l.NewElection(ctx, jetstream.ElectionConfig{Instance: name, TTL: ttl, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := &candidate{name: name, election: e, done: make(chan struct{}), log: l}
	runCtx, stop := context.WithCancel(context.Background())
	c.stop = stop
	go func() {
		defer close(c.done)
		_ = e.Run(runCtx, func(ctx context.Context, _ jetstream.Term) {
			c.terms.Add(1)
			c.leading.Add(1)
			if running.Add(1) > 1 {
				overlap.Store(true)
			}
			<-ctx.Done()
			running.Add(-1)
			c.leading.Add(-1)
		})
	}()
	t.Cleanup(func() { stop(); <-c.done })
	return c
}

func activeOf(cs []*candidate) []string {
	var names []string
	for _, c := range cs {
		if c.leading.Load() > 0 {
			names = append(names, c.name)
		}
	}
	return names
}

// Candidates started at the same moment: exactly one leads, and the others
// know which. When it resigns (a graceful stop), another takes over at
// once, not after the TTL.
func TestElectionExactlyOneActive(t *testing.T) {
	n := testkit.StartNATS(t)
	var running atomic.Int32
	var overlap atomic.Bool
	const ttl = 2 * time.Second
	var cs []*candidate
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := startCandidate(t, n, fmt.Sprintf("instance-%d", i), ttl, &running, &overlap)
			mu.Lock()
			cs = append(cs, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	testkit.Eventually(t, 5*time.Second, func() bool { return len(activeOf(cs)) == 1 }, "no single active instance: %v", activeOf(cs))
	leader := activeOf(cs)[0]
	testkit.Eventually(t, 5*time.Second, func() bool {
		for _, c := range cs {
			if c.election.Status().Holder != leader {
				return false
			}
		}
		return true
	}, "not every instance knows that %s is active", leader)
	testkit.Consistently(t, 3*ttl/2, func() error {
		if a := activeOf(cs); len(a) != 1 || a[0] != leader {
			return fmt.Errorf("active instances %v, want only %s (the lease must be renewed, not lost)", a, leader)
		}
		return nil
	})

	var old *candidate
	for _, c := range cs {
		if c.name == leader {
			old = c
		}
	}
	resigned := time.Now()
	old.stop()
	<-old.done
	testkit.Eventually(t, ttl/2, func() bool { a := activeOf(cs); return len(a) == 1 && a[0] != leader },
		"nobody took over within %s of %s resigning", ttl/2, leader)
	t.Logf("took over %s after the resignation", time.Since(resigned).Round(time.Millisecond))
	if overlap.Load() {
		t.Error("two terms ran at once")
	}
}

// An active instance that dies without resigning (here: its connection
// cut, so it cannot renew) steps down by itself before its lease expires,
// and a standby takes over once it has: never two at once.
func TestElectionTakeoverAfterTheActiveDies(t *testing.T) {
	n := testkit.StartNATS(t)
	var running atomic.Int32
	var overlap atomic.Bool
	const ttl = 2 * time.Second
	a := startCandidate(t, n, "a", ttl, &running, &overlap)
	testkit.Eventually(t, 5*time.Second, func() bool { return a.leading.Load() == 1 }, "a never became active")
	b := startCandidate(t, n, "b", ttl, &running, &overlap)
	testkit.Eventually(t, 5*time.Second, func() bool { return b.election.Status().Holder == "a" }, "b does not see a as active")

	died := time.Now()
	cutOff(t, a.log)
	testkit.Eventually(t, ttl, func() bool { return a.leading.Load() == 0 }, "a kept leading without renewing its lease")
	stepped := time.Since(died)
	testkit.Eventually(t, 2*ttl, func() bool { return b.leading.Load() == 1 }, "b never took over")
	took := time.Since(died)
	t.Logf("a stepped down after %s, b took over after %s (TTL %s)", stepped.Round(time.Millisecond), took.Round(time.Millisecond), ttl)
	if took < ttl {
		t.Errorf("b took over %s after a's last renewal, before the lease's TTL (%s)", took, ttl)
	}
	if overlap.Load() {
		t.Error("two terms ran at once")
	}
}

// An instance restarted within its lease's TTL, under the same name, takes
// it back at once instead of waiting for it to expire.
func TestElectionRestartTakesItsOwnLeaseBack(t *testing.T) {
	n := testkit.StartNATS(t)
	var running atomic.Int32
	var overlap atomic.Bool
	const ttl = 10 * time.Second
	first := startCandidate(t, n, "same", ttl, &running, &overlap)
	testkit.Eventually(t, 5*time.Second, func() bool { return first.leading.Load() == 1 }, "never active")
	cutOff(t, first.log) // dies without resigning (its goroutines go on here, not in a crash)
	began := time.Now()
	again := startCandidate(t, n, "same", ttl, &running, &overlap)
	testkit.Eventually(t, ttl/5, func() bool { return again.leading.Load() == 1 }, "the restarted instance waited for its own lease")
	t.Logf("active again %s after the restart", time.Since(began).Round(time.Millisecond))
}

// cutOff closes l's connection, as a crash or a partition would, without
// the election resigning.
func cutOff(t *testing.T, l *jetstream.Log) {
	t.Helper()
	jetstream.CloseConnection(l)
}

// An instance that became active claims every unfinished auction: from
// then on a decision from the instance it replaced, which starts from the
// decision before the claim, is refused by the fence, though that instance
// was never told. Finished auctions are not claimed, nor those whose last
// decision is by the claiming instance (a restart).
func TestClaimFencesTheReplacedInstance(t *testing.T) {
	ctx := testContext(t)
	n := testkit.StartNATS(t)
	old := n.Log
	const live, done = "item-live", "item-done"
	startLive := appendInput(t, ctx, old, messages.Subject(live, messages.KindCmd, messages.TypeStart), messages.NewStart(live, 1100))
	liveDecision := commit(t, ctx, old, decision(t, live, 0, startLive, auction.Joining, auction.Join{}))
	startDone := appendInput(t, ctx, old, messages.Subject(done, messages.KindCmd, messages.TypeStart), messages.NewStart(done, 1100))
	commit(t, ctx, old, decision(t, done, 0, startDone, auction.Lost))

	nc, err := n.Server.Connect("new-active")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	fresh, err := jetstream.Open(ctx, nc, jetstream.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := fresh.Recover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The old instance decides once more between the new one's read and
	// its claim: the claim's fence sees it, and the claim is made on it.
	price := appendInput(t, ctx, old, messages.Subject(live, messages.KindIn, messages.TypePrice), messages.NewPrice(live, 1000, 98, "other", false))
	raced := commit(t, ctx, old, decision(t, live, liveDecision, price, auction.Bidding, auction.Bid{Price: 1098}))

	claimed, err := fresh.ClaimAll(ctx, rec.Decisions, "new-active", 7)
	if err != nil {
		t.Fatal(err)
	}
	bySeq := decisionSeqs(t, claimed)
	if bySeq[live] <= raced {
		t.Fatalf("claim of %s at %d, want after the old instance's last decision at %d", live, bySeq[live], raced)
	}
	last, err := fresh.LastDecision(ctx, live)
	if err != nil {
		t.Fatal(err)
	}
	if last.Type != messages.TypeClaim || last.By != "new-active" || last.InputSeq != price || last.State != auction.Bidding ||
		len(last.Send) != 1 || last.Send[0].Type != messages.TypeJoin {
		t.Errorf("claim = %+v, want the state after input %d unchanged, by new-active, sending JOIN", last.DecisionEvent, price)
	}
	if d, _ := fresh.LastDecision(ctx, done); d.Type == messages.TypeClaim {
		t.Errorf("the finished auction %s was claimed", done)
	}
	msgs, lastSeq := streamState(t, ctx, old)
	if _, err := fresh.ClaimAll(ctx, []jetstream.StoredDecision{last}, "new-active", 8); err != nil {
		t.Fatal(err)
	}
	unchanged(t, ctx, old, "claiming what this instance decided last", msgs, lastSeq)

	// The old instance, not knowing, decides its next input from its
	// last decision: refused.
	next := appendInput(t, ctx, old, messages.Subject(live, messages.KindIn, messages.TypePrice), messages.NewPrice(live, 1200, 98, "other", false))
	msgs, lastSeq = streamState(t, ctx, old)
	_, err = old.Commit(ctx, decision(t, live, raced, next, auction.Bidding, auction.Bid{Price: 1298}))
	if !errors.Is(err, jetstream.ErrConflict) {
		t.Fatalf("the replaced instance's decision after the claim: %v, want ErrConflict", err)
	}
	unchanged(t, ctx, old, "a refused decision", msgs, lastSeq)

	// Claiming again in the same term writes nothing new, even as
	// another instance's (the message id).
	again, err := fresh.ClaimAll(ctx, rec.Decisions, "new-active", 7)
	if err != nil {
		t.Fatal(err)
	}
	if got := decisionSeqs(t, again)[live]; got != bySeq[live] {
		t.Errorf("a second claim in the same term moved %s's last decision from %d to %d", live, bySeq[live], got)
	}
}

// StepDownFrom moves the leaders of the stream and of the lease bucket off
// the server named, and leaves a stream it does not lead alone.
func TestStepDownFromMovesTheLeadersAway(t *testing.T) {
	c := testkit.StartCluster(t, 3)
	ctx := testContextFor(t, 60*time.Second)
	nc, err := jetstream.Connect(ctx, c.URLs(), "step-down-test", jetstream.ClientAuth{}, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l, err := jetstream.Open(ctx, nc, jetstream.StreamConfig{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.NewElection(ctx, jetstream.ElectionConfig{Instance: "x", Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	const leaseStream = "KV_" + jetstream.LeaseBucket
	c.WaitStreamLeader(leaseStream, 30*time.Second)
	c.MoveLeaders(0, jetstream.StreamName)
	c.MoveLeaders(0, leaseStream)
	moved, err := l.StepDownFrom(ctx, c.Name(0))
	if err != nil || len(moved) != 2 {
		t.Fatalf("StepDownFrom(%s) = %v, %v; want both streams moved", c.Name(0), moved, err)
	}
	for _, stream := range []string{jetstream.StreamName, leaseStream} {
		testkit.Eventually(t, 30*time.Second, func() bool { lead := c.StreamLeader(stream); return lead >= 0 && lead != 0 },
			"%s is still led by %s", stream, c.Name(0))
	}
	if moved, err := l.StepDownFrom(ctx, c.Name(0)); err != nil || len(moved) != 0 {
		t.Errorf("StepDownFrom(%s) again = %v, %v; want nothing to move", c.Name(0), moved, err)
	}
}
