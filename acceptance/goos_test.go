// Package acceptance holds the end-to-end tests of GOOS's Auction Sniper,
// played for real: a real Prosody, the real XMPP client, a real embedded
// NATS log and the app wired as `sniper run` wires it, driven through its
// HTTP API.
package acceptance

import (
	"testing"

	"sniper/testkit"
)

const (
	item1 = "item-54321"
	item2 = "item-65432"
)

func setUp(t *testing.T, items ...string) (*testkit.Prosody, *testkit.ApplicationRunner, []*testkit.FakeAuctionServer) {
	t.Helper()
	p := testkit.StartProsody(t)
	var auctions []*testkit.FakeAuctionServer
	for _, item := range items {
		auctions = append(auctions, testkit.NewFakeAuctionServer(t, p, item))
	}
	app := testkit.StartApplication(t, p, t.TempDir())
	return p, app, auctions
}

func TestSniperJoinsAuctionUntilAuctionCloses(t *testing.T) {
	_, app, a := setUp(t, item1)
	auction := a[0]
	app.StartBiddingIn(auction)
	auction.HasReceivedJoinRequestFrom(app.SniperJID())
	auction.AnnounceClosed()
	app.HasShownSniperHasLostAuction(auction, 0, 0)
}

func TestSniperMakesAHigherBidButLoses(t *testing.T) {
	_, app, a := setUp(t, item1)
	auction := a[0]
	app.StartBiddingIn(auction)
	auction.HasReceivedJoinRequestFrom(app.SniperJID())

	if n := app.Metric("sniper_bids_sent_total"); n != 0 {
		t.Fatalf("bids sent before any bid: %v", n)
	}
	auction.ReportPrice(1000, 98, "other bidder")
	app.HasShownSniperIsBidding(auction, 1000, 1098)
	auction.HasReceivedBid(1098, app.SniperJID())
	app.WaitMetric("sniper_bids_sent_total", 1)

	auction.AnnounceClosed()
	app.HasShownSniperHasLostAuction(auction, 1000, 1098)
}

func TestSniperWinsAnAuctionByBiddingHigher(t *testing.T) {
	_, app, a := setUp(t, item1)
	auction := a[0]
	app.StartBiddingIn(auction)
	auction.HasReceivedJoinRequestFrom(app.SniperJID())

	auction.ReportPrice(1000, 98, "other bidder")
	app.HasShownSniperIsBidding(auction, 1000, 1098)
	auction.HasReceivedBid(1098, app.SniperJID())

	auction.ReportPrice(1098, 97, app.SniperJID())
	app.HasShownSniperIsWinning(auction, 1098)

	auction.AnnounceClosed()
	app.HasShownSniperHasWonAuction(auction, 1098)
}

func TestSniperBidsForMultipleItems(t *testing.T) {
	_, app, a := setUp(t, item1, item2)
	auction, auction2 := a[0], a[1]
	app.StartBiddingIn(auction, auction2)
	auction.HasReceivedJoinRequestFrom(app.SniperJID())
	auction2.HasReceivedJoinRequestFrom(app.SniperJID())

	auction.ReportPrice(1000, 98, "other bidder")
	auction.HasReceivedBid(1098, app.SniperJID())
	auction2.ReportPrice(500, 21, "other bidder")
	auction2.HasReceivedBid(521, app.SniperJID())

	auction.ReportPrice(1098, 97, app.SniperJID())
	auction2.ReportPrice(521, 22, app.SniperJID())
	app.HasShownSniperIsWinning(auction, 1098)
	app.HasShownSniperIsWinning(auction2, 521)

	auction.AnnounceClosed()
	auction2.AnnounceClosed()
	app.HasShownSniperHasWonAuction(auction, 1098)
	app.HasShownSniperHasWonAuction(auction2, 521)
}

func TestSniperLosesAnAuctionWhenThePriceIsTooHigh(t *testing.T) {
	_, app, a := setUp(t, item1)
	auction := a[0]
	app.StartBiddingWithStopPrice(auction, 1100)
	auction.HasReceivedJoinRequestFrom(app.SniperJID())

	auction.ReportPrice(1000, 98, "other bidder")
	app.HasShownSniperIsBidding(auction, 1000, 1098)
	auction.HasReceivedBid(1098, app.SniperJID())

	auction.ReportPrice(1197, 10, "third party")
	app.HasShownSniperIsLosing(auction, 1197, 1098)
	auction.ReportPrice(1207, 10, "fourth party")
	app.HasShownSniperIsLosing(auction, 1207, 1098)

	auction.AnnounceClosed()
	app.HasShownSniperHasLostAuction(auction, 1207, 1098)
	if n := auction.CountBids(1207 + 10); n != 0 {
		t.Fatalf("the sniper bid above its stop price")
	}
}

func TestSniperReportsInvalidAuctionMessageAndStopsRespondingToEvents(t *testing.T) {
	_, app, a := setUp(t, item1, item2)
	auction, other := a[0], a[1]
	app.StartBiddingIn(auction, other)
	auction.HasReceivedJoinRequestFrom(app.SniperJID())
	other.HasReceivedJoinRequestFrom(app.SniperJID())

	auction.ReportPrice(500, 20, "other bidder")
	auction.HasReceivedBid(520, app.SniperJID())

	const broken = "a broken message"
	auction.SendInvalidMessageContaining(broken)
	failed := app.HasShownSniperHasFailed(auction)
	if failed.Reason == "" {
		t.Fatalf("failed sniper shows no reason: %+v", failed)
	}

	// It stops responding: a later price is stored but decides nothing.
	auction.ReportPrice(520, 21, "other bidder")
	// The other auction still works, which also proves the later price
	// above has been processed by the time it shows.
	other.ReportPrice(600, 6, "other bidder")
	app.HasShownSniperIsBidding(other, 600, 606)
	testkit.Eventually(t, testkit.WaitTimeout, func() bool { return app.EventsOfType(item1, "price") == 2 },
		"the second price of %s never reached the log", item1)
	if n := auction.CountBids(541); n != 0 {
		t.Fatalf("a failed sniper bid %d times", n)
	}
	if v, _ := app.Sniper(item1); v.State != "Failed" {
		t.Fatalf("after a later price the sniper is %s, want still Failed", v.State)
	}
	// The failure is in the item's history with the message and why.
	var found bool
	for _, e := range app.Events(item1) {
		if e.Type == "malformed" && contains(string(e.Data), broken) {
			found = true
		}
	}
	if !found {
		t.Fatalf("the malformed message is not in %s's history: %+v", item1, app.Events(item1))
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
