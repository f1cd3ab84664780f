package acceptance

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"sniper/api/client"
	"sniper/testkit"
)

// Through Prosody: a Losing sniper given a higher limit bids at once on
// the last price; a stopped one given a new limit resumes, and bids on
// the next price; lowering below a standing bid is refused.
func TestChangingTheStopPriceOnTheWire(t *testing.T) {
	p := testkit.StartProsody(t)
	auction := testkit.NewFakeAuctionServer(t, p, item1)
	app := testkit.StartApplication(t, p, t.TempDir())
	ctx := context.Background()
	app.StartBiddingWithStopPrice(auction, 1100)
	auction.HasReceivedJoinRequestFrom(app.SniperJID())

	auction.ReportPrice(1100, 50, "other bidder")
	app.HasShownSniperIsLosing(auction, 1100, 0)
	if _, err := app.Client.SetStopPrice(ctx, item1, 1200); err != nil {
		t.Fatalf("raise the limit: %v", err)
	}
	auction.HasReceivedBid(1150, app.SniperJID())
	app.HasShownSniperIsBidding(auction, 1100, 1150)

	_, err := app.Client.SetStopPrice(ctx, item1, 1000)
	var refused *client.Error
	if !errors.As(err, &refused) || refused.Status != http.StatusConflict {
		t.Fatalf("lower below the standing bid of 1150: %v, want a 409", err)
	}

	if _, err := app.Client.Stop(ctx, item1); err != nil {
		t.Fatalf("stop: %v", err)
	}
	app.HasShownSniper(item1, "Stopped", 1100, 1150)
	auction.ReportPrice(1200, 50, "other bidder")
	app.HasShownSniper(item1, "Stopped", 1200, 1150) // follows, does not bid
	if _, err := app.Client.SetStopPrice(ctx, item1, 2000); err != nil {
		t.Fatalf("resume: %v", err)
	}
	auction.HasReceivedBid(1250, app.SniperJID())
	auction.ReportPrice(1300, 50, "other bidder")
	auction.HasReceivedBid(1350, app.SniperJID())
	app.HasShownSniperIsBidding(auction, 1300, 1350)
	if n := auction.CountBids(1250) + auction.CountBids(1350); n != 2 {
		t.Errorf("%d bids at 1250 and 1350 on the wire, want one each", n)
	}
	if n := app.EventsOfType(item1, "set"); n != 2 {
		t.Errorf("%d stop price changes in the history, want 2 (the refused one never reached the log)", n)
	}
}
