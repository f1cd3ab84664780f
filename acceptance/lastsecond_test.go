package acceptance

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"sniper/api/client"
	"sniper/auctionhouse"
	"sniper/messages"
	"sniper/testkit"
	"sniper/xmppclient"
)

// A last-second sniper with a lead of 500 ms, against the built-in auction
// house on Prosody (its PRICEs carry the close time) and a simulated
// bidder who stops 1.5 s before the close: the sniper follows the price
// without bidding, bids once inside its lead, and wins.
func TestALastSecondSniperBidsOnceInsideItsLead(t *testing.T) {
	p := testkit.StartProsody(t)
	const item = "item-lastsecond"
	house, err := auctionhouse.Start(context.Background(), auctionhouse.Config{
		XMPPAddr: p.Addr(), Domain: p.Domain(), TLS: xmppclient.TLSSkipVerify, Password: "house-secret",
		EnsureAccount:  p.Register,
		Items:          []auctionhouse.ItemConfig{{ID: item, StartPrice: 100, Increment: 10, Duration: 4 * time.Second, Bidders: 1}},
		MinBidInterval: 50 * time.Millisecond, MaxBidInterval: 150 * time.Millisecond, Seed: 7,
		BiddersQuitBefore: 1500 * time.Millisecond,
		Logger:            testkit.Logger(t),
	})
	if err != nil {
		t.Fatalf("start the auction house: %v", err)
	}
	t.Cleanup(func() { _ = house.Close() })
	app := testkit.StartApplication(t, p, t.TempDir())
	ctx := context.Background()
	if _, err := app.Client.Join(ctx, item, 100_000, client.LastSecond(500*time.Millisecond)); err != nil {
		t.Fatalf("join: %v", err)
	}
	var closeAt int64
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		v, ok := app.Sniper(item)
		closeAt = v.CloseAt
		return ok && v.State == "Waiting" && v.CloseAt > 0 && v.WakeAt == v.CloseAt-500
	}, "the sniper never waited for its lead before the announced close")
	testkit.Eventually(t, 10*time.Second, func() bool {
		v, _ := app.Sniper(item)
		return v.State == "Won" || v.State == "Lost"
	}, "the auction never ended for the sniper")
	if v, _ := app.Sniper(item); v.State != "Won" {
		t.Fatalf("the sniper %s, want Won against a bidder who stopped early: %+v", v.State, v)
	}

	var sent []time.Time
	bids := 0
	for _, e := range app.Events(item) {
		switch e.Subject {
		case messages.KindDec + "." + messages.TypeBid:
			bids++
		case messages.KindOut + "." + messages.TypeSent:
			var s messages.SentEvent
			if err := json.Unmarshal(e.Data, &s); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(s.Body, "BID") {
				at, err := time.Parse(time.RFC3339Nano, e.Time)
				if err != nil {
					t.Fatal(err)
				}
				sent = append(sent, at)
			}
		}
	}
	if bids != 1 || len(sent) != 1 {
		t.Fatalf("%d bid decisions and %d BIDs sent, want one of each", bids, len(sent))
	}
	close := time.UnixMilli(closeAt)
	if sent[0].Before(close.Add(-500*time.Millisecond)) || sent[0].After(close) {
		t.Errorf("the BID went out %s before the close, want inside the 500 ms lead", close.Sub(sent[0]))
	}
	t.Logf("the BID went out %s before the close", close.Sub(sent[0]).Round(time.Millisecond))
}
