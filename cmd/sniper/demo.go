package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"mellium.im/xmpp/jid"

	"sniper/auctionhouse"
	"sniper/internal/logging"
	"sniper/xmppclient"
	"sniper/xmppserver"
)

// The embedded auction house: `sniper run` without --xmpp-addr starts, in
// this process and on loopback only, a minimal XMPP server (xmppserver)
// and the auction house simulator (auctionhouse) on it, and connects the
// sniper to that server with its ordinary XMPP client, exactly as to a
// real one. `make run` then needs nothing installed.
//
// Two settings are read from the environment only (they are for tests and
// impatient demos, not for production, so they are not flags):
//
//	SNIPER_DEMO_DURATION  how long the shortest demo auction stays open
//	                      (default 2m; the others last up to 1.4 times as long)
//	SNIPER_DEMO_SEED      seed of the simulated bidders (default: random)
const (
	envDemoDuration = "SNIPER_DEMO_DURATION"
	envDemoSeed     = "SNIPER_DEMO_SEED"

	defaultDemoDuration = 2 * time.Minute
)

// demoItems are what the embedded house sells. Item ids get a random tag
// per run ("camera-qwxz"), so a sniper restarted on the same data dir
// (where last run's snipers for those items are finished and cannot be
// started again) always finds fresh auctions; a closed item is relisted
// as camera-qwxz-2, -3 and so on, so there are always open auctions.
var demoItems = []struct {
	name             string
	start, increment int64
	bidders          int
}{
	{"camera", 120, 10, 3},
	{"bicycle", 250, 20, 3},
	{"guitar", 400, 25, 2},
	{"teapot", 40, 5, 2},
}

// demoHouse is the running embedded auction house.
type demoHouse struct {
	// XMPP is the sniper's account on the embedded server: give it to
	// app.Config.XMPP.
	XMPP *xmppclient.Config

	srv   *xmppserver.Server
	house *auctionhouse.House
	log   *slog.Logger
}

// startDemo starts the embedded server and auction house for the sniper
// account sniperJID (--xmpp-jid). On failure it returns nil and the exit
// code (2 for a usage error), having said why.
func startDemo(ctx context.Context, logger *slog.Logger, stderr io.Writer, sniperJID, auctionDomain string) (*demoHouse, int) {
	usage := func(format string, args ...any) (*demoHouse, int) {
		fmt.Fprintf(stderr, "sniper run: "+format+"\n", args...)
		return nil, 2
	}
	self, err := jid.Parse(sniperJID)
	if err != nil || self.Localpart() == "" || self.Resourcepart() == "" {
		return usage("--xmpp-jid %q: want a full JID user@domain/resource", sniperJID)
	}
	domain := self.Domainpart()
	if auctionDomain != "" && auctionDomain != domain {
		return usage("--auction-domain %q needs --xmpp-addr: the embedded auction house serves only %q, the domain of --xmpp-jid", auctionDomain, domain)
	}
	base := defaultDemoDuration
	if v := os.Getenv(envDemoDuration); v != "" {
		if base, err = time.ParseDuration(v); err != nil || base <= 0 {
			return usage("%s=%q: want a positive duration such as 90s", envDemoDuration, v)
		}
	}
	seed := randomUint64()
	if v := os.Getenv(envDemoSeed); v != "" {
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			return usage("%s=%q: want an unsigned integer", envDemoSeed, v)
		}
	}

	srv, err := xmppserver.Start(context.Background(), xmppserver.Config{Addr: "127.0.0.1:0", Domain: domain, Logger: slog.New(logging.Quieter(logger.Handler()))})
	if err != nil {
		logger.Error("embedded XMPP server did not start", "error", err)
		return nil, 1
	}
	// Fresh random passwords each run, never logged: the server is on
	// loopback, but other local users could otherwise log in as the sniper.
	sniperPassword := rand.Text()
	srv.AddUser(self.Localpart(), sniperPassword)
	auctionPassword := rand.Text()

	tag := randomTag()
	cfg := auctionhouse.Config{
		XMPPAddr: srv.Addr(), Domain: domain, TLS: xmppclient.TLSOff, Password: auctionPassword,
		EnsureAccount: func(user, password string) error { srv.AddUser(user, password); return nil },
		NextID:        auctionhouse.Renumber,
		Pause:         min(auctionhouse.DefaultPause, max(base/3, 100*time.Millisecond)),
		Seed:          seed,
		Logger:        logger,
	}
	for i, it := range demoItems {
		cfg.Items = append(cfg.Items, auctionhouse.ItemConfig{
			ID: it.name + "-" + tag, StartPrice: it.start, Increment: it.increment, Bidders: it.bidders,
			// Staggered closing times: 1, 1.125, 1.25, 1.375 x base.
			Duration: base * time.Duration(8+i) / 8,
		})
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	house, err := auctionhouse.Start(startCtx, cfg)
	cancel()
	if err != nil {
		_ = srv.Close()
		logger.Error("embedded auction house did not start", "error", err)
		return nil, 1
	}
	return &demoHouse{
		// Plaintext: the embedded server listens on loopback only. The
		// sniper's client code is the same as for any server.
		XMPP:  &xmppclient.Config{Addr: srv.Addr(), JID: self.String(), Password: sniperPassword, TLS: xmppclient.TLSOff},
		srv:   srv,
		house: house,
		log:   logger,
	}, 0
}

// OpenItems lists the items whose demo auction is open now: for the page
// and the API. Safe on a nil *demoHouse (no embedded house: nil).
func (d *demoHouse) OpenItems() []string {
	if d == nil {
		return nil
	}
	return d.house.OpenItems()
}

// Auctions is the state of every demo auction (open or just closed), for
// the page and the API. Safe on a nil *demoHouse.
func (d *demoHouse) Auctions() []auctionhouse.Auction {
	if d == nil {
		return nil
	}
	return d.house.Auctions()
}

// announce logs, once the API is up at httpURL, which demo auctions are
// open and how to join one. Safe on a nil *demoHouse.
func (d *demoHouse) announce(httpURL string) {
	if d == nil {
		return
	}
	auctions := d.house.Auctions()
	var items []string
	var first auctionhouse.Auction
	for _, a := range auctions {
		if a.Open {
			if items == nil {
				first = a
			}
			items = append(items, a.Item)
		}
	}
	if items == nil {
		return
	}
	stop := first.Price + 25*first.Increment
	d.log.Info("demo auctions open", "items", items, "auction_house", "embedded (simulated bidders)",
		"hint", fmt.Sprintf(`join one: curl -H 'Content-Type: application/json' -d '{"item":%q,"stop_price":%d}' %s/api/snipers or open %s/`,
			first.Item, stop, httpURL, httpURL))
}

// Close stops the auction house, then the server. Call it after the app
// has stopped: the sniper's session goes first.
func (d *demoHouse) Close() {
	if d == nil {
		return
	}
	_ = d.house.Close()
	_ = d.srv.Close()
}

func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

// randomTag is four lower-case letters: no digits, so Renumber's "-<n>"
// suffixes can never be mistaken for part of it.
func randomTag() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = 'a' + b[i]%26
	}
	return string(b[:])
}
