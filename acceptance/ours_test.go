package acceptance

import (
	"context"
	"testing"
	"time"

	"sniper/testkit"
)

func joins(a *testkit.FakeAuctionServer) int {
	n := 0
	for _, m := range a.Received() {
		if m.Body == testkit.SOLJoin {
			n++
		}
	}
	return n
}

func TestSniperRestartKeepsItsState(t *testing.T) {
	p := testkit.StartProsody(t)
	auction := testkit.NewFakeAuctionServer(t, p, item1)
	dir := t.TempDir()
	app := testkit.StartApplication(t, p, dir)
	app.StartBiddingIn(auction)
	auction.HasReceivedJoinRequestFrom(app.SniperJID())
	auction.ReportPrice(1000, 98, "other bidder")
	app.HasShownSniperIsBidding(auction, 1000, 1098)
	auction.HasReceivedBid(1098, app.SniperJID())
	before, _ := app.Sniper(item1)

	app.Stop() // what SIGTERM does
	app = testkit.StartApplication(t, p, dir)
	after, ok := app.Sniper(item1)
	if !ok || after != before {
		t.Fatalf("after restart the sniper is %+v, want %+v", after, before)
	}
	auction.ReportPrice(1098, 97, app.SniperJID())
	app.HasShownSniperIsWinning(auction, 1098)
	auction.AnnounceClosed()
	app.HasShownSniperHasWonAuction(auction, 1098)
	if n := joins(auction); n != 1 {
		t.Fatalf("the auction received %d JOINs, want 1", n)
	}
	if n := auction.CountBids(1098); n != 1 {
		t.Fatalf("the auction received %d BIDs at 1098, want 1", n)
	}
}

func TestSniperReconnectsWhenTheXMPPServerRestarts(t *testing.T) {
	p, app, a := setUp(t, item1)
	auction := a[0]
	app.StartBiddingIn(auction)
	auction.HasReceivedJoinRequestFrom(app.SniperJID())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Restart(ctx); err != nil {
		t.Fatalf("restart prosody: %v", err)
	}
	app.WaitMetric("sniper_xmpp_reconnects_total", 1)
	testkit.Eventually(t, testkit.WaitTimeout, app.App.XMPPConnected, "the sniper did not reconnect")
	auction.WaitConnected()

	auction.ReportPrice(1000, 98, "other bidder")
	app.HasShownSniperIsBidding(auction, 1000, 1098)
	auction.HasReceivedBid(1098, app.SniperJID())
}

func TestMessagesFromAnyoneButTheAuctionChangeNothing(t *testing.T) {
	p, app, a := setUp(t, item1)
	auction := a[0]
	app.StartBiddingIn(auction)
	auction.HasReceivedJoinRequestFrom(app.SniperJID())
	auction.ReportPrice(1000, 98, "other bidder")
	app.HasShownSniperIsBidding(auction, 1000, 1098)
	// The bid's out.sent record lands just after the auction has the BID:
	// wait for it, so the count below holds only what the spoofs could add.
	auction.HasReceivedBid(1098, app.SniperJID())
	testkit.Eventually(t, testkit.WaitTimeout, func() bool { return app.EventsOfType(item1, "sent") == 2 },
		"the JOIN and BID were never recorded as sent")
	eventsBefore := len(app.Events(item1))

	mallory := testkit.NewXMPPUser(t, p, "mallory")
	mallory.Send(app.SniperJID(), testkit.SOLPrice(2000, 1, "mallory"))
	mallory.Send(app.SniperJID(), testkit.SOLClose)
	// An auction account of an item the sniper never joined may not
	// write to the log either.
	impostor := testkit.NewXMPPUser(t, p, "auction-"+item1+"-fake")
	impostor.Send(app.SniperJID(), testkit.SOLClose)
	app.WaitMetric("sniper_xmpp_dropped_messages_total", 3)

	if v, _ := app.Sniper(item1); v.State != "Bidding" || v.LastPrice != 1000 {
		t.Fatalf("spoofed messages moved the sniper: %+v", v)
	}
	if n := len(app.Events(item1)); n != eventsBefore {
		t.Fatalf("spoofed messages reached the log: %d events, want %d", n, eventsBefore)
	}
	// The real auction still moves it.
	auction.AnnounceClosed()
	app.HasShownSniperHasLostAuction(auction, 1000, 1098)
}
