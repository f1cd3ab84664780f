package acceptance

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
	"sniper/xmppclient"
)

// SIGTERM (App.Stop, which is what cmd/sniper calls on it) in the middle
// of a burst of 50 PRICEs: the stop takes well under 10 s, and after a
// restart on the same data dir every price that reached the log is
// decided exactly once, with exactly one BID per bid decision, and
// every BID reaches the auction. Prices that bounced at the XMPP server
// while the sniper was down never reached the log and are not counted:
// the auction house's next PRICE carries the current price anyway.
func TestStopDuringABurstLosesNothing(t *testing.T) {
	const burst = 50
	p := testkit.StartProsody(t)
	auction := testkit.NewFakeAuctionServer(t, p, item1)
	dir := t.TempDir()
	run := testkit.StartApplication(t, p, dir)
	run.StartBiddingIn(auction)
	auction.HasReceivedJoinRequestFrom(run.SniperJID())

	// Stop as soon as a fifth of the burst is in the log.
	l := run.App.Log()
	type stopped struct {
		took          time.Duration
		pricesAtStop  int
		decidedAtStop uint64
	}
	stopDone := make(chan stopped, 1)
	go func() {
		// Polls the log (no t.Fatal off the test's goroutine); gives up
		// waiting after WaitTimeout and stops anyway.
		deadline := time.After(testkit.WaitTimeout)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
	poll:
		for prices(l) < burst/5 {
			select {
			case <-tick.C:
			case <-deadline:
				break poll
			}
		}
		s := stopped{pricesAtStop: prices(l)}
		if snap, err := l.LastDecision(context.Background(), item1); err == nil {
			s.decidedAtStop = snap.InputSeq
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		began := time.Now()
		run.App.Stop(ctx)
		s.took = time.Since(began)
		stopDone <- s
	}()
	for i := range burst {
		// Prices sent once the sniper has logged off bounce: they never
		// reached it, and the checks below count only what reached the log.
		err := auction.TrySendTo(run.SniperJID(), testkit.SOLPrice(int64(1000+10*i), 5, "other bidder"))
		if err != nil && !errors.Is(err, xmppclient.ErrUndelivered) {
			t.Fatalf("price %d: %v", i, err)
		}
	}
	var st stopped
	select {
	case st = <-stopDone:
	case <-time.After(20 * time.Second):
		t.Fatal("App.Stop did not return within 20 s")
	}
	if st.took > 10*time.Second {
		t.Errorf("App.Stop took %s during the burst, want < 10 s", st.took)
	}

	run = testkit.StartApplication(t, p, dir)
	l = run.App.Log()
	stored := prices(l)
	restarted := time.Now()
	waitAllDecided(t, l, item1)
	t.Logf("stop took %s with %d prices in the log (decided up to seq %d); %d of %d prices reached the log; all decided %s after the restart",
		fmtDur(st.took), st.pricesAtStop, st.decidedAtStop, stored, burst, fmtDur(time.Since(restarted)))
	rep := checkExactlyOnce(t, l, item1)
	if rep.Inputs != stored+1 {
		t.Errorf("%d inputs in the log, want %d prices and the start", rep.Inputs, stored)
	}
	if rep.Decisions != rep.Inputs || rep.Bids != stored {
		t.Errorf("log of %s: %+v; want every input decided once and one bid per stored price", item1, rep)
	}
	// Every BID in the log reaches the auction (at least once: a BID on
	// the wire whose request was not yet acked is sent again).
	dups := 0
	for _, price := range bidPrices(t, l, item1) {
		auction.HasReceivedBids(price, 1)
		dups += auction.CountBids(price) - 1
	}
	t.Logf("%d BIDs sent twice (at-least-once across the stop); all BIDs at the auction %s after the restart", dups, fmtDur(time.Since(restarted)))
}

// prices counts item1's stored PRICEs; -1 if the log cannot say.
func prices(l *jetstream.Log) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	recs, err := l.History(ctx, item1)
	if err != nil {
		return -1
	}
	n := 0
	for _, r := range recs {
		if r.Subject == messages.Subject(item1, messages.KindIn, messages.TypePrice) {
			n++
		}
	}
	return n
}

func bidPrices(t *testing.T, l *jetstream.Log, item string) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	recs, err := l.History(ctx, item)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, r := range recs {
		if r.Subject != messages.DecisionSubject(item, messages.TypeBid) {
			continue
		}
		var d messages.DecisionEvent
		if err := json.Unmarshal(r.Data, &d); err != nil {
			t.Fatal(err)
		}
		for _, req := range d.Send {
			if req.Type == messages.TypeBid {
				out = append(out, req.Price)
			}
		}
	}
	return out
}
