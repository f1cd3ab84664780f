package auctionhouse

import (
	"errors"
	"slices"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"sniper/messages"
)

func TestParseCommand(t *testing.T) {
	for body, want := range map[string]command{
		messages.EncodeJoin():                  {Kind: "JOIN"},
		messages.EncodeBid(1234):               {Kind: "BID", Price: 1234},
		" SOLVersion:1.1;Command:BID;Price:7 ": {Kind: "BID", Price: 7},
	} {
		got, err := parseCommand(body)
		if err != nil || got != want {
			t.Errorf("parseCommand(%q) = %+v, %v; want %+v", body, got, err, want)
		}
	}
	for _, body := range []string{
		"", "JOIN", "Command: JOIN;", "SOLVersion: 1.0; Command: JOIN;",
		"SOLVersion: 1.1; Command: BID;", "SOLVersion: 1.1; Command: BID; Price: 0;",
		"SOLVersion: 1.1; Command: BID; Price: 9999999999999999999;",
		"SOLVersion: 1.1; Command: JOIN; Command: BID;", "SOLVersion: 1.1; Event: CLOSE;",
	} {
		if got, err := parseCommand(body); !errors.Is(err, errBadCommand) {
			t.Errorf("parseCommand(%q) = %+v, %v; want errBadCommand", body, got, err)
		}
	}
}

func TestRoundRules(t *testing.T) {
	a := jid.MustParse("a@localhost/Auction")
	b := jid.MustParse("b@localhost/Auction")
	closes := time.UnixMilli(1767225600000)
	r := newRound("lamp", 100, 10, closes)
	if isNew, out := r.join(a); !isNew || len(out) != 1 || out[0].body != messages.EncodePriceClosing(100, 10, HouseBidder, closes.UnixMilli()) {
		t.Fatalf("join: %v %+v", isNew, out)
	}
	if isNew, _ := r.join(a); isNew {
		t.Fatal("second join counted as new")
	}
	r.join(b)
	if ok, out := r.bid(a.String(), 109); ok || out != nil {
		t.Fatalf("bid below the minimum accepted: %+v", out)
	}
	ok, out := r.bid(a.String(), 110)
	if !ok || len(out) != 2 || !out[0].to.Equal(a) || !out[1].to.Equal(b) || out[1].body != messages.EncodePriceClosing(110, 10, a.String(), closes.UnixMilli()) {
		t.Fatalf("bid 110: %v %+v", ok, out)
	}
	if out := r.close(); len(out) != 2 || out[0].body != messages.EncodeClose() {
		t.Fatalf("close: %+v", out)
	}
}

func TestSimulatedBiddersAreSeedDetermined(t *testing.T) {
	draw := func(seed uint64) (limits []int64, waits []time.Duration) {
		for _, b := range newSimBidders(3, seed, 1, 2, 100, 10) {
			limits = append(limits, b.limit)
			for range 5 {
				waits = append(waits, b.wait(time.Second, 4*time.Second))
			}
		}
		return limits, waits
	}
	l1, w1 := draw(7)
	l2, w2 := draw(7)
	l3, _ := draw(8)
	if !slices.Equal(l1, l2) || !slices.Equal(w1, w2) {
		t.Fatalf("same seed, different bidders: %v %v / %v %v", l1, w1, l2, w2)
	}
	if slices.Equal(l1, l3) {
		t.Fatalf("seeds 7 and 8 gave the same limits %v", l1)
	}
	for _, l := range l1 {
		if l < 180 || l > 500 {
			t.Fatalf("limit %d outside start+8..40 increments", l)
		}
	}
	for _, w := range w1 {
		if w < time.Second || w > 4*time.Second {
			t.Fatalf("wait %s outside [1s, 4s]", w)
		}
	}
}

func TestSimulatedBidderStaysWithinItsLimit(t *testing.T) {
	bs := newSimBidders(2, 1, 0, 1, 100, 10)
	r := newRound("lamp", 100, 10, time.Now())
	for range 1000 {
		moved := false
		for _, b := range bs {
			if p, ok := b.offer(r); ok {
				if p > b.limit || p < r.minBid() {
					t.Fatalf("%s offered %d (limit %d, min %d)", b.name, p, b.limit, r.minBid())
				}
				if ok, _ := r.bid(b.name, p); !ok {
					t.Fatalf("offer %d refused", p)
				}
				moved = true
			}
		}
		if !moved {
			break
		}
	}
	winner, loser := bs[0], bs[1]
	if loser.limit > winner.limit {
		winner, loser = loser, winner
	}
	if r.price > winner.limit || r.price <= loser.limit-r.increment {
		t.Fatalf("final price %d; limits %s=%d %s=%d", r.price, winner.name, winner.limit, loser.name, loser.limit)
	}
	if winner.limit != loser.limit && r.high != winner.name {
		t.Fatalf("won by %s, want %s (limits %d > %d)", r.high, winner.name, winner.limit, loser.limit)
	}
}
