package jetstream_test

import (
	"context"
	"testing"
	"time"

	"sniper/messages"
	"sniper/testkit"
)

// LastSeqOn finds the last message on a wildcard filter, and 0 when none.
func TestLastSeqOnAWildcardFilter(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	filter := messages.Subject("*", messages.KindState, messages.TypeSnapshot)
	if seq, err := n.Log.LastSeqOn(ctx, filter); err != nil || seq != 0 {
		t.Fatalf("empty log: LastSeqOn = %d, %v; want 0, nil", seq, err)
	}
	var want uint64
	for _, item := range []string{"item-1", "item-2"} {
		seq, err := n.Log.Append(ctx, messages.Subject(item, messages.KindState, messages.TypeSnapshot), messages.SnapshotEvent{})
		if err != nil {
			t.Fatal(err)
		}
		want = seq
		if _, err := n.Log.Append(ctx, messages.Subject(item, messages.KindIn, messages.TypePrice), map[string]int{"price": 1}); err != nil {
			t.Fatal(err)
		}
	}
	if seq, err := n.Log.LastSeqOn(ctx, filter); err != nil || seq != want {
		t.Fatalf("LastSeqOn = %d, %v; want %d", seq, err, want)
	}
}
