package actors_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"sniper/auction"
	"sniper/messages"
	"sniper/testkit"
)

func lastSecondStart(item string, stop, leadMS int64) messages.StartCommand {
	c := messages.NewStart(item, stop)
	c.Strategy, c.LeadMS = string(auction.LastSecond), leadMS
	return c
}

func closingPrice(item string, p, inc int64, closeAt time.Time) messages.PriceEvent {
	e := messages.NewPrice(item, p, inc, "other", false)
	e.CloseTime = closeAt.UnixMilli()
	return e
}

// timerEvents are item's logged timer inputs.
func timerEvents(t *testing.T, n *testkit.NATS, item string) []messages.TimerEvent {
	t.Helper()
	var out []messages.TimerEvent
	for _, r := range history(t, n.Log, item) {
		if r.Subject == messages.Subject(item, messages.KindIn, messages.TypeTimer) {
			var e messages.TimerEvent
			if err := json.Unmarshal(r.Data, &e); err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
	}
	return out
}

// A last-second sniper waits, its timer goes through the log, and it bids
// once: the timer input is logged with when it was due and when it fired,
// and nothing is sent before.
func TestLastSecondBidGoesThroughTheLog(t *testing.T) {
	n := testkit.StartNATS(t)
	sys := startSystem(t, n, nil)
	const item = "item-last"
	appendInput(t, n.Log, item, messages.KindCmd, messages.TypeStart, lastSecondStart(item, 2000, 300))
	closeAt := time.Now().Add(800 * time.Millisecond)
	seq := appendInput(t, n.Log, item, messages.KindIn, messages.TypePrice, closingPrice(item, 1000, 50, closeAt))
	if d := waitDecided(t, n.Log, item, seq); d.State != auction.Waiting || d.WakeAt != closeAt.UnixMilli()-300 {
		t.Fatalf("after the price: %+v, want Waiting with its timer 300 ms before the close", d)
	}
	if got := bids(t, n.Log, item); len(got) != 0 {
		t.Fatalf("bid %v before its time", got)
	}
	if sys.Timers() != 1 {
		t.Errorf("%d timers, want 1", sys.Timers())
	}
	testkit.Eventually(t, testkit.WaitTimeout, func() bool { return len(bids(t, n.Log, item)) == 1 }, "the sniper never made its last-second bid")
	if got := bids(t, n.Log, item); got[0] != 1050 {
		t.Errorf("bids %v, want [1050]", got)
	}
	timers := timerEvents(t, n, item)
	if len(timers) != 1 || timers[0].Due != closeAt.UnixMilli()-300 || timers[0].Fired < timers[0].Due {
		t.Fatalf("timer inputs %+v, want one, due 300 ms before the close, fired at or after it", timers)
	}
	if sys.Timers() != 0 {
		t.Errorf("%d timers after the bid, want 0", sys.Timers())
	}
}

// A timer due while the system was down fires when it starts again, late
// (the history says by how much), and the sniper bids once.
func TestATimerDueDuringDowntimeFiresOnRestart(t *testing.T) {
	dir := t.TempDir()
	n := testkit.StartNATSIn(t, dir)
	sys := startSystem(t, n, nil)
	const item = "item-down"
	appendInput(t, n.Log, item, messages.KindCmd, messages.TypeStart, lastSecondStart(item, 2000, 100))
	closeAt := time.Now().Add(400 * time.Millisecond)
	seq := appendInput(t, n.Log, item, messages.KindIn, messages.TypePrice, closingPrice(item, 1000, 50, closeAt))
	waitDecided(t, n.Log, item, seq)
	stopSystem(sys)
	n.Stop()
	// Down past the timer's due time (condition, not a sleep: wait for the clock).
	testkit.Eventually(t, testkit.WaitTimeout, func() bool { return time.Now().After(closeAt) }, "the clock never passed the close")

	n2 := testkit.StartNATSIn(t, dir)
	startSystem(t, n2, nil)
	testkit.Eventually(t, testkit.WaitTimeout, func() bool { return len(bids(t, n2.Log, item)) == 1 }, "the late timer never made the bid")
	timers := timerEvents(t, n2, item)
	if len(timers) != 1 || timers[0].Fired-timers[0].Due < 100 {
		t.Fatalf("timer inputs %+v, want one that fired late", timers)
	}
	testkit.Consistently(t, 300*time.Millisecond, func() error {
		if got := bids(t, n2.Log, item); len(got) != 1 {
			return fmt.Errorf("bids %v, want one", got)
		}
		return nil
	})
}
