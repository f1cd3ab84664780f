package testkit

import "testing"

// The auction and an impostor talk to a stand-in sniper: the auction
// learns the sniper's full JID from its JOIN and reports back to it.
func TestFakeAuctionServer(t *testing.T) {
	p := StartProsody(t)
	auction := NewFakeAuctionServer(t, p, "item-54321")
	if got, want := auction.JID(), "auction-item-54321@localhost/Auction"; got != want {
		t.Fatalf("JID = %s, want %s", got, want)
	}
	sniper := newXMPPUser(t, p, "sniper", "sniper", "Auction")

	sniper.Send(auction.JID(), SOLJoin)
	auction.HasReceivedJoinRequestFrom("sniper@localhost")
	if got := auction.Sniper(); got != "sniper@localhost/Auction" {
		t.Fatalf("Sniper = %s", got)
	}

	auction.ReportPrice(1000, 98, "other bidder")
	sniper.WaitForMessage("PRICE", func(m Message) bool {
		return m.Body == "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 1000; Increment: 98; Bidder: other bidder;" &&
			m.From == auction.JID()
	})

	sniper.Send("auction-item-54321@localhost", SOLBid(1098))
	sniper.Send(auction.JID(), SOLBid(1098))
	auction.HasReceivedBid(1098, "sniper@localhost/Auction")
	auction.HasReceivedBids(1098, 2)
	if n := auction.CountBids(1098); n != 2 {
		t.Fatalf("CountBids(1098) = %d, want 2", n)
	}

	auction.AnnounceClosed()
	sniper.WaitForMessage("CLOSE", func(m Message) bool { return m.Body == "SOLVersion: 1.1; Event: CLOSE;" })
	auction.SendInvalidMessageContaining("garbage")
	sniper.WaitForMessage("garbage", func(m Message) bool { return m.Body == "garbage" })

	impostor := NewXMPPUser(t, p, "auction-item-54321-impostor")
	impostor.Send(sniper.JID(), SOLClose)
	sniper.WaitForMessage("impostor's CLOSE", func(m Message) bool {
		return m.From == impostor.JID() && m.Body == SOLClose
	})
	if len(auction.Received()) != 3 {
		t.Fatalf("auction received %v", auction.Received())
	}
}
