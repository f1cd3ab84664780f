package auctionhouse_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"sniper/auctionhouse"
	"sniper/messages"
	"sniper/xmppclient"
	"sniper/xmppserver"
)

// wait bounds every wait: a bug fails the test instead of hanging it.
const wait = 10 * time.Second

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("AUCTIONHOUSE_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// env is an embedded XMPP server with a house on it.
type env struct {
	t     *testing.T
	srv   *xmppserver.Server
	house *auctionhouse.House
}

func startServer(t *testing.T) *xmppserver.Server {
	t.Helper()
	srv, err := xmppserver.Start(context.Background(), xmppserver.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// startHouse runs a house with cfg on a fresh server; the auction accounts
// are created through EnsureAccount, as the demo does.
func startHouse(t *testing.T, cfg auctionhouse.Config) *env {
	t.Helper()
	srv := startServer(t)
	cfg.XMPPAddr, cfg.Domain, cfg.TLS = srv.Addr(), srv.Domain(), xmppclient.TLSOff
	cfg.Password = "auction-secret"
	cfg.EnsureAccount = func(user, pw string) error { srv.AddUser(user, pw); return nil }
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	h, err := auctionhouse.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start house: %v", err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return &env{t: t, srv: srv, house: h}
}

func item(id string, start, inc int64, d time.Duration, bidders int) auctionhouse.ItemConfig {
	return auctionhouse.ItemConfig{ID: id, StartPrice: start, Increment: inc, Duration: d, Bidders: bidders}
}

// bidder is a test sniper: a real xmppclient session that records what
// the house sends it.
type bidder struct {
	t      *testing.T
	cfg    xmppclient.Config
	domain string
	sess   *xmppclient.Session
	in     chan received
}

type received struct {
	from string
	body string
}

func (e *env) bidder(user string) *bidder {
	e.t.Helper()
	e.srv.AddUser(user, user+"-pw")
	b := &bidder{
		t: e.t, domain: e.srv.Domain(), in: make(chan received, 1024),
		cfg: xmppclient.Config{Addr: e.srv.Addr(), JID: user + "@" + e.srv.Domain() + "/Auction", Password: user + "-pw", TLS: xmppclient.TLSOff},
	}
	b.dial()
	return b
}

func (b *bidder) dial() {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := xmppclient.Dial(ctx, b.cfg, func(from jid.JID, body string) { b.in <- received{from.String(), body} })
	if err != nil {
		b.t.Fatalf("dial %s: %v", b.cfg.JID, err)
	}
	b.sess = s
	b.t.Cleanup(func() { _ = s.Close() })
}

func (b *bidder) jid() string { return b.cfg.JID }

func (b *bidder) send(item, body string) {
	b.t.Helper()
	to := jid.MustParse("auction-" + item + "@" + b.domain + "/Auction")
	if err := b.sess.Send(context.Background(), to, body); err != nil {
		b.t.Fatalf("%s: send %q to %s: %v", b.cfg.JID, body, to, err)
	}
}

func (b *bidder) join(item string)             { b.t.Helper(); b.send(item, messages.EncodeJoin()) }
func (b *bidder) bid(item string, price int64) { b.t.Helper(); b.send(item, messages.EncodeBid(price)) }

// next is the next event from item's auction.
func (b *bidder) next(item string) messages.AuctionEvent {
	b.t.Helper()
	want := "auction-" + item + "@" + b.domain + "/Auction"
	select {
	case m := <-b.in:
		if m.from != want {
			b.t.Fatalf("%s: message %q from %s, want one from %s", b.cfg.JID, m.body, m.from, want)
		}
		ev, err := messages.DecodeAuctionEvent(m.body)
		if err != nil {
			b.t.Fatalf("%s: undecodable message %q: %v", b.cfg.JID, m.body, err)
		}
		return ev
	case <-time.After(wait):
		b.t.Fatalf("%s: nothing from %s within %s", b.cfg.JID, item, wait)
	}
	return messages.AuctionEvent{}
}

func (b *bidder) expectPrice(item string, price, inc int64, bidder string) {
	b.t.Helper()
	ev := b.next(item)
	want := messages.AuctionEvent{Kind: "PRICE", CurrentPrice: price, Increment: inc, Bidder: bidder, CloseTime: ev.CloseTime}
	if ev != want || ev.CloseTime == 0 {
		b.t.Fatalf("%s: got %+v, want %+v", b.cfg.JID, ev, want)
	}
}

func (b *bidder) expectClose(item string) {
	b.t.Helper()
	if ev := b.next(item); ev.Kind != "CLOSE" {
		b.t.Fatalf("%s: got %+v, want CLOSE", b.cfg.JID, ev)
	}
}

// waitAuctions waits, through Changed, until cond holds for Auctions().
func waitAuctions(t *testing.T, h *auctionhouse.House, what string, cond func([]auctionhouse.Auction) bool) []auctionhouse.Auction {
	t.Helper()
	deadline := time.After(wait)
	for {
		ch := h.Changed()
		as := h.Auctions()
		if cond(as) {
			return as
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("house never showed %s; last: %+v", what, as)
		}
	}
}

func TestJoinGetsTheCurrentPrice(t *testing.T) {
	t.Parallel()
	e := startHouse(t, auctionhouse.Config{Items: []auctionhouse.ItemConfig{item("lamp", 100, 10, time.Minute, 0)}})
	if got := e.house.OpenItems(); !slices.Equal(got, []string{"lamp"}) {
		t.Fatalf("OpenItems = %v right after Start, want [lamp]", got)
	}
	a := e.bidder("sniper")
	a.join("lamp")
	a.expectPrice("lamp", 100, 10, auctionhouse.HouseBidder)
	// A repeated JOIN is harmless: it gets the current price again.
	a.join("lamp")
	a.expectPrice("lamp", 100, 10, auctionhouse.HouseBidder)
	as := e.house.Auctions()
	if len(as) != 1 || as[0].Participants != 1 || !as[0].Open || as[0].JID != "auction-lamp@localhost/Auction" {
		t.Fatalf("Auctions = %+v, want lamp open with 1 participant", as)
	}
}

func TestAcceptedBidIsBroadcastWithTheBiddersJID(t *testing.T) {
	t.Parallel()
	e := startHouse(t, auctionhouse.Config{Items: []auctionhouse.ItemConfig{item("lamp", 100, 10, time.Minute, 0)}})
	a, b := e.bidder("sniper"), e.bidder("other")
	a.join("lamp")
	a.expectPrice("lamp", 100, 10, auctionhouse.HouseBidder)
	b.join("lamp")
	b.expectPrice("lamp", 100, 10, auctionhouse.HouseBidder)

	a.bid("lamp", 110)
	a.expectPrice("lamp", 110, 10, a.jid()) // the sniper recognises itself by its full JID
	b.expectPrice("lamp", 110, 10, a.jid())

	// More than the minimum is fine too.
	b.bid("lamp", 150)
	a.expectPrice("lamp", 150, 10, b.jid())
	b.expectPrice("lamp", 150, 10, b.jid())

	as := e.house.Auctions()
	if as[0].Price != 150 || as[0].HighBidder != b.jid() || as[0].Bids != 2 || as[0].Participants != 2 {
		t.Fatalf("Auctions = %+v, want price 150 by %s after 2 bids", as, b.jid())
	}
}

func TestLowBidIsIgnored(t *testing.T) {
	t.Parallel()
	e := startHouse(t, auctionhouse.Config{Items: []auctionhouse.ItemConfig{item("lamp", 100, 10, time.Minute, 0)}})
	a := e.bidder("sniper")
	a.join("lamp")
	a.expectPrice("lamp", 100, 10, auctionhouse.HouseBidder)

	a.bid("lamp", 109) // below price + increment
	a.bid("lamp", 100)
	// Messages from one sender are handled in order: the PRICE answering
	// this JOIN comes after anything the low bids caused, and shows the
	// price unchanged.
	a.join("lamp")
	a.expectPrice("lamp", 100, 10, auctionhouse.HouseBidder)

	a.bid("lamp", 110)
	a.expectPrice("lamp", 110, 10, a.jid())
	a.bid("lamp", 110) // a resent bid: now below the minimum, ignored
	a.join("lamp")
	a.expectPrice("lamp", 110, 10, a.jid())
}

func TestBidFromSomeoneWhoNeverJoinedIsAnImplicitJoin(t *testing.T) {
	t.Parallel()
	e := startHouse(t, auctionhouse.Config{Items: []auctionhouse.ItemConfig{item("lamp", 100, 10, time.Minute, 0)}})
	a, b, c := e.bidder("sniper"), e.bidder("restarted"), e.bidder("lowballer")
	a.join("lamp")
	a.expectPrice("lamp", 100, 10, auctionhouse.HouseBidder)

	// A sniper that restarted goes on bidding without a JOIN.
	b.bid("lamp", 110)
	b.expectPrice("lamp", 110, 10, b.jid())
	a.expectPrice("lamp", 110, 10, b.jid())

	// A newcomer's low bid is not accepted, but it learns the price and
	// hears about later bids.
	c.bid("lamp", 50)
	c.expectPrice("lamp", 110, 10, b.jid())
	a.bid("lamp", 120)
	for _, x := range []*bidder{a, b, c} {
		x.expectPrice("lamp", 120, 10, a.jid())
	}
}

func TestGarbageIsLoggedAndIgnored(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	e := startHouse(t, auctionhouse.Config{
		Items:  []auctionhouse.ItemConfig{item("lamp", 100, 10, time.Minute, 0)},
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	a := e.bidder("stranger")
	for _, body := range []string{
		"hello",
		"SOLVersion: 1.1; Event: PRICE; CurrentPrice: 1; Increment: 1; Bidder: x;",
		"SOLVersion: 1.1; Command: FOO;",
		"SOLVersion: 1.1; Command: BID; Price: lots;",
		"SOLVersion: 1.1; Command: BID; Price: -5;",
		"SOLVersion: 2.0; Command: JOIN;",
		"Command: JOIN;",
		strings.Repeat("x", 5000),
	} {
		a.send("lamp", body)
	}
	// None of it made the stranger a participant or moved the price.
	a.join("lamp")
	a.expectPrice("lamp", 100, 10, auctionhouse.HouseBidder)
	if as := e.house.Auctions(); as[0].Participants != 1 || as[0].Bids != 0 {
		t.Fatalf("Auctions = %+v, want 1 participant and no bids", as)
	}
	if n := strings.Count(logs.String(), "message ignored"); n != 8 {
		t.Fatalf("logged %d ignored messages, want 8:\n%s", n, logs.String())
	}
}

func TestCloseAtTheClosingTime(t *testing.T) {
	t.Parallel()
	e := startHouse(t, auctionhouse.Config{
		Items: []auctionhouse.ItemConfig{item("lamp", 100, 10, 1500*time.Millisecond, 0)},
		Pause: time.Minute,
	})
	start := time.Now()
	a, b := e.bidder("sniper"), e.bidder("other")
	a.join("lamp")
	a.expectPrice("lamp", 100, 10, auctionhouse.HouseBidder)
	b.join("lamp")
	b.expectPrice("lamp", 100, 10, auctionhouse.HouseBidder)
	a.bid("lamp", 110)
	a.expectPrice("lamp", 110, 10, a.jid())
	b.expectPrice("lamp", 110, 10, a.jid())

	a.expectClose("lamp")
	b.expectClose("lamp")
	if d := time.Since(start); d < 1400*time.Millisecond {
		t.Fatalf("closed after %s, want about 1.5s", d)
	}
	as := waitAuctions(t, e.house, "lamp closed", func(as []auctionhouse.Auction) bool { return !as[0].Open })
	if as[0].HighBidder != a.jid() || as[0].Price != 110 {
		t.Fatalf("closed auction %+v, want won by %s at 110", as[0], a.jid())
	}
	if got := e.house.OpenItems(); len(got) != 0 {
		t.Fatalf("OpenItems after the close = %v, want none", got)
	}
	// Whoever bids after the close is told it is closed.
	b.bid("lamp", 200)
	b.expectClose("lamp")
}

func TestSimulatedBiddersRaiseThePrice(t *testing.T) {
	t.Parallel()
	const start, inc = 100, 10
	e := startHouse(t, auctionhouse.Config{
		Items: []auctionhouse.ItemConfig{item("lamp", start, inc, 3*time.Second, 3)},
		Seed:  42, Pause: time.Minute,
	})
	a := e.bidder("sniper")
	a.join("lamp")
	a.expectPrice("lamp", start, inc, auctionhouse.HouseBidder)

	// A minimal sniper: outbid anyone else by the increment, until the
	// close. Prices only go up, the simulated bidders bid, and the sniper
	// gets to lead at least once.
	sim := map[string]bool{"alice": true, "bob": true, "carol": true}
	var simBids, ownLeads int
	last := int64(start)
	for {
		ev := a.next("lamp")
		if ev.Kind == "CLOSE" {
			break
		}
		if ev.CurrentPrice < last+inc || ev.Increment != inc {
			t.Fatalf("PRICE %+v after price %d: not a raise of at least %d", ev, last, inc)
		}
		last = ev.CurrentPrice
		switch {
		case ev.Bidder == a.jid():
			ownLeads++
		case sim[ev.Bidder]:
			simBids++
			a.bid("lamp", ev.CurrentPrice+ev.Increment)
		default:
			t.Fatalf("PRICE from unknown bidder %q", ev.Bidder)
		}
	}
	t.Logf("simulated bids %d, sniper leads %d, final price %d", simBids, ownLeads, last)
	if simBids == 0 || ownLeads == 0 {
		t.Fatalf("simulated bids %d, sniper leads %d: want both > 0", simBids, ownLeads)
	}
	as := waitAuctions(t, e.house, "lamp closed", func(as []auctionhouse.Auction) bool { return !as[0].Open })
	if as[0].Price != last {
		t.Fatalf("house closed at %d, sniper last saw %d", as[0].Price, last)
	}
}

func TestSniperThatReconnectsKeepsGettingPrices(t *testing.T) {
	t.Parallel()
	e := startHouse(t, auctionhouse.Config{Items: []auctionhouse.ItemConfig{item("lamp", 100, 10, time.Minute, 0)}})
	a, b := e.bidder("sniper"), e.bidder("other")
	a.join("lamp")
	a.expectPrice("lamp", 100, 10, auctionhouse.HouseBidder)

	// The sniper goes away: PRICEs to it bounce, which must not upset the
	// house or the other bidders.
	if err := a.sess.Close(); err != nil {
		t.Fatal(err)
	}
	b.bid("lamp", 110)
	b.expectPrice("lamp", 110, 10, b.jid())
	b.bid("lamp", 120)
	b.expectPrice("lamp", 120, 10, b.jid())

	// Back under the same JID, without a new JOIN: still a participant.
	a.dial()
	b.bid("lamp", 130)
	b.expectPrice("lamp", 130, 10, b.jid())
	a.expectPrice("lamp", 130, 10, b.jid())
	a.bid("lamp", 140)
	a.expectPrice("lamp", 140, 10, a.jid())
	b.expectPrice("lamp", 140, 10, a.jid())
}

func TestRelistsTheSameItem(t *testing.T) {
	t.Parallel()
	e := startHouse(t, auctionhouse.Config{
		Items: []auctionhouse.ItemConfig{item("lamp", 100, 10, 500*time.Millisecond, 0)},
		Pause: 200 * time.Millisecond,
	})
	a := e.bidder("sniper")
	a.join("lamp")
	a.expectPrice("lamp", 100, 10, auctionhouse.HouseBidder)
	a.bid("lamp", 110)
	a.expectPrice("lamp", 110, 10, a.jid())
	a.expectClose("lamp")

	as := waitAuctions(t, e.house, "round 2 of lamp", func(as []auctionhouse.Auction) bool { return as[0].Round == 2 && as[0].Open })
	if as[0].Item != "lamp" || as[0].Price != 100 || as[0].Participants != 0 {
		t.Fatalf("round 2 = %+v, want lamp afresh at 100, nobody joined", as[0])
	}
	// A new auction: the price starts again and nobody is a participant.
	a.join("lamp")
	a.expectPrice("lamp", 100, 10, auctionhouse.HouseBidder)
}

func TestRelistsUnderANewID(t *testing.T) {
	t.Parallel()
	e := startHouse(t, auctionhouse.Config{
		Items: []auctionhouse.ItemConfig{
			item("lamp-1", 100, 10, 400*time.Millisecond, 1),
			item("vase-1", 50, 5, time.Minute, 0),
		},
		Pause:  100 * time.Millisecond,
		NextID: auctionhouse.Renumber,
	})
	waitAuctions(t, e.house, "lamp-3 open", func(as []auctionhouse.Auction) bool { return as[0].Item == "lamp-3" && as[0].Open })
	if got := e.house.OpenItems(); !slices.Equal(got, []string{"lamp-3", "vase-1"}) {
		t.Fatalf("OpenItems = %v, want [lamp-3 vase-1]", got)
	}
	a := e.bidder("sniper")
	a.join("lamp-3")
	a.expectPrice("lamp-3", 100, 10, auctionhouse.HouseBidder)
	a.join("vase-1")
	a.expectPrice("vase-1", 50, 5, auctionhouse.HouseBidder)
}

func TestRenumber(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		prev  string
		round int
		want  string
	}{
		{"lamp", 2, "lamp-2"}, {"lamp-1", 2, "lamp-2"}, {"lamp-2", 3, "lamp-3"},
		{"item-54321", 2, "item-54321-2"}, {"item-54321-2", 3, "item-54321-3"}, {"camera-kqzp", 2, "camera-kqzp-2"},
	} {
		if got := auctionhouse.Renumber(c.prev, c.round); got != c.want {
			t.Errorf("Renumber(%q, %d) = %q, want %q", c.prev, c.round, got, c.want)
		}
	}
}

func TestStartFailsOnAWrongPassword(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	srv.AddUser("auction-lamp", "right")
	start := time.Now()
	_, err := auctionhouse.Start(context.Background(), auctionhouse.Config{
		XMPPAddr: srv.Addr(), Domain: srv.Domain(), TLS: xmppclient.TLSOff, Password: "wrong",
		Items: []auctionhouse.ItemConfig{item("lamp", 100, 10, time.Minute, 0)},
	})
	if !errors.Is(err, xmppclient.ErrAuth) {
		t.Fatalf("Start = %v, want ErrAuth", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("error shows the password: %v", err)
	}
	t.Logf("refused in %s: %v", time.Since(start), err)
}

func TestStartGivesUpWhenTheServerIsNotThere(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	addr := srv.Addr()
	_ = srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := auctionhouse.Start(ctx, auctionhouse.Config{
		XMPPAddr: addr, TLS: xmppclient.TLSOff, Password: "x",
		Items: []auctionhouse.ItemConfig{item("lamp", 100, 10, time.Minute, 0)},
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v, want the deadline", err)
	}
}

func TestConfigIsValidated(t *testing.T) {
	t.Parallel()
	good := item("lamp", 100, 10, time.Minute, 1)
	for name, cfg := range map[string]auctionhouse.Config{
		"no address":     {Items: []auctionhouse.ItemConfig{good}},
		"no items":       {XMPPAddr: "127.0.0.1:1"},
		"bad id":         {XMPPAddr: "127.0.0.1:1", Items: []auctionhouse.ItemConfig{item("a.b", 1, 1, time.Second, 0)}},
		"duplicate":      {XMPPAddr: "127.0.0.1:1", Items: []auctionhouse.ItemConfig{good, good}},
		"zero increment": {XMPPAddr: "127.0.0.1:1", Items: []auctionhouse.ItemConfig{item("x", 1, 0, time.Second, 0)}},
		"no duration":    {XMPPAddr: "127.0.0.1:1", Items: []auctionhouse.ItemConfig{item("x", 1, 1, 0, 0)}},
	} {
		if _, err := auctionhouse.Start(context.Background(), cfg); err == nil {
			t.Errorf("%s: Start accepted %+v", name, cfg)
		}
	}
}

type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
