package web_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"sniper/internal/app"
	"sniper/testkit"
)

// browser starts headless Chromium (Debian's package) for one test.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not installed: run apt-get install -y chromium (or make deps): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.WindowSize(1100, 800),
		// The machine has no internet: keep Chromium from trying.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// waitFor polls a JavaScript predicate in the page until it is true.
func waitFor(t *testing.T, ctx context.Context, what, predicate string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](predicate, chromedp.WithPollingTimeout(testkit.WaitTimeout))); err != nil {
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("main")))
		t.Fatalf("page never showed %s (%s): %v\npage:\n%s", what, predicate, err, html)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q)||{}).textContent||""`, sel)))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func row(item, field string) string { return fmt.Sprintf("#row-%s .%s", item, field) }

// rowShows is a predicate: the item's row shows state, last price, last bid.
func rowShows(item, state string, lastPrice, lastBid int64) string {
	return fmt.Sprintf(`(() => { const r = document.getElementById(%q); return !!r &&
		r.querySelector(".state").textContent === %q &&
		r.querySelector(".last-price").textContent === %q &&
		r.querySelector(".last-bid").textContent === %q })()`,
		"row-"+item, state, fmt.Sprint(lastPrice), fmt.Sprint(lastBid))
}

func join(t *testing.T, ctx context.Context, item, stopPrice string) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("item"), item),
		chromedp.SetValue(chromedp.ID("stop-price"), stopPrice),
		chromedp.Click(chromedp.ID("join-button")),
	)
	if err != nil {
		t.Fatalf("fill the join form: %v", err)
	}
}

func TestBrowserPlaysTheAuction(t *testing.T) {
	p := testkit.StartProsody(t)
	const item, item2 = "item-54321", "item-65432"
	auction := testkit.NewFakeAuctionServer(t, p, item)
	broken := testkit.NewFakeAuctionServer(t, p, item2)
	app := testkit.StartApplication(t, p, t.TempDir())
	ctx := browser(t)

	if err := chromedp.Do(ctx, chromedp.Navigate(app.App.HTTPURL())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the live stream connected", `document.getElementById("live").textContent === "live"`)

	// A bad stop price is refused next to its field, before any request.
	join(t, ctx, item, "12abc")
	waitFor(t, ctx, "the stop price error", `document.getElementById("stop-price-error").textContent !== ""`)
	if _, ok := app.Sniper(item); ok {
		t.Fatal("an invalid form created a sniper")
	}

	join(t, ctx, item, "1100")
	waitFor(t, ctx, "the new row as Joining", rowShows(item, "Joining", 0, 0))
	auction.HasReceivedJoinRequestFrom(app.SniperJID())

	// Without reload: the row follows the auction live.
	auction.ReportPrice(1000, 98, "<script>window.pwned=1</script>")
	waitFor(t, ctx, "Bidding(1000, 1098)", rowShows(item, "Bidding", 1000, 1098))
	auction.ReportPrice(1098, 97, app.SniperJID())
	waitFor(t, ctx, "Winning", rowShows(item, "Winning", 1098, 1098))
	auction.AnnounceClosed()
	waitFor(t, ctx, "Won", rowShows(item, "Won", 1098, 1098))

	// The history lists the events from the log; the bidder's name with a
	// script tag in it is shown as text and never runs.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf("#row-%s button.link", item)))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the history", `document.querySelectorAll("#history-events li").length >= 8`)
	hist := text(t, ctx, "#history-events")
	for _, want := range []string{"You joined, bidding up to 1100", "Price 1000 (increment 98) by <script>window.pwned=1</script>", "Decided to bid 1098", "Sent to the auction house: SOLVersion: 1.1; Command: BID; Price: 1098;", "The auction closed", "Now Won"} {
		if !strings.Contains(hist, want) {
			t.Errorf("history lacks %q:\n%s", want, hist)
		}
	}
	pwned, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.pwned === 1 || document.querySelectorAll("main script").length > 0`))
	if err != nil || pwned {
		t.Fatalf("a bidder name was interpreted as HTML (pwned=%v, err=%v)", pwned, err)
	}

	// A malformed message fails the sniper, with the reason readable.
	join(t, ctx, item2, "5000")
	waitFor(t, ctx, "the second row", rowShows(item2, "Joining", 0, 0))
	broken.HasReceivedJoinRequestFrom(app.SniperJID())
	broken.SendInvalidMessageContaining("a broken <b>message</b>")
	waitFor(t, ctx, "Failed", fmt.Sprintf(`(document.querySelector("#row-%s .state")||{}).textContent === "Failed"`, item2))
	if reason := text(t, ctx, row(item2, "reason")); !strings.Contains(reason, "a broken <b>message</b>") {
		t.Fatalf("the failure reason shown is %q, want it to quote the message", reason)
	}

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	// SNIPER_UPDATE_SCREENSHOT=1 refreshes the README's picture.
	dst := filepath.Join(t.TempDir(), "ui.png")
	if os.Getenv("SNIPER_UPDATE_SCREENSHOT") != "" {
		dst = filepath.Join("..", "docs", "ui.png")
	}
	if err := os.WriteFile(dst, shot, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startApp runs the sniper without an auction house: enough for the page.
func startApp(t *testing.T, dir, httpAddr string) *app.App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := app.Start(ctx, app.Config{DataDir: dir, NATSListen: "127.0.0.1:0", HTTPAddr: httpAddr, Fsync: time.Minute, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop(context.Background()) })
	return a
}

func post(t *testing.T, a *app.App, body string) {
	t.Helper()
	res, err := http.Post(a.HTTPURL()+"/api/snipers", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("POST %s: %d", body, res.StatusCode)
	}
}

func TestBrowserReconnectsWhenTheStreamDrops(t *testing.T) {
	dir := t.TempDir()
	a := startApp(t, dir, "127.0.0.1:0")
	addr := strings.TrimPrefix(a.HTTPURL(), "http://")
	post(t, a, `{"item":"before","stop_price":10}`)
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(a.HTTPURL())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the first sniper", rowShows("before", "Joining", 0, 0))
	waitFor(t, ctx, "live", `document.getElementById("live").textContent === "live"`)

	a.Stop(context.Background())
	waitFor(t, ctx, "the stream lost", `document.getElementById("live").textContent !== "live"`)

	a = startApp(t, dir, addr)
	post(t, a, `{"item":"after","stop_price":10}`)
	waitFor(t, ctx, "live again", `document.getElementById("live").textContent === "live"`)
	waitFor(t, ctx, "a sniper joined after the reconnect, without reload", rowShows("after", "Joining", 0, 0))
}

func TestBrowserPhoneWidth(t *testing.T) {
	a := startApp(t, t.TempDir(), "127.0.0.1:0")
	post(t, a, `{"item":"a-rather-long-item-name-for-a-small-screen","stop_price":123456789}`)
	ctx := browser(t)
	err := chromedp.Do(ctx, chromedp.EmulateViewport(375, 740), chromedp.Navigate(a.HTTPURL()))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the row", rowShows("a-rather-long-item-name-for-a-small-screen", "Joining", 0, 0))
	fits, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth <= window.innerWidth &&
		getComputedStyle(document.querySelector("thead")).display === "none"`))
	if err != nil || !fits {
		t.Fatalf("the page does not fit a 375 px screen (fits=%v, err=%v)", fits, err)
	}
}
