package client

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"sniper/api"
	"sniper/auction"
	"sniper/messages"
)

// history builds events as the log holds them, numbered from 1.
type history []api.Event

func (h history) add(kind, typ string, data any) history {
	b, err := json.Marshal(data)
	if err != nil {
		panic(err)
	}
	return append(h, api.Event{Seq: uint64(len(h) + 1), Type: typ, Subject: messages.Subject("item-1", kind, typ),
		Time: fmt.Sprintf("2026-01-02T15:04:%02d.000Z", len(h)), Data: b})
}

func (h history) start(stop int64) history {
	return h.add(messages.KindCmd, messages.TypeStart, messages.StartCommand{Type: messages.TypeStart, Item: "item-1", StopPrice: stop})
}

func (h history) price(p, inc int64, sniper bool) history {
	return h.add(messages.KindIn, messages.TypePrice, messages.PriceEvent{Type: messages.TypePrice, Item: "item-1", CurrentPrice: p, Increment: inc, Bidder: "b", FromSniper: sniper})
}

func (h history) decide(typ string, st auction.State, price, bid, stop int64) history {
	return h.add(messages.KindDec, typ, messages.DecisionEvent{Type: typ, Snapshot: auction.Snapshot{Item: "item-1", State: st, LastPrice: price, LastBid: bid, StopPrice: stop}})
}

func (h history) close() history {
	return h.add(messages.KindIn, messages.TypeClose, messages.CloseEvent{Type: messages.TypeClose, Item: "item-1"})
}

func (h history) stop() history {
	return h.add(messages.KindCmd, messages.TypeStop, messages.StopCommand{Type: messages.TypeStop, Item: "item-1"})
}

