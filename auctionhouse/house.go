// Package auctionhouse is a simulated auction house for demos and tests:
// it runs a few auctions on any XMPP server, each as its own account
// auction-<item>@<domain>/Auction speaking SOL 1.1 (GOOS's protocol), with
// simulated competitors bidding against whoever joins.
//
// One auction (a "listing") works like this:
//   - it opens when its session is up and closes Duration later;
//   - a JOIN records the sender's full JID as a participant and answers it
//     with the current PRICE (Bidder "house" until somebody bids); a
//     repeated JOIN just gets the current PRICE again;
//   - a BID of at least price+increment is accepted: the price becomes the
//     bid, the high bidder the sender's full JID (which is how a sniper
//     recognises itself), and every participant is sent the new PRICE.
//     A lower bid changes nothing and is only logged (a resent duplicate
//     is harmless). A BID from someone who never joined is an implicit
//     JOIN: a sniper that restarted does not join again, it goes on
//     bidding;
//   - simulated bidders (alice, bob, ...) wake up every MinBidInterval to
//     MaxBidInterval and, unless they already lead, outbid by one to three
//     increments up to a private limit (8 to 40 increments above the start
//     price); each accepted bid is broadcast like any other;
//   - at the closing time every participant gets CLOSE;
//   - then, after Pause, the next listing of the same slot opens: the same
//     item id again (a new auction with a new closing time), or the id
//     Config.NextID gives. Meanwhile a JOIN or BID is answered with CLOSE,
//     so a bidder that missed the close learns it.
//
// Anything that is not a SOL 1.1 JOIN or BID is logged and ignored.
// PRICE goes to a participant's full JID for the whole auction, whether or
// not it is online: a bounce (the server's service-unavailable) is
// dropped by the XMPP client, and nothing waits for a participant.
// Shutting the house down sends nothing: a CLOSE would tell snipers they
// had won an auction that never ended.
//
// Limits and schedules of the simulated bidders come from Config.Seed
// (one random source per bidder), so a seed always gives the same
// competitors; prices still depend on what real bidders do and when.
package auctionhouse

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"sniper/internal/clip"
	"sniper/internal/logging"
	"sniper/messages"
	"sniper/xmppclient"
)

// Resource is the resource every auction account binds.
const Resource = "Auction"

// DefaultPause is the time between the close of one listing of a slot and
// the opening of the next when Config.Pause is zero.
const DefaultPause = 5 * time.Second

// ItemConfig is one item put up for auction.
type ItemConfig struct {
	// ID is the item id, [A-Za-z0-9_-]{1,64} (lower case recommended:
	// XMPP lower-cases the account name auction-<id>).
	ID string
	// StartPrice is the price before any bid; Increment the minimum raise.
	StartPrice, Increment int64
	// Duration is how long each auction of the item stays open.
	Duration time.Duration
	// Bidders is the number of simulated competitors (0: none).
	Bidders int
}

// Config says where the house logs in and what it sells.
type Config struct {
	// XMPPAddr is the XMPP server's host:port, dialled directly.
	XMPPAddr string
	// Domain is the XMPP domain of the auction accounts (default
	// "localhost").
	Domain string
	// TLS is the client TLS mode (empty: xmppclient.TLSRequire); RootCAs
	// verifies the server in that mode (nil: the system roots).
	TLS     xmppclient.TLSMode
	RootCAs *x509.CertPool
	// Password is the password of every auction-<item> account, unless
	// PasswordFor is set, which then gives each item's.
	Password    string
	PasswordFor func(item string) string
	// EnsureAccount, if set, is called with auction-<item> and its
	// password before each listing logs in: a house on an embedded server
	// creates its accounts there. On another server the accounts must
	// exist already.
	EnsureAccount func(user, password string) error

	// Items are the slots of the house, one auction running in each.
	Items []ItemConfig
	// NextID names the listing that follows `prev` in its slot (round is
	// its number, 2 for the first relisting). Nil relists the same id:
	// no new account is needed, but a sniper that finished the item
	// cannot join it again under that id.
	NextID func(prev string, round int) string
	// Pause is the time between a close and the next listing (default
	// DefaultPause).
	Pause time.Duration
	// MinBidInterval and MaxBidInterval bound the time between two moves
	// of a simulated bidder; zero derives them from each item's Duration
	// (Duration/40 to Duration/10, within 20ms..1s and ..4s).
	MinBidInterval, MaxBidInterval time.Duration
	// Seed makes the simulated bidders reproducible.
	Seed uint64
	// BiddersQuitBefore is how long before the close the simulated
	// bidders make their last move (0: they bid until the close). Real
	// bidders often stop early; a last-second sniper wins those.
	BiddersQuitBefore time.Duration
	// Logger receives the house's log (nil: discarded).
	Logger *slog.Logger
}

