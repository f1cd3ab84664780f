package acceptance

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"sniper/internal/app"
	"sniper/messages"
	"sniper/testkit"
)

const (
	item3 = "item-76543"
	item4 = "item-87654"
)

// Prosody is stopped for 10 s mid-auction. Meanwhile the user joins two
// new auctions and stops another sniper through the API: the decisions are
// made and logged at once, the API, /readyz and the live stream say the
// auction house is disconnected, and once Prosody is back the JOINs go out
// in order per auction, each once, and the auction that was running
// carries on.
//
// A message to an auction that is offline bounces (Prosody has no offline
// storage here); the sniper retries a bounced request for 30 s from its
// decision, which an outage this long has used up, so the test makes the
// auctions log in again before the sniper does: the sniper reaches
// Prosody through a relay the test keeps closed until then. In production
// the auction house is a service that is back before its clients; see
// docs/reliability.md.
func TestDecisionsMadeWhileTheAuctionHouseIsDownAreSentLater(t *testing.T) {
	p := testkit.StartProsody(t)
	a1 := testkit.NewFakeAuctionServer(t, p, item1)
	a2 := testkit.NewFakeAuctionServer(t, p, item2)
	a3 := testkit.NewFakeAuctionServer(t, p, item3)
	a4 := testkit.NewFakeAuctionServer(t, p, item4)
	gate := newXMPPGate(t, p.Addr())
	logger, logs := captureLogs(t)
	run := testkit.StartApplication(t, p, t.TempDir(), func(c *app.Config) {
		c.XMPP.Addr = gate.Addr()
		c.Logger = logger
	})
	base := run.App.HTTPURL()
	stream := openStream(t, base)
	stream.waitStatus(t, 0, "the auction house connected", func(s statusBody) bool { c, ok := s.check("xmpp"); return ok && c.OK })

	run.StartBiddingIn(a1, a2)
	a1.HasReceivedJoinRequestFrom(run.SniperJID())
	a2.HasReceivedJoinRequestFrom(run.SniperJID())
	a1.ReportPrice(1000, 98, "other bidder")
	run.HasShownSniperIsBidding(a1, 1000, 1098)
	a1.HasReceivedBid(1098, run.SniperJID())

	// The auction house goes down.
	stopped := time.Now()
	gate.SetOpen(false)
	if err := p.Stop(); err != nil {
		t.Fatalf("stop prosody: %v", err)
	}
	gone := time.Now()
	testkit.Eventually(t, testkit.WaitTimeout, func() bool { return !run.App.XMPPConnected() }, "the sniper never noticed the auction house is gone")
	var ready statusBody
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		var code int
		code, ready, _, _ = request(t, http.MethodGet, base+"/readyz", "")
		return code == http.StatusServiceUnavailable && ready.failing("xmpp")
	}, "/readyz never said the auction house is down: %+v", &ready)
	t.Logf("Prosody took %s to stop; /readyz 503 naming xmpp %s after it was gone", fmtDur(gone.Sub(stopped)), fmtDur(time.Since(gone)))
	code, st, raw, _ := request(t, http.MethodGet, base+"/api/status", "")
	if c, _ := st.check("xmpp"); code != http.StatusOK || st.Ready || c.OK || !strings.Contains(c.Error, "not connected to the auction house") {
		t.Fatalf("GET /api/status while the auction house is down: %d %s", code, raw)
	}
	if !st.failing("xmpp") || st.failing("nats") || st.failing("stream") || st.failing("log_writes") {
		t.Fatalf("GET /api/status should blame the auction house only: %s", raw)
	}
	downAt := stream.waitStatus(t, 0, "the auction house disconnected", func(s statusBody) bool { return !s.Ready && s.failing("xmpp") })

	// Meanwhile the user joins two auctions and stops another sniper.
	for _, item := range []string{item3, item4} {
		code, _, raw, _ := request(t, http.MethodPost, base+"/api/snipers", `{"item":"`+item+`","stop_price":5000}`)
		if code != http.StatusCreated || !strings.Contains(string(raw), `"state":"Joining"`) {
			t.Fatalf("join %s while the auction house is down: %d %s", item, code, raw)
		}
	}
	code, _, raw, _ = request(t, http.MethodDelete, base+"/api/snipers/"+item2, "")
	if code != http.StatusOK || !strings.Contains(string(raw), `"state":"Stopped"`) {
		t.Fatalf("stop %s while the auction house is down: %d %s", item2, code, raw)
	}
	for _, item := range []string{item3, item4} {
		if n := countSubject(t, run.App.Log(), item, messages.KindDec, messages.TypeJoin); n != 1 {
			t.Fatalf("%s: %d decisions to join in the log while the auction house is down, want 1", item, n)
		}
	}

	outageLasts(stopped, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	restarted := time.Now()
	if err := p.Start(ctx); err != nil {
		t.Fatalf("restart prosody: %v", err)
	}
	for _, a := range []*testkit.FakeAuctionServer{a1, a2, a3, a4} {
		a.WaitConnected()
	}
	if joins(a3) != 0 || joins(a4) != 0 {
		t.Fatalf("JOINs arrived while the auction house was down")
	}
	gate.SetOpen(true)
	opened := time.Now()
	testkit.Eventually(t, testkit.WaitTimeout, run.App.XMPPConnected, "the sniper did not reconnect")
	t.Logf("outage %s; Prosody listening %s after its start; the sniper reconnected %s after it could (max backoff 200ms)",
		fmtDur(restarted.Sub(stopped)), fmtDur(opened.Sub(restarted)), fmtDur(time.Since(opened)))

	a3.HasReceivedJoinRequestFrom(run.SniperJID())
	a4.HasReceivedJoinRequestFrom(run.SniperJID())
	t.Logf("both JOINs decided during the outage arrived %s after the sniper could reconnect", fmtDur(time.Since(opened)))
	if code, _, _, _ := request(t, http.MethodGet, base+"/readyz", ""); code != http.StatusOK {
		testkit.Eventually(t, testkit.WaitTimeout, func() bool {
			code, ready, _, _ = request(t, http.MethodGet, base+"/readyz", "")
			return code == http.StatusOK
		}, "/readyz never recovered: %+v", &ready)
	}
	stream.waitStatus(t, downAt+1, "the auction house connected again", func(s statusBody) bool { return s.Ready })

	// Each auction's requests are sent in log order (item1's JOIN before
	// its BID), each once; different auctions do not wait on each other,
	// so their order on the wire is free. The bridge logs "sent" once the
	// server confirmed it, which can be just after the auction already
	// has the message: wait for the lines.
	want := map[string][]string{
		item1: {testkit.SOLJoin, testkit.SOLBid(1098)},
		item2: {testkit.SOLJoin},
		item3: {testkit.SOLJoin},
		item4: {testkit.SOLJoin},
	}
	sent := map[string][]string{}
	total := 0
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		clear(sent)
		total = 0
		for _, r := range logs.find(func(r capturedLog) bool { return r.Message == "sent" && r.Attrs["component"] == "xmpp-out" }) {
			sent[r.Attrs["item"]] = append(sent[r.Attrs["item"]], r.Attrs["body"])
			total++
		}
		return total >= 5
	}, "the bridge logged %v, want 5 sends", &sent)
	for item, w := range want {
		if strings.Join(sent[item], "\n") != strings.Join(w, "\n") {
			t.Errorf("sent to %s:\n%s\nwant, in this order:\n%s", item, strings.Join(sent[item], "\n"), strings.Join(w, "\n"))
		}
	}
	if total != 5 {
		t.Errorf("the bridge sent %d messages, want 5: %v", total, sent)
	}
	for _, a := range []*testkit.FakeAuctionServer{a1, a2, a3, a4} {
		if n := joins(a); n != 1 {
			t.Errorf("%s received %d JOINs, want 1", a.Item(), n)
		}
	}

	// The auctions carry on: the running one bids, the new ones too, the
	// stopped one stays stopped.
	a1.ReportPrice(1200, 10, "other bidder")
	run.HasShownSniperIsBidding(a1, 1200, 1210)
	a1.HasReceivedBid(1210, run.SniperJID())
	a3.ReportPrice(100, 5, "other bidder")
	run.HasShownSniperIsBidding(a3, 100, 105)
	a3.HasReceivedBid(105, run.SniperJID())
	if v, _ := run.Sniper(item2); v.State != "Stopped" {
		t.Errorf("%s is %+v after the outage, want Stopped", item2, v)
	}
	for _, item := range []string{item1, item2, item3, item4} {
		waitAllDecided(t, run.App.Log(), item)
		checkExactlyOnce(t, run.App.Log(), item)
	}
	if n := a1.CountBids(1098) + a1.CountBids(1210); n != 2 {
		t.Errorf("%s received %d BIDs, want 2", item1, n)
	}
}
