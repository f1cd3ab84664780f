package jetstream_test

import (
	"testing"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
)

// LastSeqOn finds the last message on a wildcard filter, and 0 when none.
func TestLastSeqOnAWildcardFilter(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx := testContext(t)
	filter := messages.DecisionFilter("*")
	if seq, err := n.Log.LastSeqOn(ctx, filter); err != nil || seq != 0 {
		t.Fatalf("empty log: LastSeqOn = %d, %v; want 0, nil", seq, err)
	}
	appendInput(t, ctx, n.Log, messages.Subject("item-0", messages.KindCmd, messages.TypeStart), messages.NewStart("item-0", 5))
	if seq, err := n.Log.LastSeqOn(ctx, filter); err != nil || seq != 0 {
		t.Fatalf("log without decisions: LastSeqOn = %d, %v; want 0, nil", seq, err)
	}
	var want uint64
	for i, item := range []string{"item-1", "item-2"} {
		want = commit(t, ctx, n.Log, decision(t, item, 0, uint64(i+1), auction.Joining, auction.Join{}))
		appendInput(t, ctx, n.Log, messages.Subject(item, messages.KindIn, messages.TypePrice), messages.NewPrice(item, 1, 1, "x", false))
	}
	if _, err := n.Log.Append(ctx, jetstream.CheckpointSubject("f"), map[string]any{"type": "checkpoint", "seq": 1}); err != nil {
		t.Fatal(err)
	}
	if seq, err := n.Log.LastSeqOn(ctx, filter); err != nil || seq != want {
		t.Fatalf("LastSeqOn(%s) = %d, %v; want %d", filter, seq, err, want)
	}
	// A literal subject works too, and one with nothing on it is 0.
	if seq, err := n.Log.LastSeqOn(ctx, messages.DecisionSubject("item-2", messages.TypeJoin)); err != nil || seq != want {
		t.Errorf("LastSeqOn on a literal subject = %d, %v; want %d", seq, err, want)
	}
	if seq, err := n.Log.LastSeqOn(ctx, messages.DecisionSubject("item-2", messages.TypeBid)); err != nil || seq != 0 {
		t.Errorf("LastSeqOn on an empty subject = %d, %v; want 0", seq, err)
	}
}
