package auction

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// auctionModel is one member's auction, as an auction house runs it:
// the sniper's bid, once made, is accepted (a PRICE from the sniper) or
// beaten first by another bidder; the close comes whenever.
type auctionModel struct {
	price, inc int64
	pending    int64 // the sniper's bid the house has not answered yet
	closed     bool
}

// TestGroupPromisesUnderEveryInterleaving drives groups of 2 to 5
// members with win 1 to 3 through random interleavings of the inputs an
// auction house and a user can send, checking after every step that no
// more than Win members hold a slot, no more than Win bids stand, no more
// than Win items are won, and that once Win are won nobody else bids.
func TestGroupPromisesUnderEveryInterleaving(t *testing.T) {
	for seed := range uint64(3000) {
		rng := rand.New(rand.NewPCG(seed, 42))
		n := 2 + rng.IntN(4)
		win := 1 + rng.IntN(min(n, 3))
		g := Group{Name: "g"}
		houses := make([]*auctionModel, n)
		items := make([]string, n)
		for i := range n {
			items[i] = fmt.Sprintf("item-%d", i)
			houses[i] = &auctionModel{price: 100 + int64(rng.IntN(50)), inc: 10}
			var changes []Change
			g, changes = DecideGroup(g, items[i], Start{StopPrice: 300 + int64(rng.IntN(300)), Group: "g", Win: win})
			apply(houses, items, changes)
		}
		var trace []string
		for step := 0; step < 200; step++ {
			i := rng.IntN(n)
			h := houses[i]
			var in Input
			switch r := rng.IntN(20); {
			case h.closed:
				continue
			case r < 1:
				in, h.closed = Close{}, true
			case r < 2:
				in = Stop{}
			case r < 3:
				in = SetStopPrice{StopPrice: 200 + int64(rng.IntN(600))}
			case h.pending > 0 && r < 12:
				h.price, h.pending = h.pending, 0
				in = Price{Current: h.price, Increment: h.inc, Bidder: "sniper", FromSniper: true}
			default:
				h.price += h.inc * int64(1+rng.IntN(3))
				if h.pending > 0 && h.pending <= h.price {
					h.pending = 0 // outbid before the house took it
				}
				in = Price{Current: h.price, Increment: h.inc, Bidder: "other"}
			}
			trace = append(trace, fmt.Sprintf("%s %#v", items[i], in))
			var changes []Change
			g, changes = DecideGroup(g, items[i], in)
			apply(houses, items, changes)
			if err := checkGroup(g); err != nil {
				t.Fatalf("seed %d, n %d, win %d, step %d: %v\ntrace:\n%v\ngroup: %+v", seed, n, win, step, err, trace, g.Members)
			}
		}
	}
}

// apply hands the bids of a group decision to the members' auctions.
func apply(houses []*auctionModel, items []string, changes []Change) {
	for _, c := range changes {
		for _, o := range c.Outputs {
			if b, ok := o.(Bid); ok {
				for i, it := range items {
					if it == c.Snapshot.Item && !houses[i].closed {
						houses[i].pending = b.Price
					}
				}
			}
		}
	}
}

func checkGroup(g Group) error {
	slots, live, won := 0, 0, 0
	for _, m := range g.Members {
		if m.Slot {
			slots++
		}
		switch m.State {
		case Bidding, Winning:
			live++
			if !m.Slot {
				return fmt.Errorf("%s is %s without a slot", m.Item, m.State)
			}
		case Won:
			won++
		}
	}
	switch {
	case slots > g.Win:
		return fmt.Errorf("%d slots held, win %d", slots, g.Win)
	case live > g.Win:
		return fmt.Errorf("%d live bids, win %d", live, g.Win)
	case won > g.Win:
		return fmt.Errorf("%d won, win %d", won, g.Win)
	}
	if won == g.Win {
		for _, m := range g.Members {
			if m.State != Won && !m.State.Terminal() {
				return fmt.Errorf("%d won but %s is still %s", won, m.Item, m.State)
			}
		}
	}
	return nil
}

