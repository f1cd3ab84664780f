package actors_test

import (
	"fmt"
	"testing"

	"sniper/auction"
	"sniper/messages"
	"sniper/testkit"
)

func groupStart(item, group string, win int, stop int64) messages.StartCommand {
	c := messages.NewStart(item, stop)
	c.Group, c.Win = group, win
	return c
}

// A group of three, win one, through the real log: one member bids at a
// time, the slot passes to the cheapest waiting member when the holder is
// outbid beyond its limit, and once one is won the others are stopped;
// a restart in the middle changes none of it.
func TestAGroupWinsAtMostOne(t *testing.T) {
	dir := t.TempDir()
	n := testkit.StartNATSIn(t, dir)
	sys := startSystem(t, n, nil)
	items := []string{"cam-a", "cam-b", "cam-c"}
	for i, item := range items {
		appendInput(t, n.Log, item, messages.KindCmd, messages.TypeStart, groupStart(item, "camera", 1, int64(1000+100*i)))
	}
	// Prices for all three: a is first, so it takes the slot and bids.
	pa := price(t, n.Log, "cam-a", 900, 50, "other", false)
	pb := price(t, n.Log, "cam-b", 500, 50, "other", false)
	pc := price(t, n.Log, "cam-c", 700, 50, "other", false)
	waitDecided(t, n.Log, "cam-a", pa)
	waitDecided(t, n.Log, "cam-b", pb)
	waitDecided(t, n.Log, "cam-c", pc)
	live := func() []string {
		var out []string
		for _, item := range items {
			d := lastDecision(t, n, item)
			if d.State == auction.Bidding || d.State == auction.Winning {
				out = append(out, fmt.Sprintf("%s:%s", item, d.State))
			}
		}
		return out
	}
	if l := live(); len(l) != 1 || l[0] != "cam-a:Bidding" {
		t.Fatalf("live bids %v, want cam-a only", l)
	}
	// Restart: the group comes back from its members' decisions.
	stopSystem(sys)
	n.Stop()
	n = testkit.StartNATSIn(t, dir)
	startSystem(t, n, nil)
	// a is outbid beyond its 1000: the slot goes to b, the cheapest (550).
	seq := price(t, n.Log, "cam-a", 1000, 50, "other", false)
	waitDecided(t, n.Log, "cam-a", seq)
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		d := lastDecision(t, n, "cam-b")
		return d.State == auction.Bidding && d.LastBid == 550
	}, "cam-b never took the slot")
	if l := live(); len(l) != 1 {
		t.Fatalf("live bids %v, want one", l)
	}
	waitDecided(t, n.Log, "cam-b", price(t, n.Log, "cam-b", 550, 50, "sniper", true))
	waitDecided(t, n.Log, "cam-b", closeAuction(t, n.Log, "cam-b"))
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		return lastDecision(t, n, "cam-a").State == auction.Stopped && lastDecision(t, n, "cam-c").State == auction.Stopped
	}, "the others were never stopped once cam-b was won")
	if got := lastDecision(t, n, "cam-b").State; got != auction.Won {
		t.Fatalf("cam-b %s, want Won", got)
	}
	for _, item := range items {
		assertOneDecisionPerInput(t, n.Log, item)
	}
}

func lastDecision(t *testing.T, n *testkit.NATS, item string) messages.DecisionEvent {
	t.Helper()
	ds := decisions(t, n.Log, item)
	if len(ds) == 0 {
		return messages.DecisionEvent{}
	}
	return ds[len(ds)-1]
}
