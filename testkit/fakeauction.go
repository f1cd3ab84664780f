package testkit

import (
	"errors"
	"fmt"
	"sniper/messages"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"sniper/xmppclient"
)

// AuctionPassword is the password of every fake auction account.
const AuctionPassword = "auction"

// SOL 1.1 bodies, spelled out here rather than taken from the real codec
// so that the tests check the codec against the protocol, not itself.
const (
	SOLJoin  = "SOLVersion: 1.1; Command: JOIN;"
	SOLClose = "SOLVersion: 1.1; Event: CLOSE;"
)

// SOLBid is the body of a BID at price.
func SOLBid(price int64) string {
	return fmt.Sprintf("SOLVersion: 1.1; Command: BID; Price: %d;", price)
}

// SOLPrice is the body of a PRICE event.
func SOLPrice(price, increment int64, bidder string) string {
	return fmt.Sprintf("SOLVersion: 1.1; Event: PRICE; CurrentPrice: %d; Increment: %d; Bidder: %s;", price, increment, bidder)
}

// FakeAuctionServer plays the auction house for one item, as in GOOS: it
// logs in as auction-<item>@localhost/Auction, records what snipers send
// and sends them prices and the close. Its assertions wait up to
// WaitTimeout and fail the test with what did arrive.
type FakeAuctionServer struct {
	t    testing.TB
	item string
	user *XMPPUser

	mu     sync.Mutex
	sniper string // full JID of the last sniper that joined
}

// NewFakeAuctionServer registers the item's auction account and logs in.
func NewFakeAuctionServer(t testing.TB, p *Prosody, item string) *FakeAuctionServer {
	t.Helper()
	return &FakeAuctionServer{
		t:    t,
		item: item,
		user: newXMPPUser(t, p, "auction-"+item, AuctionPassword, "Auction"),
	}
}

// Item is the item being auctioned.
func (a *FakeAuctionServer) Item() string { return a.item }

// JID is the auction's full JID, auction-<item>@localhost/Auction.
func (a *FakeAuctionServer) JID() string { return a.user.JID() }

// Received returns a copy of every message received so far.
func (a *FakeAuctionServer) Received() []Message { return a.user.Received() }

// CountBids counts the BIDs at price received from anyone; at-least-once
// delivery makes duplicates legal, and tests count them.
func (a *FakeAuctionServer) CountBids(price int64) int {
	body := SOLBid(price)
	n := 0
	for _, m := range a.user.Received() {
		if m.Body == body {
			n++
		}
	}
	return n
}

// CountAllBids counts the BIDs the auction received, at any price.
func (a *FakeAuctionServer) CountAllBids() int {
	n := 0
	for _, m := range a.user.Received() {
		if strings.Contains(m.Body, "Command: BID;") {
			n++
		}
	}
	return n
}

// CountJoins counts the JOINs received from anyone: one per sniper start,
// and one more per instance that took the auction over (a claim).
func (a *FakeAuctionServer) CountJoins() int {
	n := 0
	for _, m := range a.user.Received() {
		if m.Body == SOLJoin {
			n++
		}
	}
	return n
}

// HasReceivedJoins waits until at least n JOINs have arrived, from anyone,
// and reports later messages to the sender of the last one: an instance
// that took over re-joins from its own session.
func (a *FakeAuctionServer) HasReceivedJoins(n int) {
	a.t.Helper()
	a.user.waitForAll(fmt.Sprintf("%d x %q", n, SOLJoin), func(ms []Message) bool {
		c := 0
		for _, m := range ms {
			if m.Body == SOLJoin {
				c++
			}
		}
		return c >= n
	})
	var last string
	for _, m := range a.user.Received() {
		if m.Body == SOLJoin {
			last = m.From
		}
	}
	a.mu.Lock()
	a.sniper = last
	a.mu.Unlock()
}

// HasReceivedBids waits until at least n BIDs at price have arrived, from
// anyone; CountBids then tells whether more did.
func (a *FakeAuctionServer) HasReceivedBids(price int64, n int) {
	a.t.Helper()
	body := SOLBid(price)
	a.user.waitForAll(fmt.Sprintf("%d x %q", n, body), func(ms []Message) bool {
		c := 0
		for _, m := range ms {
			if m.Body == body {
				c++
			}
		}
		return c >= n
	})
}

