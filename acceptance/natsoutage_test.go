package acceptance

import (
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"sniper/internal/app"
	"sniper/messages"
	"sniper/testkit"
)

// The sniper runs against a separate NATS server (--nats-url), which is
// restarted mid-auction. While it is gone, commands answer 503 at once,
// reads of the cached state still answer, /readyz names NATS, and a PRICE
// the auction sends is held by the inbound bridge. After the restart every
// follower resumes: the held PRICE and a new one are each decided once,
// each gets one BID, nothing is lost or doubled.
//
// The outage lasts 3 s, or SNIPER_NATS_OUTAGE (make faults: 2m). Past 3/4
// of the lease's TTL the instance cannot renew its lease and ends its term
// (the XMPP session closes); the PRICE the bridge holds is stored in the
// background when the log returns, and the instance, taking its own lease
// back, decides it.
func TestSniperRidesOutANATSServerRestart(t *testing.T) {
	outage := 3 * time.Second
	if v := os.Getenv("SNIPER_NATS_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SNIPER_NATS_OUTAGE=%q: %v", v, err)
		}
		outage = d
	}
	p := testkit.StartProsody(t)
	auction := testkit.NewFakeAuctionServer(t, p, item1)
	natsDir := t.TempDir() // the store survives the restart
	n := testkit.StartNATSOn(t, natsDir, "127.0.0.1:0")
	natsAddr, natsURL := n.ClientAddr(), n.Server.ClientURL()
	logger, logs := captureLogs(t)
	run := testkit.StartApplication(t, p, t.TempDir(), func(c *app.Config) { c.NATSURL = natsURL; c.Logger = logger })
	base := run.App.HTTPURL()

	run.StartBiddingIn(auction)
	auction.HasReceivedJoinRequestFrom(run.SniperJID())
	auction.ReportPrice(1000, 98, "other bidder")
	run.HasShownSniperIsBidding(auction, 1000, 1098)
	auction.HasReceivedBid(1098, run.SniperJID())
	stream := openStream(t, base)

	// The NATS server goes away.
	stopped := time.Now()
	n.Stop()
	var ready statusBody
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		var code int
		code, ready, _, _ = request(t, http.MethodGet, base+"/readyz", "")
		return code == http.StatusServiceUnavailable && ready.failing("nats")
	}, "/readyz never said NATS is down: %+v", &ready)
	t.Logf("/readyz 503 naming nats %s after the server stopped: %q", fmtDur(time.Since(stopped)), func() string { c, _ := ready.check("nats"); return c.Error }())
	stream.waitStatus(t, 0, "nats down", func(s statusBody) bool { return !s.Ready && s.failing("nats") })

	// Commands fail fast with a JSON error; cached reads still answer.
	code, body, raw, took := request(t, http.MethodPost, base+"/api/snipers", `{"item":"item-99999","stop_price":500}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(body.Error, "unavailable") || took > time.Second {
		t.Fatalf("POST while NATS is down: %d %s after %s, want 503 with an error within 1s", code, raw, took)
	}
	t.Logf("POST answered 503 in %s: %s", fmtDur(took), body.Error)
	code, body, raw, took = request(t, http.MethodDelete, base+"/api/snipers/"+item1, "")
	if code != http.StatusServiceUnavailable || body.Error == "" || took > time.Second {
		t.Fatalf("DELETE while NATS is down: %d %s after %s, want 503 with an error within 1s", code, raw, took)
	}
	t.Logf("DELETE answered 503 in %s", fmtDur(took))
	if v, ok := run.Sniper(item1); !ok || v.State != "Bidding" || v.LastBid != 1098 {
		t.Fatalf("GET of the cached sniper while NATS is down: %+v, %v", v, ok)
	}
	if code, _, raw, _ := request(t, http.MethodGet, base+"/api/snipers", ""); code != http.StatusOK || !strings.Contains(string(raw), item1) {
		t.Fatalf("GET /api/snipers while NATS is down: %d %s", code, raw)
	}

	// The auction carries on meanwhile: the inbound bridge holds its PRICE.
	auction.ReportPrice(1100, 10, "other bidder")
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		return len(logs.find(func(r capturedLog) bool {
			return r.Level == slog.LevelError && strings.HasPrefix(r.Message, "cannot store auction event") &&
				r.Attrs["subject"] == messages.Subject(item1, messages.KindIn, messages.TypePrice)
		})) > 0
	}, "the inbound bridge never reported the PRICE it cannot store")
	// A few seconds of outage: pulls, heartbeats and retries all lapse.
	outageLasts(stopped, outage)

	// The server comes back on the same address and store.
	restarted := time.Now()
	n = testkit.StartNATSOn(t, natsDir, natsAddr)
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		code, ready, _, _ = request(t, http.MethodGet, base+"/readyz", "")
		return code == http.StatusOK
	}, "/readyz never recovered: %+v", &ready)
	t.Logf("outage %s; ready again %s after the server restarted", fmtDur(restarted.Sub(stopped)), fmtDur(time.Since(restarted)))
	stream.waitStatus(t, 1, "ready again", func(s statusBody) bool { return s.Ready })

	// The PRICE held during the outage is decided and bid on...
	run.HasShownSniperIsBidding(auction, 1100, 1110)
	auction.HasReceivedBid(1110, run.SniperJID())
	t.Logf("the PRICE held during the outage got its BID %s after the restart", fmtDur(time.Since(restarted)))
	// ...and so is one sent after the restart.
	auction.ReportPrice(1200, 10, "other bidder")
	run.HasShownSniperIsBidding(auction, 1200, 1210)
	auction.HasReceivedBid(1210, run.SniperJID())
	// Commands work again.
	if code, _, raw, _ := request(t, http.MethodPost, base+"/api/snipers", `{"item":"item-99999","stop_price":500}`); code != http.StatusCreated {
		t.Fatalf("POST after the restart: %d %s", code, raw)
	}

	waitAllDecided(t, n.Log, item1)
	rep := checkExactlyOnce(t, n.Log, item1)
	if rep.Inputs != 4 || rep.Bids != 3 || rep.Joins != 1 {
		t.Errorf("log of %s: %+v, want 4 inputs (start, 3 prices), 3 bids, 1 join", item1, rep)
	}
	if got := countSubject(t, n.Log, item1, messages.KindIn, messages.TypePrice); got != 3 {
		t.Errorf("%d prices stored, want 3 (none lost, none doubled)", got)
	}
	for _, price := range []int64{1098, 1110, 1210} {
		if c := auction.CountBids(price); c != 1 {
			t.Errorf("the auction received %d BIDs at %d, want 1", c, price)
		}
	}
}
