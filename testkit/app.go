package testkit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"sniper/api"
	"sniper/api/client"
	"sniper/internal/app"
	"sniper/xmppclient"
)

// The sniper's account on the test XMPP server.
const (
	SniperUser     = "sniper"
	SniperPassword = "sniper"
	SniperResource = "Auction"
)

// SniperJID is the sniper's full JID on p.
func SniperJID(p *Prosody) string { return SniperUser + "@" + p.Domain() + "/" + SniperResource }

// NoStopPrice is the stop price of GOOS's startBiddingIn: high enough never
// to stop the sniper.
const NoStopPrice = 1_000_000_000

// ApplicationRunner runs the sniper in-process, wired exactly as `sniper
// run` wires it, against a real Prosody, and drives it through its HTTP
// API like a user would (GOOS's ApplicationRunner).
type ApplicationRunner struct {
	t       testing.TB
	DataDir string
	App     *app.App
	// Client calls the app's API, as the CLI does.
	Client  *client.Client
	prosody *Prosody
}

// StartApplication registers the sniper's account on p and starts the app
// on dataDir (reuse a dir to restart on the same log).
func StartApplication(t testing.TB, p *Prosody, dataDir string, opts ...func(*app.Config)) *ApplicationRunner {
	t.Helper()
	if err := p.Register(SniperUser, SniperPassword); err != nil {
		t.Fatalf("register the sniper's account: %v", err)
	}
	cfg := app.Config{
		DataDir: dataDir, NATSListen: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Fsync: time.Minute,
		Logger: Logger(t),
		XMPP: &xmppclient.Config{
			Addr: p.Addr(), JID: SniperJID(p), Password: SniperPassword, TLS: xmppclient.TLSSkipVerify,
			MaxBackoff: 200 * time.Millisecond,
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := app.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start the sniper: %v", err)
	}
	c, err := client.New(a.HTTPURL(), cfg.HTTPToken)
	if err != nil {
		t.Fatalf("API client: %v", err)
	}
	r := &ApplicationRunner{t: t, DataDir: dataDir, App: a, Client: c, prosody: p}
	t.Cleanup(r.Stop)
	return r
}

// Stop shuts the sniper down gracefully, as SIGTERM does.
func (r *ApplicationRunner) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.App.Stop(ctx)
}

// SniperJID is the sniper's full JID.
func (r *ApplicationRunner) SniperJID() string { return SniperJID(r.prosody) }

// StartBiddingIn joins each auction with no effective stop price.
func (r *ApplicationRunner) StartBiddingIn(auctions ...*FakeAuctionServer) {
	r.t.Helper()
	for _, a := range auctions {
		r.StartBiddingWithStopPrice(a, NoStopPrice)
	}
}

// StartBiddingWithStopPrice joins the auction through the API and waits
// until the auction house has the JOIN.
func (r *ApplicationRunner) StartBiddingWithStopPrice(a *FakeAuctionServer, stop int64) {
	r.t.Helper()
	status, body := r.Do(http.MethodPost, "/api/snipers", fmt.Sprintf(`{"item":%q,"stop_price":%d}`, a.Item(), stop))
	if status != http.StatusCreated && status != http.StatusOK {
		r.t.Fatalf("join %s: %d %s", a.Item(), status, body)
	}
	r.HasShownSniper(a.Item(), "Joining", 0, 0)
}

// Do makes an API request and returns the status and body, whatever the
// status.
func (r *ApplicationRunner) Do(method, path, body string) (int, []byte) {
	r.t.Helper()
	var data []byte
	if body != "" {
		data = []byte(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), client.DefaultTimeout)
	defer cancel()
	status, answer, err := r.Client.Send(ctx, method, path, data)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	return status, answer
}

// Sniper returns the API's view of item, if it exists.
func (r *ApplicationRunner) Sniper(item string) (api.View, bool) {
	r.t.Helper()
	v, err := r.Client.Sniper(context.Background(), item)
	if errors.Is(err, client.ErrNotFound) {
		return api.View{}, false
	}
	if err != nil {
		r.t.Fatalf("GET sniper %s: %v", item, err)
	}
	return v, true
}