// Auction is the state of one slot's current listing, for display.
type Auction struct {
	Item         string    `json:"item"`
	JID          string    `json:"jid"`
	Round        int       `json:"round"`
	Open         bool      `json:"open"`
	Price        int64     `json:"price"`
	Increment    int64     `json:"increment"`
	HighBidder   string    `json:"high_bidder"`
	Bids         int       `json:"bids"`
	Participants int       `json:"participants"`
	OpenedAt     time.Time `json:"opened_at"`
	ClosesAt     time.Time `json:"closes_at"`
}

// House is a running auction house. Its methods are safe for concurrent
// use.
type House struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context // ends when Close starts
	cancel context.CancelFunc
	slots  []*slot
	wg     sync.WaitGroup // slot goroutines

	closeOnce sync.Once

	mu      sync.Mutex
	status  []Auction       // by slot
	listed  map[string]bool // every item id listed so far
	changed chan struct{}   // closed and replaced when status changes
}

// slot is one item's place in the house: the listings that follow each
// other and the session of the current one. Only its goroutine (or Start
// and Close, while that is not running) touches its fields.
type slot struct {
	idx   int
	item  ItemConfig
	inbox chan inbound

	id     string // item id the session is for
	self   jid.JID
	conn   *xmppclient.Conn
	stop   context.CancelFunc
	done   chan struct{}
	up     chan struct{}
	runErr chan error
}

type inbound struct {
	item string
	from jid.JID
	body string
}

// listing is one auction in a slot.
type listing struct {
	id       string
	roundNo  int
	r        *round
	bidders  []*simBidder
	lo, hi   time.Duration
	openedAt time.Time
	closesAt time.Time
}

// Start logs every item's account in, opens the first auction of each and
// returns; ctx bounds only that start-up (a session that cannot log in
// before it ends, or whose credentials are refused, fails Start). The
// house then runs until Close.
func Start(ctx context.Context, cfg Config) (*House, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	if cfg.Pause <= 0 {
		cfg.Pause = DefaultPause
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hctx, cancel := context.WithCancel(context.Background())
	h := &House{
		cfg: cfg, log: log.With("component", "auctionhouse"), ctx: hctx, cancel: cancel,
		status: make([]Auction, len(cfg.Items)), listed: map[string]bool{}, changed: make(chan struct{}),
	}
	for i, it := range cfg.Items {
		s := &slot{idx: i, item: it, inbox: make(chan inbound, 256)}
		h.slots = append(h.slots, s)
		h.listed[it.ID] = true
		if err := h.connect(s, it.ID); err != nil {
			_ = h.Close()
			return nil, err
		}
	}
	for _, s := range h.slots {
		if err := h.waitUp(ctx, s); err != nil {
			_ = h.Close()
			return nil, err
		}
	}
	first := make([]*listing, len(h.slots))
	for i, s := range h.slots {
		first[i] = h.open(s, 1, s.id)
	}
	items := make([]string, len(h.slots))
	for i, s := range h.slots {
		items[i] = s.id
		h.wg.Add(1)
		go h.runSlot(s, first[i])
	}
	h.log.Info("auction house open", "items", items, "xmpp", cfg.XMPPAddr, "domain", cfg.Domain, "seed", cfg.Seed)
	return h, nil
}

// Run runs a house until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	h, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return h.Close()
}

