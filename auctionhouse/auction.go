package auctionhouse

import (
	"fmt"
	"math/rand/v2"
	"time"

	"mellium.im/xmpp/jid"

	"sniper/messages"
)

// HouseBidder is the Bidder of an auction's PRICE while nobody has bid.
const HouseBidder = "house"

// bidderNames name the simulated bidders, in order; more bidders than
// names are called bidder-<n>.
var bidderNames = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"}

func bidderName(i int) string {
	if i < len(bidderNames) {
		return bidderNames[i]
	}
	return fmt.Sprintf("bidder-%d", i+1)
}

// outgoing is one chat message the house must send.
type outgoing struct {
	to   jid.JID
	body string
}

// round is one auction of one item: the state and rules, no I/O and no
// clock. The item's goroutine owns it.
type round struct {
	item      string
	increment int64
	price     int64
	high      string // HouseBidder, a simulated bidder's name or a full JID
	bids      int    // accepted bids
	// closesAt is announced in every PRICE (SOL's CloseTime extension,
	// Unix ms): the house knows its clock, the round only carries it.
	closesAt int64

	// participants, in join order, so broadcasts go out in a stable order.
	order []jid.JID
	known map[string]bool
}

func newRound(item string, start, increment int64, closesAt time.Time) *round {
	return &round{item: item, increment: increment, price: start, high: HouseBidder, known: map[string]bool{}, closesAt: closesAt.UnixMilli()}
}

// minBid is the lowest bid the round accepts now.
func (r *round) minBid() int64 { return r.price + r.increment }

func (r *round) priceBody() string {
	return messages.EncodePriceClosing(r.price, r.increment, r.high, r.closesAt)
}

// join records from as a participant (if it is not one yet) and returns
// the PRICE to send it: a JOIN always gets the current state, even a
// repeated one.
func (r *round) join(from jid.JID) (isNew bool, out []outgoing) {
	key := from.String()
	if !r.known[key] {
		r.known[key] = true
		r.order = append(r.order, from)
		isNew = true
	}
	return isNew, []outgoing{{to: from, body: r.priceBody()}}
}

// isParticipant reports whether from has joined (or bid).
func (r *round) isParticipant(from jid.JID) bool { return r.known[from.String()] }

// bid offers amount on behalf of bidder (a participant's full JID or a
// simulated bidder's name). A bid of at least minBid is accepted: it
// becomes the price and every participant is sent the new PRICE. Lower
// bids change nothing.
func (r *round) bid(bidder string, amount int64) (accepted bool, out []outgoing) {
	if amount < r.minBid() {
		return false, nil
	}
	r.price, r.high = amount, bidder
	r.bids++
	return true, r.broadcast(r.priceBody())
}

// close returns the CLOSE for every participant.
func (r *round) close() []outgoing { return r.broadcast(messages.EncodeClose()) }

func (r *round) broadcast(body string) []outgoing {
	out := make([]outgoing, 0, len(r.order))
	for _, p := range r.order {
		out = append(out, outgoing{to: p, body: body})
	}
	return out
}

// simBidder is a simulated competitor: every so often it outbids the
// current high bidder, by one to three increments, up to a private limit.
// Its limit and its schedule come from its own random source, so a given
// seed gives the same competitors whatever the snipers do.
type simBidder struct {
	name  string
	limit int64
	rng   *rand.Rand
	next  time.Time
}

// newSimBidders draws the competitors of one round.
func newSimBidders(n int, seed uint64, slot, roundNo int, start, increment int64) []*simBidder {
	bs := make([]*simBidder, n)
	for i := range bs {
		rng := rand.New(rand.NewPCG(seed, uint64(slot)<<40|uint64(roundNo)<<16|uint64(i)))
		bs[i] = &simBidder{
			name: bidderName(i),
			// 8 to 40 increments above the start: a sniper with a stop
			// price in that range wins some and loses some.
			limit: start + increment*(8+rng.Int64N(33)),
			rng:   rng,
		}
	}
	return bs
}

// wait draws the time until the bidder's next move, in [lo, hi].
func (b *simBidder) wait(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(b.rng.Int64N(int64(hi-lo)+1))
}

// offer is the bidder's move on r: a bid, or nothing when it is already
// the high bidder or the price is past its limit.
func (b *simBidder) offer(r *round) (int64, bool) {
	steps := 1 + b.rng.Int64N(3) // drawn every time: the sequence stays seed-determined
	if r.high == b.name || r.minBid() > b.limit {
		return 0, false
	}
	return min(r.price+steps*r.increment, b.limit), true
}