// Events returns item's history from the API.
func (r *ApplicationRunner) Events(item string) []api.Event {
	r.t.Helper()
	events, _, err := r.Client.History(context.Background(), item)
	if err != nil {
		r.t.Fatalf("GET events of %s: %v", item, err)
	}
	return events
}

// EventsOfType counts item's history entries of one type.
func (r *ApplicationRunner) EventsOfType(item, typ string) int {
	n := 0
	for _, e := range r.Events(item) {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// HasShownSniper waits until the API shows item in state with the given
// prices.
func (r *ApplicationRunner) HasShownSniper(item, state string, lastPrice, lastBid int64) api.View {
	r.t.Helper()
	var last api.View
	Eventually(r.t, WaitTimeout, func() bool {
		v, ok := r.Sniper(item)
		last = v
		return ok && string(v.State) == state && v.LastPrice == lastPrice && v.LastBid == lastBid
	}, "sniper for %s never showed %s(%d, %d); last shown: %+v", item, state, lastPrice, lastBid, &last)
	return last
}

// The GOOS ApplicationRunner's vocabulary.

// HasShownSniperIsBidding waits for Bidding(lastPrice, lastBid).
func (r *ApplicationRunner) HasShownSniperIsBidding(a *FakeAuctionServer, lastPrice, lastBid int64) {
	r.t.Helper()
	r.HasShownSniper(a.Item(), "Bidding", lastPrice, lastBid)
}

// HasShownSniperIsWinning waits for Winning(winningBid, winningBid).
func (r *ApplicationRunner) HasShownSniperIsWinning(a *FakeAuctionServer, winningBid int64) {
	r.t.Helper()
	r.HasShownSniper(a.Item(), "Winning", winningBid, winningBid)
}

// HasShownSniperIsLosing waits for Losing(lastPrice, lastBid).
func (r *ApplicationRunner) HasShownSniperIsLosing(a *FakeAuctionServer, lastPrice, lastBid int64) {
	r.t.Helper()
	r.HasShownSniper(a.Item(), "Losing", lastPrice, lastBid)
}

// HasShownSniperHasWonAuction waits for Won(lastPrice, lastPrice).
func (r *ApplicationRunner) HasShownSniperHasWonAuction(a *FakeAuctionServer, lastPrice int64) {
	r.t.Helper()
	r.HasShownSniper(a.Item(), "Won", lastPrice, lastPrice)
}

// HasShownSniperHasLostAuction waits for Lost(lastPrice, lastBid).
func (r *ApplicationRunner) HasShownSniperHasLostAuction(a *FakeAuctionServer, lastPrice, lastBid int64) {
	r.t.Helper()
	r.HasShownSniper(a.Item(), "Lost", lastPrice, lastBid)
}

// HasShownSniperHasFailed waits for Failed, whatever the prices.
func (r *ApplicationRunner) HasShownSniperHasFailed(a *FakeAuctionServer) api.View {
	r.t.Helper()
	var last api.View
	Eventually(r.t, WaitTimeout, func() bool {
		v, _ := r.Sniper(a.Item())
		last = v
		return v.State == "Failed"
	}, "sniper for %s never showed Failed; last shown: %+v", a.Item(), &last)
	return last
}

// Metric returns the value of an unlabelled metric from /metrics, or -1
// when it is absent.
func (r *ApplicationRunner) Metric(name string) float64 {
	r.t.Helper()
	status, body := r.Do(http.MethodGet, "/metrics", "")
	if status != http.StatusOK {
		r.t.Fatalf("GET /metrics: %d", status)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return -1
}

// WaitMetric waits until metric reaches at least want.
func (r *ApplicationRunner) WaitMetric(name string, want float64) {
	r.t.Helper()
	var got float64
	Eventually(r.t, WaitTimeout, func() bool { got = r.Metric(name); return got >= want },
		"metric %s never reached %v (last %v)", name, want, &got)
}