func (c *Config) validate() error {
	var errs []error
	if c.XMPPAddr == "" {
		errs = append(errs, errors.New("no XMPP server address"))
	}
	if len(c.Items) == 0 {
		errs = append(errs, errors.New("no items"))
	}
	seen := map[string]bool{}
	for _, it := range c.Items {
		if err := messages.ValidItem(it.ID); err != nil {
			errs = append(errs, err)
		}
		if seen[it.ID] {
			errs = append(errs, fmt.Errorf("item %q listed twice", it.ID))
		}
		seen[it.ID] = true
		if it.StartPrice < 0 || it.Increment <= 0 {
			errs = append(errs, fmt.Errorf("item %q: start price must be >= 0 and increment > 0", it.ID))
		}
		if it.Duration <= 0 {
			errs = append(errs, fmt.Errorf("item %q: duration must be positive", it.ID))
		}
		if it.Bidders < 0 {
			errs = append(errs, fmt.Errorf("item %q: negative number of bidders", it.ID))
		}
	}
	if c.MinBidInterval < 0 || c.MaxBidInterval < c.MinBidInterval {
		errs = append(errs, errors.New("bid intervals: want 0 <= min <= max"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("auctionhouse: %w", err)
	}
	return nil
}

// Close stops every auction (sending nothing: see the package doc), logs
// the accounts out and waits for all of the house's goroutines. Calling it
// again does nothing.
func (h *House) Close() error {
	h.closeOnce.Do(func() {
		h.cancel()
		h.wg.Wait()
		for _, s := range h.slots {
			s.disconnect()
		}
		h.mu.Lock()
		for i := range h.status {
			h.status[i].Open = false
		}
		h.signalLocked()
		h.mu.Unlock()
		h.log.Info("auction house closed")
	})
	return nil
}

// OpenItems lists the items whose auction is open now, in slot order.
func (h *House) OpenItems() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, a := range h.status {
		if a.Open {
			out = append(out, a.Item)
		}
	}
	return out
}

// Auctions returns the current listing of every slot (open, or closed and
// waiting for its successor), in slot order.
func (h *House) Auctions() []Auction {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.status)
}

// Changed returns a channel closed at the next change of Auctions(): a
// listing opened or closed, a bid accepted, a participant joined.
func (h *House) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

func (h *House) signalLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *House) password(item string) string {
	if h.cfg.PasswordFor != nil {
		return h.cfg.PasswordFor(item)
	}
	return h.cfg.Password
}

// connect starts the session of item id in s (it keeps redialling in the
// background until s.disconnect).
func (h *House) connect(s *slot, id string) error {
	user := "auction-" + id
	self, err := jid.New(user, h.cfg.Domain, Resource)
	if err != nil {
		return fmt.Errorf("auctionhouse: JID for item %q: %w", id, err)
	}
	pw := h.password(id)
	if h.cfg.EnsureAccount != nil {
		if err := h.cfg.EnsureAccount(user, pw); err != nil {
			return fmt.Errorf("auctionhouse: account %s: %w", user, err)
		}
	}
	up := make(chan struct{}, 1)
	conn := xmppclient.New(xmppclient.Config{
		Addr: h.cfg.XMPPAddr, JID: self.String(), Password: pw, TLS: h.cfg.TLS, RootCAs: h.cfg.RootCAs,
		Logger:     slog.New(logging.Quieter(h.log.Handler())).With("item", id),
		MaxBackoff: 2 * time.Second,
		OnStateChange: func(connected bool) {
			if connected {
				select {
				case up <- struct{}{}:
				default:
				}
			}
		},
	}, func(from jid.JID, body string) {
		// On the session's reader: hold it (backpressure) until the slot
		// takes the message, or the house closes.
		select {
		case s.inbox <- inbound{item: id, from: from, body: body}:
		case <-h.ctx.Done():
		}
	})
	ctx, stop := context.WithCancel(h.ctx)
	done, runErr := make(chan struct{}), make(chan error, 1)
	go func() {
		defer close(done)
		if err := conn.Run(ctx); err != nil {
			runErr <- err
		}
	}()
	s.id, s.self, s.conn, s.stop, s.done, s.up, s.runErr = id, self, conn, stop, done, up, runErr
	return nil
}

