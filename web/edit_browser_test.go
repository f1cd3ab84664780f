package web_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"sniper/api/client"
	"sniper/testkit"
)

// The page changes a stop price: a Losing sniper given a higher limit
// bids at once; a limit below its standing bid is refused, and the page
// says why beside the field.
func TestBrowserChangesTheStopPrice(t *testing.T) {
	const item = "item-edit"
	p, auction, app, ctx := joinedOnThePage(t, item, "1100")
	auction.ReportPrice(1100, 50, "other@"+p.Domain())
	waitFor(t, ctx, "Losing", rowShows(item, "Losing", 1100, 0))

	setLimit := func(n string) {
		t.Helper()
		err := chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(fmt.Sprintf("#row-%s button.edit", item))),
			chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf("#row-%s input.stop-edit", item))),
			chromedp.SetValue(chromedp.CSS(fmt.Sprintf("#row-%s input.stop-edit", item)), n),
			chromedp.Click(chromedp.CSS(fmt.Sprintf("#row-%s .stop-edit-form button", item))),
		)
		if err != nil {
			t.Fatalf("set the limit to %s: %v", n, err)
		}
	}
	setLimit("1200")
	waitFor(t, ctx, "Bidding 1150 under the new limit", rowShows(item, "Bidding", 1100, 1150))
	waitFor(t, ctx, "the new stop price", fmt.Sprintf(`document.querySelector(%q).textContent === "1200"`, row(item, "stop-price")))
	auction.HasReceivedBid(1150, app.SniperJID())

	setLimit("1000")
	waitFor(t, ctx, "the refusal beside the field", fmt.Sprintf(`/a bid of 1150 standing/.test((document.querySelector("#row-%s .stop-edit-error")||{}).textContent||"")`, item))
	if n := auction.CountBids(1150); n != 1 {
		t.Errorf("%d bids at 1150 on the wire, want 1", n)
	}
}

// joinedOnThePage starts Prosody, an auction for item and the app, opens
// the page in Chromium and joins the auction there with stopPrice, until
// the auction has the JOIN.
func joinedOnThePage(t *testing.T, item, stopPrice string) (*testkit.Prosody, *testkit.FakeAuctionServer, *testkit.ApplicationRunner, context.Context) {
	t.Helper()
	p := testkit.StartProsody(t)
	auction := testkit.NewFakeAuctionServer(t, p, item)
	app := testkit.StartApplication(t, p, t.TempDir())
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(app.App.HTTPURL())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the live stream connected", `document.getElementById("live").textContent === "live"`)
	join(t, ctx, item, stopPrice)
	waitFor(t, ctx, "the new row as Joining", rowShows(item, "Joining", 0, 0))
	auction.HasReceivedJoinRequestFrom(app.SniperJID())
	return p, auction, app, ctx
}

// A last-second sniper joined from the page shows, while it waits, a
// countdown to its bid, which goes once the bid is made.
func TestBrowserShowsALastSecondCountdown(t *testing.T) {
	p := testkit.StartProsody(t)
	const item = "item-countdown"
	auction := testkit.NewFakeAuctionServer(t, p, item)
	app := testkit.StartApplication(t, p, t.TempDir())
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(app.App.HTTPURL())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the live stream connected", `document.getElementById("live").textContent === "live"`)
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("lead"), "1")); err != nil {
		t.Fatal(err)
	}
	join(t, ctx, item, "5000")
	waitFor(t, ctx, "the new row", rowShows(item, "Joining", 0, 0))
	auction.HasReceivedJoinRequestFrom(app.SniperJID())
	closeAt := time.Now().Add(4 * time.Second)
	auction.ReportPriceClosing(1000, 50, "other@"+p.Domain(), closeAt)
	waitFor(t, ctx, "Waiting with a countdown", fmt.Sprintf(`/^bids in [0-9.]+ s$/.test(%s)`, textOf(item, "countdown")))
	auction.HasReceivedBid(1050, app.SniperJID())
	waitFor(t, ctx, "Bidding, the countdown gone", rowShows(item, "Bidding", 1000, 1050)+fmt.Sprintf(` && %s === ""`, textOf(item, "countdown")))
	if sent := time.Now(); sent.Before(closeAt.Add(-1500 * time.Millisecond)) {
		t.Errorf("the bid came %s before the close, want within the 1 s lead (and the page's reaction)", closeAt.Sub(sent))
	}
}

// textOf is a JS expression: the text of the element of class cls in
// item's row, "" if there is none.
func textOf(item, cls string) string {
	return fmt.Sprintf(`((document.querySelector("#row-%s .%s")||{}).textContent||"")`, item, cls)
}

// A snipe group's members are shown together, each with the group's
// badge, the one bidding first and the others Waiting.
func TestBrowserShowsAGroupTogether(t *testing.T) {
	p := testkit.StartProsody(t)
	var auctions []*testkit.FakeAuctionServer
	for _, item := range []string{"zz-solo", "cam-a", "cam-b"} {
		auctions = append(auctions, testkit.NewFakeAuctionServer(t, p, item))
	}
	app := testkit.StartApplication(t, p, t.TempDir())
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(app.App.HTTPURL())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the live stream connected", `document.getElementById("live").textContent === "live"`)
	join(t, ctx, "zz-solo", "100")
	if _, _, _, err := app.Client.JoinGroup(context.Background(), "camera", 1, []client.GroupItem{{Item: "cam-b", StopPrice: 1000}, {Item: "cam-a", StopPrice: 1000}}); err != nil {
		t.Fatal(err)
	}
	for _, a := range auctions {
		a.HasReceivedJoinRequestFrom(app.SniperJID())
	}
	auctions[1].ReportPrice(500, 50, "other@"+p.Domain())
	auctions[2].ReportPrice(600, 50, "other@"+p.Domain())
	waitFor(t, ctx, "cam-a bidding", rowShows("cam-a", "Bidding", 500, 550))
	waitFor(t, ctx, "cam-b waiting", rowShows("cam-b", "Waiting", 600, 0))
	order, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("#snipers tbody tr")].map((r) => r.dataset.item + ":" + ((r.querySelector(".group-badge")||{}).textContent||"-")).join(" ")`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "cam-a:camera cam-b:camera zz-solo:-"; order != want {
		t.Errorf("rows %q, want %q (the group together, first)", order, want)
	}
}