func TestGroupHandsTheSlotToTheCheapest(t *testing.T) {
	g := Group{Name: "camera"}
	for _, item := range []string{"a", "b", "c"} {
		g, _ = DecideGroup(g, item, Start{StopPrice: 1000, Group: "camera", Win: 1})
	}
	var ch []Change
	g, ch = DecideGroup(g, "a", Price{Current: 500, Increment: 10, Bidder: "x"})
	if m, _ := g.Member("a"); m.State != Bidding || !m.Slot || len(ch) != 1 || len(ch[0].Outputs) != 1 {
		t.Fatalf("the first priced member takes the free slot and bids: %+v %+v", m, ch)
	}
	g, _ = DecideGroup(g, "b", Price{Current: 300, Increment: 10, Bidder: "x"})
	g, _ = DecideGroup(g, "c", Price{Current: 200, Increment: 10, Bidder: "x"})
	for _, item := range []string{"b", "c"} {
		if m, _ := g.Member(item); m.State != Waiting || m.Slot {
			t.Fatalf("%s with the slot taken: %+v, want Waiting without a slot", item, m)
		}
	}
	// a is outbid beyond its limit: the slot goes to c, the cheapest next bid.
	g, ch = DecideGroup(g, "a", Price{Current: 1000, Increment: 10, Bidder: "x"})
	if m, _ := g.Member("c"); m.State != Bidding || m.LastBid != 210 || !m.Slot {
		t.Fatalf("c after a gave up: %+v, want Bidding 210 with the slot", m)
	}
	if len(ch) != 2 || ch[0].Snapshot.Item != "a" || ch[1].Snapshot.Item != "c" {
		t.Fatalf("changes %+v, want a (Losing) then c (its bid)", ch)
	}
	g, _ = DecideGroup(g, "c", Price{Current: 210, Increment: 10, Bidder: "sniper", FromSniper: true})
	g, ch = DecideGroup(g, "c", Close{})
	for _, item := range []string{"a", "b"} {
		if m, _ := g.Member(item); m.State != Stopped {
			t.Errorf("%s after c won: %s, want Stopped", item, m.State)
		}
	}
	if g.Wins() != 1 || len(ch) != 3 {
		t.Errorf("wins %d, changes %+v: want 1 and c, a, b", g.Wins(), ch)
	}
}

// TestGroupScripts plays testdata/groups/*.txt through DecideGroup. After
// "== name", "win N" makes the group; each step is "ITEM: input ->
// changes", the changes being each changed member as
// ITEM:State:LastPrice:LastBid (":slot" when it holds one), in the order
// the group changed them, then the outputs (join:ITEM, bid:ITEM:PRICE).
// After every step the group's promises are checked as well.
func TestGroupScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/groups/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no group scripts: %v", err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var g *Group
		name := ""
		for n, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			at := fmt.Sprintf("%s:%d", file, n+1)
			switch {
			case line == "" || strings.HasPrefix(line, "#"):
				continue
			case strings.HasPrefix(line, "=="):
				name, g = strings.TrimSpace(line[2:]), nil
				continue
			case strings.HasPrefix(line, "win "):
				win, err := strconv.Atoi(strings.TrimSpace(line[4:]))
				if err != nil {
					t.Fatalf("%s: %v", at, err)
				}
				g = &Group{Name: "g", Win: win}
				continue
			}
			if g == nil {
				t.Fatalf("%s: a step before '== name' and 'win N'", at)
			}
			item, rest, ok := strings.Cut(line, ":")
			input, want, ok2 := strings.Cut(rest, "->")
			if !ok || !ok2 {
				t.Fatalf("%s: want 'ITEM: input -> changes', got %q", at, line)
			}
			in, err := parseInput(strings.Fields(input))
			if err != nil {
				t.Fatalf("%s: %v", at, err)
			}
			if start, ok := in.(Start); ok {
				start.Group, start.Win = g.Name, g.Win
				in = start
			}
			next, changes := DecideGroup(*g, strings.TrimSpace(item), in)
			*g = next
			if got, want := describeChanges(changes), strings.Join(strings.Fields(want), " "); got != want {
				t.Fatalf("%s (%s): after %q\n got: %s\nwant: %s", at, name, strings.TrimSpace(line), got, want)
			}
			if err := checkGroup(*g); err != nil {
				t.Fatalf("%s (%s): %v", at, name, err)
			}
		}
	}
}

func describeChanges(changes []Change) string {
	var parts, outs []string
	for _, c := range changes {
		s := c.Snapshot
		d := fmt.Sprintf("%s:%s:%d:%d", s.Item, s.State, s.LastPrice, s.LastBid)
		if s.Slot {
			d += ":slot"
		}
		parts = append(parts, d)
		for _, o := range c.Outputs {
			switch o := o.(type) {
			case Join:
				outs = append(outs, "join:"+s.Item)
			case Bid:
				outs = append(outs, fmt.Sprintf("bid:%s:%d", s.Item, o.Price))
			}
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(append(parts, outs...), " ")
}