// waitUp waits for s's session to come up the first time.
func (h *House) waitUp(ctx context.Context, s *slot) error {
	select {
	case <-s.up:
		return nil
	case err := <-s.runErr:
		return fmt.Errorf("auctionhouse: %s cannot log in: %w", s.self, err)
	case <-ctx.Done():
		return fmt.Errorf("auctionhouse: %s not logged in: %w", s.self, context.Cause(ctx))
	}
}

func (s *slot) disconnect() {
	if s.stop == nil {
		return
	}
	s.stop()
	// The session's handler may be waiting to hand over a message, and
	// the session's close waits for the handler: take what comes (it is
	// for the listing that is over) until the session has ended.
	for {
		select {
		case <-s.inbox:
			continue
		case <-s.done:
		}
		break
	}
	s.stop, s.conn = nil, nil
}

// open starts listing number roundNo of s under id.
func (h *House) open(s *slot, roundNo int, id string) *listing {
	it := s.item
	lo, hi := h.cfg.MinBidInterval, h.cfg.MaxBidInterval
	if hi == 0 {
		lo = min(max(it.Duration/40, 20*time.Millisecond), time.Second)
		hi = min(max(it.Duration/10, lo), 4*time.Second)
	}
	now := time.Now()
	l := &listing{
		id: id, roundNo: roundNo,
		r:       newRound(id, it.StartPrice, it.Increment, now.Add(it.Duration)),
		bidders: newSimBidders(it.Bidders, h.cfg.Seed, s.idx, roundNo, it.StartPrice, it.Increment),
		lo:      lo, hi: hi,
		openedAt: now, closesAt: now.Add(it.Duration),
	}
	for _, b := range l.bidders {
		b.next = now.Add(b.wait(lo, hi))
	}
	h.update(s, l, true)
	h.log.Info("auction open", "item", id, "jid", s.self.String(), "round", roundNo,
		"start_price", it.StartPrice, "increment", it.Increment, "bidders", it.Bidders,
		"closes_at", l.closesAt.Format(time.RFC3339), "closes_in", it.Duration.String())
	return l
}

func (h *House) update(s *slot, l *listing, open bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status[s.idx] = Auction{
		Item: l.id, JID: s.self.String(), Round: l.roundNo, Open: open,
		Price: l.r.price, Increment: l.r.increment, HighBidder: l.r.high, Bids: l.r.bids,
		Participants: len(l.r.order), OpenedAt: l.openedAt, ClosesAt: l.closesAt,
	}
	h.signalLocked()
}

// runSlot runs s's listings one after the other until the house closes.
func (h *House) runSlot(s *slot, l *listing) {
	defer h.wg.Done()
	for {
		if !h.runListing(s, l) || !h.pause(s, l) {
			return
		}
		roundNo := l.roundNo + 1
		id := h.nextID(l.id, roundNo)
		if id != s.id {
			s.disconnect()
			if err := h.connect(s, id); err != nil {
				h.log.Error("auction slot stopped: cannot list the next item", "item", id, "err", err)
				return
			}
			if err := h.waitUp(h.ctx, s); err != nil {
				if h.ctx.Err() == nil {
					h.log.Error("auction slot stopped", "item", id, "err", err)
				}
				return
			}
		}
		l = h.open(s, roundNo, id)
	}
}

// nextID is the id of the listing after prev: Config.NextID's answer if
// it is a valid id not listed before, else prev.
func (h *House) nextID(prev string, roundNo int) string {
	if h.cfg.NextID == nil {
		return prev
	}
	id := h.cfg.NextID(prev, roundNo)
	if id == prev {
		return prev
	}
	if err := messages.ValidItem(id); err != nil {
		h.log.Error("auction house: NextID gave an invalid item id; relisting the same", "prev", prev, "err", err)
		return prev
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.listed[id] {
		h.log.Error("auction house: NextID gave an item id already listed; relisting the same", "prev", prev, "item", id)
		return prev
	}
	h.listed[id] = true
	return id
}

// runListing runs one auction until it closes (true) or the house does
// (false).
func (h *House) runListing(s *slot, l *listing) bool {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wake := l.closesAt
		for _, b := range l.bidders {
			if b.next.Before(wake) {
				wake = b.next
			}
		}
		timer.Reset(time.Until(wake))
		select {
		case <-h.ctx.Done():
			return false
		case m := <-s.inbox:
			h.handle(s, l, m)
		case <-timer.C:
			now := time.Now()
			if !now.Before(l.closesAt) {
				h.update(s, l, false)
				h.send(s, l.r.close())
				h.log.Info("auction closed", "item", l.id, "round", l.roundNo, "price", l.r.price,
					"winner", l.r.high, "bids", l.r.bids, "participants", len(l.r.order))
				return true
			}
			quiet := h.cfg.BiddersQuitBefore > 0 && !now.Before(l.closesAt.Add(-h.cfg.BiddersQuitBefore))
			for _, b := range l.bidders {
				if b.next.After(now) {
					continue
				}
				b.next = now.Add(b.wait(l.lo, l.hi))
				if quiet {
					continue
				}
				if amount, ok := b.offer(l.r); ok {
					_, out := l.r.bid(b.name, amount)
					h.log.Debug("simulated bid", "item", l.id, "bidder", b.name, "price", amount)
					h.update(s, l, true)
					h.send(s, out)
				}
			}
		}
	}
}

