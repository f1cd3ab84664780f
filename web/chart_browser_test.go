package web_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// The history draws the auction: the price path, a mark for each of the
// sniper's bids, the stop price as a line and how it ended.
// SNIPER_SCREENSHOT=../docs/history.png (relative to web/) saves a picture
// of the history view there.
func TestBrowserChartsTheHistory(t *testing.T) {
	const item = "item-chart"
	p, auction, app, ctx := joinedOnThePage(t, item, "1300")

	// Three bids: each time another bidder goes ahead within the stop
	// price; then one over it, where the sniper gives up.
	other := "other@" + p.Domain()
	bids := []struct{ price, increment, bid int64 }{{1000, 98, 1098}, {1150, 20, 1170}, {1200, 25, 1225}}
	for _, b := range bids {
		auction.ReportPrice(b.price, b.increment, other)
		waitFor(t, ctx, fmt.Sprintf("Bidding(%d, %d)", b.price, b.bid), rowShows(item, "Bidding", b.price, b.bid))
		auction.HasReceivedBid(b.bid, app.SniperJID())
		auction.ReportPrice(b.bid, 15, app.SniperJID())
		waitFor(t, ctx, fmt.Sprintf("Winning(%d)", b.bid), rowShows(item, "Winning", b.bid, b.bid))
	}
	auction.ReportPrice(1290, 20, other)
	waitFor(t, ctx, "Losing", rowShows(item, "Losing", 1290, 1225))
	auction.AnnounceClosed()
	waitFor(t, ctx, "Lost", rowShows(item, "Lost", 1290, 1225))

	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf("#row-%s button.link", item)))); err != nil {
		t.Fatal(err)
	}
	// The chart is drawn with the list, from the same answer; the list is
	// complete once it shows the close and the last decision.
	waitFor(t, ctx, "the chart with the outcome", `(document.querySelector("#history-chart .chart-outcome")||{}).textContent === "Lost"`)

	count := func(sel string) int {
		t.Helper()
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count("#history-chart svg .bid-mark"); n != len(bids) {
		t.Errorf("the chart has %d bid marks, want %d (one per bid the sniper made)", n, len(bids))
	}
	if n := count("#history-chart svg .price-point"); n != 2*len(bids)+1 {
		t.Errorf("the chart has %d price points, want %d (one per price reported)", n, 2*len(bids)+1)
	}
	if n := count("#history-chart svg line.stop-line"); n != 1 {
		t.Errorf("the chart has %d stop lines, want 1", n)
	}
	if label := text(t, ctx, "#history-chart .stop-label"); label != "stop 1300" {
		t.Errorf("the stop line is labelled %q, want %q", label, "stop 1300")
	}
	// Each bid mark sits at its own price: higher bids are drawn higher,
	// and all of them below the stop line.
	ys, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](`[...document.querySelectorAll("#history-chart .bid-mark")].map((c) => Number(c.getAttribute("cy")))`))
	if err != nil {
		t.Fatal(err)
	}
	stopY, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`Number(document.querySelector("#history-chart .stop-line").getAttribute("y1"))`))
	if err != nil {
		t.Fatal(err)
	}
	for i, y := range ys {
		if y <= stopY || (i > 0 && y >= ys[i-1]) {
			t.Errorf("bid marks at y %v with the stop line at y %v: want each bid above the one before and below the stop line", ys, stopY)
			break
		}
	}
	titles := text(t, ctx, "#history-chart svg")
	for _, b := range bids {
		if want := fmt.Sprintf("the sniper bid %d", b.bid); !strings.Contains(titles, want) {
			t.Errorf("the chart lacks %q: %s", want, titles)
		}
	}

	if dst := os.Getenv("SNIPER_SCREENSHOT"); dst != "" {
		shot, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.ID("history")))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Before the auction house has said anything the chart is still drawn:
// the stop line, no marks, and a word on why it is empty.
func TestBrowserChartsAnAuctionWithoutPrices(t *testing.T) {
	a := startApp(t, t.TempDir(), "127.0.0.1:0")
	post(t, a, `{"item":"quiet","stop_price":250}`)
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(a.HTTPURL())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the row", rowShows("quiet", "Joining", 0, 0))
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#row-quiet button.link"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the chart", `!!document.querySelector("#history-chart svg .chart-outcome")`)
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[
		document.querySelectorAll("#history-chart .bid-mark").length,
		document.querySelectorAll("#history-chart .stop-line").length,
		document.querySelector("#history-chart .stop-label").textContent,
		document.querySelector("#history-chart .chart-empty").textContent,
		document.querySelector("#history-chart .chart-outcome").textContent].join("|")`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "0|1|stop 250|no price from the auction house yet|Joining"; got != want {
		t.Fatalf("chart shows %q, want %q", got, want)
	}
}
