package web_test

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"sniper/internal/app"
	"sniper/testkit"
)

// The header says whether the auction house is reachable, live: it turns
// to "disconnected" (with the reason as its tooltip) while Prosody is
// down, and back when the sniper reconnects, without a reload.
func TestBrowserShowsTheAuctionHouseConnection(t *testing.T) {
	p := testkit.StartProsody(t)
	app := testkit.StartApplication(t, p, t.TempDir())
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(app.App.HTTPURL())); err != nil {
		t.Fatal(err)
	}
	const badge = `document.getElementById("auction-house")`
	waitFor(t, ctx, "auction house: connected", badge+`.textContent === "auction house: connected" && !`+badge+`.hidden`)
	if got := text(t, ctx, "#log-status"); got == "" {
		t.Fatal("no event log badge in the page")
	}
	waitFor(t, ctx, "the event log badge hidden while the log is fine", `document.getElementById("log-status").hidden`)

	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "auction house: disconnected", badge+`.textContent === "auction house: disconnected" && `+badge+`.className.includes("off")`)
	title, err := chromedp.Run(ctx, chromedp.Evaluate[string](badge+`.title`))
	if err != nil || title != "not connected to the auction house at "+p.Addr() {
		t.Errorf("badge tooltip = %q, %v; want the reason", title, err)
	}

	startCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Start(startCtx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "auction house: connected again", badge+`.textContent === "auction house: connected" && `+badge+`.className.includes("on")`)
}

// The header says whether this instance is active or a standby, and which
// instance is active; a standby's page turns to "active" when it takes
// over, without a reload.
func TestBrowserShowsTheInstanceRole(t *testing.T) {
	p := testkit.StartProsody(t)
	n := testkit.StartNATS(t)
	first := testkit.StartApplication(t, p, t.TempDir(), func(c *app.Config) {
		c.Instance = "first"
		c.NATSURL = n.Server.ClientURL()
	})
	second := testkit.StartApplication(t, p, t.TempDir(), func(c *app.Config) {
		c.Instance = "second"
		c.NATSURL = n.Server.ClientURL()
	})
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(second.App.HTTPURL())); err != nil {
		t.Fatal(err)
	}
	const badge = `document.getElementById("role")`
	waitFor(t, ctx, "standby (active: first)", badge+`.textContent === "standby (active: first)" && !`+badge+`.hidden && `+badge+`.className.includes("off")`)

	// A graceful stop resigns the lease: the standby takes over at once.
	first.Stop()
	waitFor(t, ctx, "active", badge+`.textContent === "active" && `+badge+`.className.includes("on")`)
}
