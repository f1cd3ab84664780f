package actors_test

import (
	"context"
	"testing"
	"time"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
)

// A follower whose consumer vanishes (an operator deleted it, a server lost
// it) opens it again instead of going quietly deaf: the sniper's input
// feed and the start command feed both carry on, and the inputs the new
// consumer delivers again are recognised as decided, not decided twice.
func TestFeedsReopenADeletedConsumer(t *testing.T) {
	n := testkit.StartNATS(t)
	startSystem(t, n, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const item, item2 = "item-54321", "item-65432"

	waitDecided(t, n.Log, item, start(t, n.Log, item, 1100))
	if err := n.Log.JetStream().DeleteConsumer(ctx, jetstream.StreamName, jetstream.InputConsumerName(item)); err != nil {
		t.Fatalf("delete the input consumer: %v", err)
	}
	seq := price(t, n.Log, item, 1000, 98, "other bidder", false)
	if s := waitDecided(t, n.Log, item, seq); s.State != auction.Bidding || s.LastBid != 1098 {
		t.Fatalf("after the consumer was deleted: %+v, want Bidding with a bid of 1098", s)
	}

	if err := n.Log.JetStream().DeleteConsumer(ctx, jetstream.StreamName, jetstream.StartConsumerName); err != nil {
		t.Fatalf("delete the start consumer: %v", err)
	}
	if s := waitDecided(t, n.Log, item2, start(t, n.Log, item2, 500)); s.State != auction.Joining {
		t.Fatalf("a sniper started after the start consumer was deleted: %+v", s)
	}

	recs := history(t, n.Log, item)
	if got := len(snapshots(t, n.Log, item)); got != 2 {
		t.Errorf("%d snapshots of %s, want 2 (start, price): nothing decided twice", got, item)
	}
	if got := count(recs, messages.Subject(item, messages.KindOut, messages.TypeBid)); got != 1 {
		t.Errorf("%d bids, want 1", got)
	}
}
