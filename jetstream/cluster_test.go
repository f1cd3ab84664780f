package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
)

// What the sniper actor relies on from Commit, on an R3 stream of a
// three-node cluster that loses the stream's leader without warning:
//   - several writers deciding at once for one auction: one commits, every
//     other gets ErrConflict (on a replicated stream a second write fenced
//     on a subject with one in flight gets 10164, not 10071);
//   - while no server leads the stream a commit fails with an error that is
//     neither ErrConflict (which would make the actor re-decide) nor
//     ErrFull: the actor holds the input and retries the same decision;
//   - once a leader is back the same decision, on the same fence, commits;
//     committed again, it is refused with ErrConflict (its message ids are
//     known to the new leader), so a retry cannot store it twice.
//
// A decision is one fenced message (see Log.Commit), on an R3 stream too.
func TestCommitAcrossTheLossOfTheStreamLeader(t *testing.T) {
	c := testkit.StartCluster(t, 3)
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := testContext(t)
	// Right after the meta leader is elected it may not know its peers yet
	// ("no suitable peers for placement"): creating the stream is retried.
	var l *jetstream.Log
	testkit.Eventually(t, 20*time.Second, func() bool {
		open, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		l, err = jetstream.Open(open, nc, jetstream.StreamConfig{Replicas: 3})
		return err == nil
	}, "cannot create the R3 stream: %v", errorNow(func() error { return err }))
	const item = "item-r3"

	// Concurrent writers from the same decision: exactly one goes through.
	startSeq := appendInput(t, ctx, l, messages.Subject(item, messages.KindCmd, messages.TypeStart), messages.NewStart(item, 5000))
	const writers = 6
	start := make(chan struct{})
	errs := make([]error, writers)
	done := make(chan struct{})
	for i := range writers {
		d := decision(t, item, 0, startSeq+uint64(100+i), auction.Bidding, auction.Bid{Price: int64(1000 + i)})
		go func() {
			defer func() { done <- struct{}{} }()
			<-start
			_, errs[i] = l.Commit(ctx, d)
		}()
	}
	close(start)
	for range writers {
		<-done
	}
	committed := 0
	for i, err := range errs {
		switch {
		case err == nil:
			committed++
		case !errors.Is(err, jetstream.ErrConflict):
			t.Errorf("writer %d: %v, want ErrConflict", i, err)
		default:
			t.Logf("writer %d refused: %v", i, err)
		}
	}
	if committed != 1 {
		t.Fatalf("%d concurrent writers committed, want 1", committed)
	}
	fence, err := l.LastDecision(ctx, item)
	if err != nil {
		t.Fatal(err)
	}
	// Inputs of the auction written meanwhile do not move the fence.
	appendInput(t, ctx, l, messages.Subject(item, messages.KindIn, messages.TypeMalformed), messages.NewMalformed(item, "junk", "bad"))

	// The stream leader is lost, as in a crash.
	leader := c.WaitStreamLeader(jetstream.StreamName, 10*time.Second)
	priceSeq := appendInput(t, ctx, l, messages.Subject(item, messages.KindIn, messages.TypePrice), messages.NewPrice(item, 2000, 10, "other", false))
	d := decision(t, item, fence.Seq, priceSeq, auction.Bidding, auction.Bid{Price: 2010})
	lost := time.Now()
	c.Kill(leader)
	short, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err = l.Commit(short, d)
	cancel()
	if err == nil || errors.Is(err, jetstream.ErrConflict) || errors.Is(err, jetstream.ErrFull) {
		t.Fatalf("commit with no stream leader: %v, want a failure that is neither a conflict nor a full log", err)
	}
	t.Logf("commit with no stream leader: %v", err)

	// Retried, as the actor's redelivered input does, it commits once a
	// leader is back.
	var decSeq uint64
	testkit.Eventually(t, 20*time.Second, func() bool {
		retry, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		decSeq, err = l.Commit(retry, d)
		if errors.Is(err, jetstream.ErrConflict) {
			t.Fatalf("retried commit after the loss: %v, want success", err)
		}
		return err == nil
	}, "the decision never committed after the loss of the stream leader: %v", errorNow(func() error { return err }))
	t.Logf("committed %s after the loss (new leader %s)", time.Since(lost).Round(time.Millisecond), c.Name(c.StreamLeader(jetstream.StreamName)))

	ctx = testContext(t)
	// Direct gets are answered by any replica, and one that is catching up
	// with the new leader may not have the decision yet.
	testkit.Eventually(t, 10*time.Second, func() bool {
		_, err := l.Stream().GetMsg(ctx, decSeq)
		return err == nil
	}, "the committed decision at %d is not readable", decSeq)
	checkStoredDecision(t, ctx, l, decSeq, d)

	// Once more, on the fence it moved to: refused as a duplicate, nothing
	// stored twice.
	d.Fence = decSeq
	if _, err := l.Commit(ctx, d); !errors.Is(err, jetstream.ErrConflict) {
		t.Fatalf("re-commit on the new leader: %v, want ErrConflict", err)
	}
	if n := decisionCount(t, ctx, l, item); n != 2 {
		t.Errorf("%d decisions stored, want 2", n)
	}
	if n := subjectCount(t, ctx, l, messages.DecisionSubject(item, messages.TypeBid)); n != 2 {
		t.Errorf("%d bid decisions stored, want 2", n)
	}
	got, err := l.LastDecision(ctx, item)
	if err != nil || got.Seq != decSeq || got.InputSeq != priceSeq {
		t.Errorf("LastDecision = %+v, %v; want seq %d for input %d", got, err, decSeq, priceSeq)
	}
	// Another auction decides on the new leader without conflict.
	commit(t, ctx, l, decision(t, "item-r3-other", 0, priceSeq, auction.Joining, auction.Join{}))
}

// errorNow formats the error fn returns when printed, not before.
type errorNow func() error

func (e errorNow) String() string { return fmt.Sprint(e()) }