// handle is a chat message to an open auction.
func (h *House) handle(s *slot, l *listing, m inbound) {
	log := h.log.With("item", l.id, "from", m.from.String())
	if m.item != l.id || m.from.Bare().Equal(s.self.Bare()) {
		log.Debug("message ignored: not for this auction")
		return
	}
	cmd, err := parseCommand(m.body)
	if err != nil {
		log.Warn("message ignored", "body", clip.String(m.body, 200), "err", err)
		return
	}
	// The state is published before anyone is told: whoever gets the
	// message and then asks the house sees it.
	switch cmd.Kind {
	case "JOIN":
		isNew, out := l.r.join(m.from)
		if isNew {
			log.Info("bidder joined", "price", l.r.price)
		}
		h.update(s, l, true)
		h.send(s, out)
	case "BID":
		var joined []outgoing
		if !l.r.isParticipant(m.from) {
			// A sniper that restarted bids on without joining again.
			_, joined = l.r.join(m.from)
			log.Info("bid from a bidder who had not joined: joined")
		}
		accepted, out := l.r.bid(m.from.String(), cmd.Price)
		h.update(s, l, true)
		if accepted {
			log.Info("bid accepted", "price", cmd.Price)
			h.send(s, out)
		} else {
			log.Info("low bid ignored", "bid", cmd.Price, "min_bid", l.r.minBid())
			h.send(s, joined) // a new bidder still learns the price
		}
	}
}

// pause waits Config.Pause after a close, answering commands with CLOSE;
// false if the house closes meanwhile.
func (h *House) pause(s *slot, l *listing) bool {
	t := time.NewTimer(h.cfg.Pause)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return false
		case <-t.C:
			return true
		case m := <-s.inbox:
			if _, err := parseCommand(m.body); err != nil || m.from.Bare().Equal(s.self.Bare()) {
				h.log.Warn("message ignored", "item", l.id, "from", m.from.String(), "body", clip.String(m.body, 200), "err", err)
				continue
			}
			h.log.Info("command after the close: answered CLOSE", "item", l.id, "from", m.from.String())
			h.send(s, []outgoing{{to: m.from, body: messages.EncodeClose()}})
		}
	}
}

// send sends out in order. A failure loses that message only (the
// participant may be offline, or the house reconnecting): like any XMPP
// message without stream management.
func (h *House) send(s *slot, out []outgoing) {
	for _, o := range out {
		if err := s.conn.Send(h.ctx, o.to, o.body); err != nil {
			if h.ctx.Err() != nil {
				return
			}
			h.log.Warn("message not sent", "item", s.id, "to", o.to.String(), "err", err)
		}
	}
}

// Renumber is a Config.NextID that numbers listings: the listing after
// "lamp" or "lamp-1" is "lamp-2", then "lamp-3" and so on (a trailing
// "-<n>" is replaced only when n is the previous round's number, so
// "item-54321" goes on as "item-54321-2").
func Renumber(prev string, round int) string {
	base := prev
	if i := strings.LastIndexByte(prev, '-'); i >= 0 && prev[i+1:] == strconv.Itoa(round-1) {
		base = prev[:i]
	}
	return base + "-" + strconv.Itoa(round)
}
