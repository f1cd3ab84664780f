package projection_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/projection"
	"sniper/testkit"
)

func putSnapshot(t *testing.T, log *jetstream.Log, item string, state auction.State, price, inputSeq int64) messages.DecisionEvent {
	t.Helper()
	s := messages.DecisionEvent{Type: messages.TypeState, Snapshot: auction.Snapshot{Item: item, State: state, LastPrice: price, LastBid: price + 1, StopPrice: 1000}, InputSeq: uint64(inputSeq)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := log.Append(ctx, messages.DecisionSubject(item, messages.TypeState), s); err != nil {
		t.Fatalf("append snapshot of %s: %v", item, err)
	}
	return s
}

func startView(t *testing.T, n *testkit.NATS) *projection.View {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := projection.Start(ctx, n.Log, testkit.Logger(t), nil)
	if err != nil {
		t.Fatalf("start projection: %v", err)
	}
	t.Cleanup(v.Stop)
	return v
}

func wait(t *testing.T, v *projection.View, item string, ok func(messages.DecisionEvent) bool) messages.DecisionEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := v.Wait(ctx, item, ok)
	if err != nil {
		t.Fatalf("waiting for %s: %v (last %+v)", item, err, s)
	}
	return s
}

func TestViewLoadsTheLastSnapshotsAndFollowsNewOnes(t *testing.T) {
	n := testkit.StartNATS(t)
	putSnapshot(t, n.Log, "item-b", auction.Joining, 0, 1)
	putSnapshot(t, n.Log, "item-a", auction.Joining, 0, 2)
	wantB := putSnapshot(t, n.Log, "item-b", auction.Bidding, 100, 3)
	// Inputs and outputs are not states: the view ignores them.
	ctx := context.Background()
	if _, err := n.Log.Append(ctx, messages.Subject("item-c", messages.KindCmd, messages.TypeStart), messages.NewStart("item-c", 10)); err != nil {
		t.Fatal(err)
	}

	v := startView(t, n)
	list := v.List()
	if len(list) != 2 || list[0].Item != "item-a" || !reflect.DeepEqual(list[1], wantB) {
		t.Fatalf("List() = %+v, want item-a then %+v", list, wantB)
	}
	if _, ok := v.Get("item-c"); ok {
		t.Fatalf("a sniper without a snapshot is in the view")
	}

	sub := v.Subscribe()
	defer sub.Close()
	wantA := putSnapshot(t, n.Log, "item-a", auction.Winning, 200, 4)
	if got := wait(t, v, "item-a", func(s messages.DecisionEvent) bool { return s.InputSeq == 4 }); !reflect.DeepEqual(got, wantA) {
		t.Fatalf("Wait = %+v, want %+v", got, wantA)
	}
	if got, _ := v.Get("item-a"); !reflect.DeepEqual(got, wantA) {
		t.Fatalf("Get = %+v, want %+v", got, wantA)
	}
	select {
	case got := <-sub.C():
		if !reflect.DeepEqual(got, wantA) {
			t.Fatalf("subscription delivered %+v, want %+v", got, wantA)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscription delivered nothing")
	}
	// Closing twice is harmless.
	sub.Close()
	sub.Close()

	// A snapshot that is not JSON is skipped, not fatal.
	if _, err := n.Log.Append(ctx, messages.DecisionSubject("item-a", messages.TypeState), "not a snapshot"); err != nil {
		t.Fatal(err)
	}
	wantA = putSnapshot(t, n.Log, "item-a", auction.Won, 200, 6)
	wait(t, v, "item-a", func(s messages.DecisionEvent) bool { return reflect.DeepEqual(s, wantA) })
}

func TestWaitEndsWithItsContext(t *testing.T) {
	n := testkit.StartNATS(t)
	v := startView(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := v.Wait(ctx, "item-never", func(messages.DecisionEvent) bool { return true }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a sniper that never comes: %v, want the context's deadline", err)
	}
}

func TestSlowSubscriberIsCutOffAndOthersContinue(t *testing.T) {
	n := testkit.StartNATS(t)
	v := startView(t, n)
	slow := v.Subscribe()
	defer slow.Close()
	fast := v.Subscribe()
	defer fast.Close()

	const total = 300 // more than a subscription buffers
	var got []uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s := range fast.C() {
			got = append(got, s.InputSeq)
			if len(got) == total {
				return
			}
		}
	}()
	for i := range total {
		putSnapshot(t, n.Log, "item-busy", auction.Bidding, int64(i), int64(i+1))
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the reading subscriber did not get all %d snapshots", total)
	}
	if !slices.IsSorted(got) || got[0] != 1 || got[total-1] != total {
		t.Fatalf("the reading subscriber got snapshots out of order: %v", got)
	}
	// The one that never read was cut off: its channel is closed after
	// what it had buffered.
	deadline := time.After(5 * time.Second)
	for n := 0; ; n++ {
		select {
		case _, ok := <-slow.C():
			if !ok {
				if n >= total {
					t.Fatalf("slow subscriber buffered all %d snapshots", n)
				}
				return
			}
		case <-deadline:
			t.Fatalf("slow subscriber never cut off after %d snapshots", n)
		}
	}
}

func TestStopClosesSubscriptions(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := projection.Start(ctx, n.Log, testkit.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	sub := v.Subscribe()
	v.Stop()
	select {
	case _, ok := <-sub.C():
		if ok {
			t.Fatal("a subscription delivered after Stop")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop left a subscription open")
	}
	sub.Close() // after Stop: harmless
}
