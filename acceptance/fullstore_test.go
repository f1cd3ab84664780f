package acceptance

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"sniper/internal/app"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
)

// The SNIPER stream reaches its limit (DiscardNew: it refuses writes). A
// PRICE that was stored cannot be decided: the sniper holds it undecided,
// says so in an ERROR line and in readiness (log_writes), and a PRICE that
// arrives meanwhile is held by the inbound bridge. Once space is freed
// both are stored and decided exactly once, in order, each with its BID.
func TestSniperHoldsItsInputsWhileTheLogIsFull(t *testing.T) {
	run, logs, a := setUpWithLogs(t, item1)
	auction := a[0]
	base := run.App.HTTPURL()
	l := run.App.Log()
	run.StartBiddingIn(auction)
	auction.HasReceivedJoinRequestFrom(run.SniperJID())

	// Room for exactly one more message: the next PRICE fits, its
	// decision (the state and the BID, one message) does not.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := rawJetStream(t, run)
	cfg := limitStream(t, ctx, run, js, 1)
	full := time.Now()
	auction.ReportPrice(1000, 98, "other bidder")

	// Loudly: an ERROR line naming the problem, and readiness.
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		return len(logs.find(func(r capturedLog) bool {
			return r.Level == slog.LevelError && strings.Contains(r.Message, "the event log is full") &&
				r.Attrs["item"] == item1 && strings.Contains(r.Attrs["error"], "maximum messages exceeded")
		})) > 0
	}, "no ERROR line says the log is full")
	var ready statusBody
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		var code int
		code, ready, _, _ = request(t, http.MethodGet, base+"/readyz", "")
		return code == http.StatusServiceUnavailable && ready.failing("log_writes")
	}, "/readyz never said the log refuses writes: %+v", &ready)
	c, _ := ready.check("log_writes")
	t.Logf("/readyz 503 %s after the stream filled: %s", fmtDur(time.Since(full)), c.Error)
	if !strings.Contains(c.Error, "maximum messages exceeded") || ready.failing("nats") || ready.failing("stream") || ready.failing("xmpp") {
		t.Errorf("readiness should blame the log's writes only: %+v", ready)
	}
	if v, _ := run.Sniper(item1); v.State != "Joining" {
		t.Fatalf("the sniper moved on without committing: %+v", v)
	}
	if n := auction.CountBids(1098); n != 0 {
		t.Fatalf("a BID went out for a decision the log refused")
	}
	// The PRICE is held: handed to the sniper, not decided.
	if n := run.App.InputBacklog(); n != 1 {
		t.Fatalf("%d inputs held by the snipers, want the PRICE", n)
	}
	// The API refuses commands with a JSON error saying why.
	code, body, raw, _ := request(t, http.MethodPost, base+"/api/snipers", `{"item":"item-99999","stop_price":500}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(body.Error, "full") {
		t.Fatalf("POST while the log is full: %d %s, want 503 saying the log is full", code, raw)
	}

	// A PRICE that arrives now cannot even be stored: the bridge retries.
	auction.ReportPrice(1098, 97, run.SniperJID())
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		return len(logs.find(func(r capturedLog) bool {
			return r.Level == slog.LevelError && strings.Contains(r.Message, "cannot store auction event") &&
				r.Attrs["subject"] == messages.Subject(item1, messages.KindIn, messages.TypePrice)
		})) > 0
	}, "the inbound bridge never reported the PRICE it cannot store")
	if n := countSubject(t, l, item1, messages.KindIn, messages.TypePrice); n != 1 {
		t.Fatalf("%d prices stored while full, want 1", n)
	}

	// Space is freed: everything held goes through, once.
	cfg.MaxMsgs = -1
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("raise the limit: %v", err)
	}
	freed := time.Now()
	auction.HasReceivedBid(1098, run.SniperJID())
	t.Logf("the held PRICE got its BID %s after space was freed", fmtDur(time.Since(freed)))
	run.HasShownSniperIsWinning(auction, 1098)
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		code, ready, _, _ = request(t, http.MethodGet, base+"/readyz", "")
		return code == http.StatusOK
	}, "/readyz never recovered: %+v", &ready)
	t.Logf("ready again %s after space was freed", fmtDur(time.Since(freed)))

	waitAllDecided(t, l, item1)
	rep := checkExactlyOnce(t, l, item1)
	if rep.Inputs != 3 || rep.Decisions != 3 || rep.Bids != 1 {
		t.Errorf("log of %s: %+v, want 3 inputs (start, 2 prices) each decided once, 1 bid", item1, rep)
	}
	if n := auction.CountBids(1098); n != 1 {
		t.Errorf("the auction received %d BIDs at 1098, want 1", n)
	}
	auction.AnnounceClosed()
	run.HasShownSniperHasWonAuction(auction, 1098)
}

// A BID committed just before the store fills reaches the auction once:
// the outbound bridge is done with it although the log refused the record
// that it was sent, rather than send it again at every retry while the
// store is full. Readiness says the log refuses writes until one is taken again.
func TestABidCommittedAsTheLogFillsIsSentOnce(t *testing.T) {
	run, logs, a := setUpWithLogs(t, item1)
	auction := a[0]
	base := run.App.HTTPURL()
	l := run.App.Log()
	run.StartBiddingIn(auction)
	auction.HasReceivedJoinRequestFrom(run.SniperJID())

	// Room for the PRICE and its decision, not for the bridge's record
	// that the BID went out.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := rawJetStream(t, run)
	cfg := limitStream(t, ctx, run, js, 2)
	auction.ReportPrice(1000, 98, "other bidder")
	auction.HasReceivedBid(1098, run.SniperJID())
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		return len(logs.find(func(r capturedLog) bool {
			return r.Level == slog.LevelError && strings.HasPrefix(r.Message, "sent, but the log did not take the record") &&
				strings.Contains(r.Attrs["error"], "maximum messages exceeded")
		})) > 0
	}, "the outbound bridge never reported the record it could not write")
	// Done with: nothing left to send again.
	testkit.Eventually(t, testkit.WaitTimeout, func() bool { return run.App.OutboundBacklog() == 0 },
		"the outbound bridge still holds the BID whose record the log refused")
	code, ready, _, _ := request(t, http.MethodGet, base+"/readyz", "")
	if code != http.StatusServiceUnavailable || !ready.failing("log_writes") {
		t.Fatalf("/readyz while the record is refused: %d %+v, want 503 on log_writes", code, ready)
	}

	cfg.MaxMsgs = -1
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("raise the limit: %v", err)
	}
	auction.ReportPrice(1098, 97, run.SniperJID())
	run.HasShownSniperIsWinning(auction, 1098)
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		code, ready, _, _ = request(t, http.MethodGet, base+"/readyz", "")
		return code == http.StatusOK
	}, "/readyz never recovered: %+v", &ready)
	if n := auction.CountBids(1098); n != 1 {
		t.Errorf("the auction received %d BIDs at 1098, want 1", n)
	}
	waitAllDecided(t, l, item1)
	checkExactlyOnce(t, l, item1)
}

// waitOutboundIdle waits until the outbound bridge has sent every request
// of item's decisions and recorded it (out.sent, out.undelivered).
func waitOutboundIdle(t *testing.T, run *testkit.ApplicationRunner, item string) {
	t.Helper()
	var unsent []uint64
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		recs, err := run.App.Log().History(ctx, item)
		if err != nil {
			return false
		}
		sends := map[uint64]bool{}
		for _, r := range recs {
			_, kind, typ, _ := messages.ParseSubject(r.Subject)
			var d struct {
				Send   []messages.Request `json:"send"`
				OutSeq uint64             `json:"out_seq"`
			}
			_ = json.Unmarshal(r.Data, &d)
			switch {
			case kind == messages.KindDec && len(d.Send) > 0:
				sends[r.Seq] = true
			case kind == messages.KindOut && (typ == messages.TypeSent || typ == messages.TypeUndelivered):
				delete(sends, d.OutSeq)
			}
		}
		unsent = slices.Sorted(maps.Keys(sends))
		return len(unsent) == 0 && run.App.OutboundBacklog() == 0
	}, "%s: decisions not sent yet: %v", item, &unsent)
}

// rawJetStream is JetStream on a connection of the test's own, for what
// the sniper's log port rightly does not offer (changing the stream's
// limits).
func rawJetStream(t *testing.T, run *testkit.ApplicationRunner) natsjs.JetStream {
	t.Helper()
	nc, err := nats.Connect(run.App.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// setUpWithLogs is setUp with the app's log lines captured.
func setUpWithLogs(t *testing.T, items ...string) (*testkit.ApplicationRunner, *logStore, []*testkit.FakeAuctionServer) {
	t.Helper()
	p := testkit.StartProsody(t)
	var auctions []*testkit.FakeAuctionServer
	for _, item := range items {
		auctions = append(auctions, testkit.NewFakeAuctionServer(t, p, item))
	}
	logger, logs := captureLogs(t)
	// No checkpoint writes while a test fills the store: they would take
	// the room meant for the message under test.
	run := testkit.StartApplication(t, p, t.TempDir(), func(c *app.Config) { c.Logger = logger; c.CheckpointEvery = time.Hour })
	return run, logs, auctions
}

// limitStream waits until the outbound bridge is idle, then caps the
// SNIPER stream at room more messages; it returns the capped config, for
// raising the limit again.
func limitStream(t *testing.T, ctx context.Context, run *testkit.ApplicationRunner, js natsjs.JetStream, room int64) natsjs.StreamConfig {
	t.Helper()
	waitOutboundIdle(t, run, item1)
	stream, err := js.Stream(ctx, jetstream.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.MaxMsgs = int64(info.State.Msgs) + room
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("limit the stream: %v", err)
	}
	return cfg
}
