package client

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"sniper/api"
	"sniper/auction"
	"sniper/internal/clip"
	"sniper/messages"
)

// The text chart `sniper history` prints above the events: a few lines
// that show the auction at a glance, like the page's SVG chart.
//
//	price 1000 to 1290, 3 bids by the sniper (●), stop 1300 (╌)
//	1300 ┤╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┌───── stop 1300
//	     │                          ●   ┌───┘
//	     │                ●   ┌─────────┘
//	     │      ●   ┌───┘
//	1000 ┤──────────┘
//	      #4 ............................... #22  Lost
//
// x is the order of the events in the log (a terminal has too few columns
// for time to say much), y the price: the auction house's reports as a
// step line, each of the sniper's bids as a mark at its price.

const (
	chartRows  = 6   // rows of the plot
	ChartWidth = 72  // columns `sniper history` draws in
	bidMark    = '●' // a bid by the sniper
	stopMark   = '╌' // the stop price
)

type chartPoint struct {
	seq   uint64
	price int64
	bid   bool // a bid by the sniper; else a price from the auction house
}

type chartData struct {
	points  []chartPoint // prices and bids, in log order
	stop    int64        // 0: no start command seen
	outcome auction.State
	closed  bool
}

func chartOf(events []api.Event) chartData {
	var c chartData
	for _, e := range events {
		_, kind, typ, err := messages.ParseSubject(e.Subject)
		if err != nil {
			kind, typ, _ = strings.Cut(e.Subject, ".")
		}
		switch {
		case kind == messages.KindIn && typ == messages.TypePrice:
			var p messages.PriceEvent
			if json.Unmarshal(e.Data, &p) == nil {
				c.points = append(c.points, chartPoint{seq: e.Seq, price: p.CurrentPrice})
			}
		case kind == messages.KindIn && typ == messages.TypeClose:
			c.closed = true
		case kind == messages.KindCmd && typ == messages.TypeStart:
			var s messages.StartCommand
			if json.Unmarshal(e.Data, &s) == nil {
				c.stop = s.StopPrice
			}
		case kind == messages.KindDec:
			var s auction.Snapshot
			if json.Unmarshal(e.Data, &s) != nil {
				continue
			}
			if typ == messages.TypeBid {
				c.points = append(c.points, chartPoint{seq: e.Seq, price: s.LastBid, bid: true})
			}
			if s.State != "" {
				c.outcome = s.State
			}
			if c.stop == 0 {
				c.stop = s.StopPrice
			}
		}
	}
	return c
}

// WriteChart writes the chart of events in about width columns; nothing
// when there are no events. With more prices and bids than columns some
// share a column and bids a mark; the first line counts them all.
func WriteChart(w io.Writer, events []api.Event, width int) error {
	if len(events) == 0 {
		return nil
	}
	c := chartOf(events)
	var b strings.Builder
	prices, bids := 0, 0
	var first, last int64
	for _, p := range c.points {
		if p.bid {
			bids++
			continue
		}
		if prices == 0 {
			first = p.price
		}
		last = p.price
		prices++
	}
	var head []string
	switch prices {
	case 0:
		head = append(head, "no price from the auction house yet")
	case 1:
		head = append(head, fmt.Sprintf("price %d", first))
	default:
		head = append(head, fmt.Sprintf("price %d to %d", first, last))
	}
	head = append(head, fmt.Sprintf("%d bid%s by the sniper (%c)", bids, plural(bids), bidMark))
	if c.stop > 0 {
		head = append(head, fmt.Sprintf("stop %d (%c)", c.stop, stopMark))
	}
	b.WriteString(strings.Join(head, ", ") + "\n")

	if c.plotted() {
		plotChart(&b, c, width)
	}
	foot := "outcome: not decided yet"
	if c.outcome != "" {
		foot = string(c.outcome)
		if !c.outcome.Terminal() {
			foot = "now " + foot
			if c.closed {
				foot += " (closed)"
			}
		}
	}
	if n := len(c.points); n > 1 {
		foot = fmt.Sprintf("#%d to #%d  %s", c.points[0].seq, c.points[n-1].seq, foot)
	} else if n == 1 {
		foot = fmt.Sprintf("#%d  %s", c.points[0].seq, foot)
	}
	b.WriteString(strings.Repeat(" ", labelWidth(c)+1) + clip.Printable(foot) + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// plotted says whether there is anything to plot: a price, a bid or the
// stop price.
func (c chartData) plotted() bool { return len(c.points) > 0 || c.stop > 0 }

func chartRange(c chartData) (lo, hi int64) {
	var values []int64
	for _, p := range c.points {
		values = append(values, p.price)
	}
	if c.stop > 0 {
		values = append(values, c.stop)
	}
	return slices.Min(values), slices.Max(values)
}

func labelWidth(c chartData) int {
	if !c.plotted() {
		return 0
	}
	lo, hi := chartRange(c)
	return max(len(strconv.FormatInt(lo, 10)), len(strconv.FormatInt(hi, 10)))
}

// plotChart draws the rows: the price axis, the step line, the bids and
// the stop line.
func plotChart(b *strings.Builder, c chartData, width int) {
	lo, hi := chartRange(c)
	lw := labelWidth(c)
	stopLabel := ""
	if c.stop > 0 {
		stopLabel = fmt.Sprintf(" stop %d", c.stop)
	}
	cols := max(width-lw-2-len(stopLabel), 8)
	grid := make([][]rune, chartRows)
	for r := range grid {
		grid[r] = []rune(strings.Repeat(" ", cols))
	}
	row := func(v int64) int {
		if hi == lo {
			return chartRows - 1
		}
		return int(math.Round(float64(hi-v) / float64(hi-lo) * (chartRows - 1)))
	}
	col := func(i int) int { return i * cols / max(len(c.points), 1) }

	stopRow := -1
	if c.stop > 0 {
		stopRow = row(c.stop)
		for x := range grid[stopRow] {
			grid[stopRow][x] = stopMark
		}
	}
	// The price holds from one report to the next, and on to the end.
	cur := -1
	for i, p := range c.points {
		if p.bid {
			continue
		}
		x, r := col(i), row(p.price)
		switch {
		case cur < 0 || cur == r:
			grid[r][x] = '─'
		case r < cur: // up
			grid[cur][x], grid[r][x] = '┘', '┌'
		default: // down
			grid[cur][x], grid[r][x] = '┐', '└'
		}
		for y := min(cur, r) + 1; cur >= 0 && y < max(cur, r); y++ {
			grid[y][x] = '│'
		}
		next := cols
		for j := i + 1; j < len(c.points); j++ {
			if !c.points[j].bid {
				next = col(j)
				break
			}
		}
		for x2 := x + 1; x2 < next; x2++ {
			grid[r][x2] = '─'
		}
		cur = r
	}
	for i, p := range c.points {
		if p.bid {
			grid[row(p.price)][col(i)] = bidMark
		}
	}
	for r, line := range grid {
		label, axis := "", '│'
		switch {
		case r == 0 && hi != lo:
			label, axis = strconv.FormatInt(hi, 10), '┤'
		case r == chartRows-1:
			label, axis = strconv.FormatInt(lo, 10), '┤'
		}
		s := fmt.Sprintf("%*s %c%s", lw, label, axis, string(line))
		if r == stopRow {
			s += stopLabel
		}
		b.WriteString(strings.TrimRight(s, " ") + "\n")
	}
}
