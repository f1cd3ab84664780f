package acceptance

import (
	"context"
	"fmt"
	"testing"
	"time"

	"sniper/api/client"
	"sniper/testkit"
)

// Through Prosody: a group of three, win one. Only one member bids at a
// time; when it is outbid beyond its stop price the cheapest waiting
// member takes over; once one is won the others are stopped: exactly one
// Won, and never two standing bids on the wire.
func TestAGroupOfThreeWinsOne(t *testing.T) {
	p := testkit.StartProsody(t)
	a := testkit.NewFakeAuctionServer(t, p, "cam-a")
	b := testkit.NewFakeAuctionServer(t, p, "cam-b")
	c := testkit.NewFakeAuctionServer(t, p, "cam-c")
	app := testkit.StartApplication(t, p, t.TempDir())
	ctx := context.Background()
	status, g, _, err := app.Client.JoinGroup(ctx, "camera", 1, []client.GroupItem{
		{Item: "cam-a", StopPrice: 1000}, {Item: "cam-b", StopPrice: 1000}, {Item: "cam-c", StopPrice: 1000}})
	if err != nil || status != 201 || len(g.Snipers) != 3 {
		t.Fatalf("join the group: %d %+v %v", status, g, err)
	}
	for _, auction := range []*testkit.FakeAuctionServer{a, b, c} {
		auction.HasReceivedJoinRequestFrom(app.SniperJID())
	}
	other := "other@" + p.Domain()
	a.ReportPrice(500, 50, other)
	app.HasShownSniperIsBidding(a, 500, 550)
	a.HasReceivedBid(550, app.SniperJID())
	b.ReportPrice(600, 50, other)
	c.ReportPrice(700, 50, other)
	app.HasShownSniper("cam-b", "Waiting", 600, 0)
	app.HasShownSniper("cam-c", "Waiting", 700, 0)
	noOtherBids := func() error {
		if n := b.CountAllBids() + c.CountAllBids(); n != 0 {
			return fmt.Errorf("%d bids on cam-b and cam-c while cam-a's bid stands", n)
		}
		return nil
	}
	testkit.Consistently(t, 300*time.Millisecond, noOtherBids)

	// cam-a is outbid beyond its stop price: the slot goes to cam-b, whose
	// next bid (650) is cheaper than cam-c's (750).
	a.ReportPrice(1000, 50, other)
	app.HasShownSniperIsLosing(a, 1000, 550)
	b.HasReceivedBid(650, app.SniperJID())
	b.ReportPrice(650, 50, app.SniperJID())
	app.HasShownSniperIsWinning(b, 650)
	b.AnnounceClosed()
	app.HasShownSniperHasWonAuction(b, 650)
	app.HasShownSniper("cam-a", "Stopped", 1000, 550)
	app.HasShownSniper("cam-c", "Stopped", 700, 0)

	if na, nb, nc := a.CountAllBids(), b.CountAllBids(), c.CountAllBids(); na != 1 || nb != 1 || nc != 0 {
		t.Errorf("bids on the wire: cam-a %d, cam-b %d, cam-c %d; want 1, 1, 0", na, nb, nc)
	}
	won := 0
	for _, item := range []string{"cam-a", "cam-b", "cam-c"} {
		if v, _ := app.Sniper(item); v.State == "Won" {
			won++
		}
	}
	if won != 1 {
		t.Errorf("%d won, want exactly 1", won)
	}
	// A stopped member resumed while the group has its win is stopped again.
	if _, err := app.Client.SetStopPrice(ctx, "cam-c", 5000); err != nil {
		t.Fatalf("resume cam-c: %v", err)
	}
	app.HasShownSniper("cam-c", "Stopped", 700, 0)
	if n := c.CountAllBids(); n != 0 {
		t.Errorf("cam-c bid %d times after the group had won", n)
	}
}