// HasReceivedJoinRequestFrom waits for a JOIN from sniperJID (compared as
// bare JIDs) and remembers the sender's full JID as the one to report to.
func (a *FakeAuctionServer) HasReceivedJoinRequestFrom(sniperJID string) {
	a.t.Helper()
	m := a.waitFrom(sniperJID, SOLJoin)
	a.mu.Lock()
	a.sniper = m.From
	a.mu.Unlock()
}

// HasReceivedBid waits for a BID at price from sniperJID (bare compare).
func (a *FakeAuctionServer) HasReceivedBid(price int64, sniperJID string) {
	a.t.Helper()
	a.waitFrom(sniperJID, SOLBid(price))
}

// ReportPrice tells the joined sniper the current price.
func (a *FakeAuctionServer) ReportPrice(price, increment int64, bidder string) {
	a.t.Helper()
	a.sendToSniper(SOLPrice(price, increment, bidder))
}

// ReportPriceClosing is ReportPrice with the close time (SOL's CloseTime
// extension, docs/sol-closetime.md).
func (a *FakeAuctionServer) ReportPriceClosing(price, increment int64, bidder string, closeAt time.Time) {
	a.t.Helper()
	a.sendToSniper(messages.EncodePriceClosing(price, increment, bidder, closeAt.UnixMilli()))
}

// AnnounceClosed tells the joined sniper the auction has closed.
func (a *FakeAuctionServer) AnnounceClosed() {
	a.t.Helper()
	a.sendToSniper(SOLClose)
}

// SendInvalidMessageContaining sends body verbatim to the joined sniper.
func (a *FakeAuctionServer) SendInvalidMessageContaining(body string) {
	a.t.Helper()
	a.sendToSniper(body)
}

// SendTo sends body verbatim to any JID, joined or not.
func (a *FakeAuctionServer) SendTo(to, body string) {
	a.t.Helper()
	a.user.Send(to, body)
}

// WaitConnected waits until the auction is logged in, e.g. after a
// Prosody restart.
func (a *FakeAuctionServer) WaitConnected() {
	a.t.Helper()
	a.user.WaitConnected()
}

// Sniper is the full JID of the last sniper that joined ("" if none).
func (a *FakeAuctionServer) Sniper() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sniper
}

func (a *FakeAuctionServer) sendToSniper(body string) {
	a.t.Helper()
	to := a.Sniper()
	if to == "" {
		a.t.Fatalf("auction %s: no sniper has joined (call HasReceivedJoinRequestFrom first); cannot send %q", a.item, body)
	}
	// A sniper that is reconnecting (after a restart of it or of the
	// server) bounces messages for a moment: deliver as an auction house
	// would, by trying again until the deadline.
	deadline := time.Now().Add(WaitTimeout)
	for {
		err := a.user.TrySend(to, body)
		if err == nil {
			return
		}
		if !errors.Is(err, xmppclient.ErrUndelivered) || time.Now().After(deadline) {
			a.t.Fatalf("auction %s: send %q to %s: %v", a.item, body, to, err)
		}
		time.Sleep(50 * time.Millisecond) // the sniper's reconnect has no signal to wait on here
	}
}

func (a *FakeAuctionServer) waitFrom(sniperJID, body string) Message {
	a.t.Helper()
	want, err := jid.Parse(sniperJID)
	if err != nil {
		a.t.Fatalf("auction %s: bad sniper JID %q: %v", a.item, sniperJID, err)
	}
	want = want.Bare()
	return a.user.WaitForMessage(fmt.Sprintf("%q from %s", body, want), func(m Message) bool {
		from, err := jid.Parse(m.From)
		return err == nil && m.Body == body && from.Bare().Equal(want)
	})
}

// TrySendTo is SendTo that returns the error instead of failing the test:
// for drivers that expect the sniper to be down now and then (a message
// to an offline sniper bounces with xmppclient.ErrUndelivered).
func (a *FakeAuctionServer) TrySendTo(to, body string) error { return a.user.TrySend(to, body) }