func TestRenderChart(t *testing.T) {
	joined := history{}.start(1300).decide(messages.TypeJoin, auction.Joining, 0, 0, 1300)
	// Three bids, each within the stop price, then a price above it.
	lost := joined.
		price(1000, 98, false).decide(messages.TypeBid, auction.Bidding, 1000, 1098, 1300).
		price(1098, 15, true).decide(messages.TypeState, auction.Winning, 1098, 1098, 1300).
		price(1150, 20, false).decide(messages.TypeBid, auction.Bidding, 1150, 1170, 1300).
		price(1200, 25, false).decide(messages.TypeBid, auction.Bidding, 1200, 1225, 1300).
		price(1290, 20, false).decide(messages.TypeState, auction.Losing, 1290, 1225, 1300).
		close().decide(messages.TypeState, auction.Lost, 1290, 1225, 1300)
	won := joined.
		price(1000, 98, false).decide(messages.TypeBid, auction.Bidding, 1000, 1098, 1300).
		price(1098, 15, true).decide(messages.TypeState, auction.Winning, 1098, 1098, 1300).
		close().decide(messages.TypeState, auction.Won, 1098, 1098, 1300)
	many := joined
	for p := int64(100); p < 300; p += 2 {
		many = many.price(p, 1, false).decide(messages.TypeBid, auction.Bidding, p, p+1, 1300)
	}

	tests := []struct {
		name    string
		events  history
		width   int
		bids    int // bid marks drawn
		head    string
		outcome string // in the last line
		rising  bool   // the bids get higher, so their marks climb
	}{
		{"lost after three bids", lost, 72, 3, "price 1000 to 1290, 3 bids by the sniper (●), stop 1300 (╌)", "Lost", true},
		{"won with one bid", won, 72, 1, "price 1000 to 1098, 1 bid by the sniper (●), stop 1300 (╌)", "Won", false},
		{"narrow", lost, 20, 3, "price 1000 to 1290, 3 bids", "Lost", true},
		{"joined, no price yet", joined, 72, 0, "no price from the auction house yet, 0 bids by the sniper (●), stop 1300 (╌)", "now Joining", false},
		{"one price, stopped", joined.price(700, 10, false).stop().decide(messages.TypeState, auction.Stopped, 700, 0, 1300), 72, 0, "price 700, 0 bids", "Stopped", false},
		{"failed", joined.decide(messages.TypeState, auction.Failed, 0, 0, 1300), 72, 0, "no price", "Failed", false},
		{"more bids than columns", many, 72, -1, "price 100 to 298, 100 bids by the sniper", "now Bidding", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := WriteChart(&b, tt.events, tt.width); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			t.Logf("\n%s", out)
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != chartRows+2 {
				t.Fatalf("%d lines, want a head, %d rows and a foot:\n%s", len(lines), chartRows, out)
			}
			if !strings.HasPrefix(lines[0], tt.head) {
				t.Errorf("head %q, want it to begin %q", lines[0], tt.head)
			}
			rows := lines[1 : 1+chartRows]
			marks := 0
			for _, line := range rows {
				marks += strings.Count(line, string(bidMark))
				if n := len([]rune(line)); n > tt.width+12 {
					t.Errorf("row %q is %d columns, width %d", line, n, tt.width)
				}
			}
			if tt.bids >= 0 && marks != tt.bids {
				t.Errorf("%d bid marks, want %d:\n%s", marks, tt.bids, out)
			}
			if tt.bids < 0 && (marks == 0 || marks > tt.width) {
				t.Errorf("%d bid marks for 100 bids in %d columns:\n%s", marks, tt.width, out)
			}
			// Marks are drawn left to right, so a rising sequence of
			// bids climbs: each mark in the same row or above.
			if tt.rising {
				var order []int
				for x := 0; x < tt.width+12; x++ {
					for r, line := range rows {
						if rs := []rune(line); x < len(rs) && rs[x] == bidMark {
							order = append(order, r)
						}
					}
				}
				for i := 1; i < len(order); i++ {
					if order[i] > order[i-1] || order[0] == order[len(order)-1] {
						t.Errorf("bid marks in rows %v left to right, want them to climb:\n%s", order, out)
						break
					}
				}
			}
			stopRows := 0
			for _, line := range rows {
				if strings.HasSuffix(line, " stop 1300") && strings.Count(line, string(stopMark)) >= 3 {
					stopRows++
				}
			}
			if stopRows != 1 {
				t.Errorf("%d rows are the stop line (%c… stop 1300), want 1:\n%s", stopRows, stopMark, out)
			}
			if top := strings.TrimSpace(rows[0]); top != "│" && !strings.HasPrefix(top, "1300 ┤") {
				t.Errorf("top row %q, want the highest price, the stop, as its label", rows[0])
			}
			if prices := strings.Count(out, "─") + strings.Count(out, "┌"); !strings.HasPrefix(tt.head, "no price") && tt.bids >= 0 && prices == 0 {
				t.Errorf("no price line:\n%s", out)
			}
			foot := lines[len(lines)-1]
			if !strings.HasSuffix(foot, "  "+tt.outcome) && foot != strings.Repeat(" ", 5)+tt.outcome {
				t.Errorf("foot %q, want it to end with the outcome %q", foot, tt.outcome)
			}
		})
	}
}

func TestRenderChartWithoutEvents(t *testing.T) {
	var b strings.Builder
	if err := WriteChart(&b, nil, 72); err != nil || b.Len() != 0 {
		t.Fatalf("WriteChart(nil) = %q, %v; want nothing", b.String(), err)
	}
}

// The page shows the price path the same way: a price held until the next.
func TestRenderChartHoldsThePrice(t *testing.T) {
	h := history{}.start(2000).decide(messages.TypeJoin, auction.Joining, 0, 0, 2000).
		price(1000, 10, false).decide(messages.TypeBid, auction.Bidding, 1000, 1010, 2000).
		price(2000, 10, false).decide(messages.TypeState, auction.Losing, 2000, 1010, 2000)
	var b strings.Builder
	if err := WriteChart(&b, h, 40); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", b.String())
	rows := strings.Split(b.String(), "\n")[1 : 1+chartRows]
	bottom, top := rows[chartRows-1], rows[0]
	if !strings.HasPrefix(bottom, "1000 ┤──") || !strings.Contains(bottom, "┘") {
		t.Errorf("bottom row %q: want the price 1000 held from the start up to its rise", bottom)
	}
	if !strings.Contains(top, "┌──") || !strings.HasSuffix(top, "─ stop 2000") {
		t.Errorf("top row %q: want the price 2000 held to the end, on the stop line", top)
	}
}
