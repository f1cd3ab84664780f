package acceptance

import (
	"context"
	"testing"
	"time"

	"sniper/internal/app"
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

// An auction whose account is offline bounces the sniper's JOIN. The
// bridge retries it for a while (an auction house restarting), then gives
// up and says so in the history, so that one dead auction does not hold
// every other auction's bids (requests go out one at a time, in order).
func TestAnOfflineAuctionDoesNotHoldUpTheOthers(t *testing.T) {
	p := testkit.StartProsody(t)
	online := testkit.NewFakeAuctionServer(t, p, item1)
	if err := p.Register("auction-"+item2, testkit.AuctionPassword); err != nil {
		t.Fatal(err) // an account that never logs in
	}
	app := testkit.StartApplication(t, p, t.TempDir(), func(c *app.Config) { c.UndeliverableFor = time.Second })

	status, body := app.Do("POST", "/api/snipers", `{"item":"`+item2+`","stop_price":1000}`)
	if status != 201 {
		t.Fatalf("join %s: %d %s", item2, status, body)
	}
	app.StartBiddingIn(online)
	online.HasReceivedJoinRequestFrom(app.SniperJID())
	testkit.Eventually(t, testkit.WaitTimeout, func() bool { return app.EventsOfType(item2, "undelivered") == 1 },
		"the bounced JOIN of %s was never given up on", item2)
	if n := app.EventsOfType(item2, "sent"); n != 0 {
		t.Fatalf("a bounced JOIN was recorded as sent %d times", n)
	}
	// Bidding on the live auction goes on.
	online.ReportPrice(1000, 98, "other bidder")
	online.HasReceivedBid(1098, app.SniperJID())
}
