package auction

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestScripts plays the scenarios in testdata/*.txt through Decide. Each
// scenario starts from a fresh sniper; each line is one input and the state,
// last price, last bid and outputs expected after it.
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts in testdata: %v", err)
	}
	for _, file := range files {
		for _, sc := range readScripts(t, file) {
			t.Run(filepath.Base(file)+"/"+sc.name, func(t *testing.T) {
				s := Snapshot{Item: "item-54321"}
				for _, step := range sc.steps {
					var outs []Output
					s, outs = Decide(s, step.in)
					if got := describe(s, outs, strings.Contains(step.want, "stop:"), strings.Contains(step.want, "wake:")); got != step.want {
						t.Fatalf("%s:%d: after %q\n got: %s\nwant: %s", file, step.line, step.text, got, step.want)
					}
					if s.Item != "item-54321" {
						t.Fatalf("%s:%d: item changed to %q", file, step.line, s.Item)
					}
				}
			})
		}
	}
}

type script struct {
	name  string
	steps []step
}

type step struct {
	line int
	text string
	in   Input
	want string
}

func readScripts(t *testing.T, file string) []script {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var scripts []script
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "=="):
			scripts = append(scripts, script{name: strings.TrimSpace(line[2:])})
			continue
		}
		if len(scripts) == 0 {
			t.Fatalf("%s:%d: step before the first '== name' line", file, n)
		}
		input, want, ok := strings.Cut(line, "->")
		if !ok {
			t.Fatalf("%s:%d: want 'input -> expectation', got %q", file, n, line)
		}
		in, err := parseInput(strings.Fields(input))
		if err != nil {
			t.Fatalf("%s:%d: %v", file, n, err)
		}
		last := &scripts[len(scripts)-1]
		last.steps = append(last.steps, step{line: n, text: strings.TrimSpace(input), in: in, want: strings.Join(strings.Fields(want), " ")})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return scripts
}

func parseInput(f []string) (Input, error) {
	var bad error
	num := func(s string) int64 {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil && bad == nil {
			bad = fmt.Errorf("bad number %q", s)
		}
		return n
	}
	var in Input
	switch {
	case len(f) == 2 && f[0] == "start":
		in = Start{StopPrice: num(f[1])}
	case len(f) == 4 && f[0] == "start" && f[2] == "last-second":
		in = Start{StopPrice: num(f[1]), Strategy: LastSecond, LeadMS: num(f[3])}
	case len(f) == 5 && f[0] == "price" && strings.HasPrefix(f[4], "close="):
		in = Price{Current: num(f[1]), Increment: num(f[2]), Bidder: f[3], FromSniper: f[3] == "sniper", CloseTime: num(strings.TrimPrefix(f[4], "close="))}
	case len(f) == 3 && f[0] == "timer":
		in = Timer{Due: num(f[1]), Fired: num(f[2])}
	case len(f) == 1 && f[0] == "stop":
		in = Stop{}
	case len(f) == 2 && f[0] == "set":
		in = SetStopPrice{StopPrice: num(f[1])}
	case len(f) == 1 && f[0] == "close":
		in = Close{}
	case len(f) == 1 && f[0] == "malformed":
		in = Malformed{Body: "a broken message", Reason: "no Event field"}
	case len(f) == 4 && f[0] == "price":
		in = Price{Current: num(f[1]), Increment: num(f[2]), Bidder: f[3], FromSniper: f[3] == "sniper"}
	default:
		return nil, fmt.Errorf("unknown input %q", strings.Join(f, " "))
	}
	if bad != nil {
		return nil, bad
	}
	return in, nil
}

// describe is the state as a script line expects it: state, last price,
// last bid, then the stop price ("stop:N") and the timer asked for
// ("wake:MS") where the line asks for them, then the outputs.
func describe(s Snapshot, outs []Output, withStop, withWake bool) string {
	state := string(s.State)
	if state == "" {
		state = "-"
	}
	parts := []string{state, strconv.FormatInt(s.LastPrice, 10), strconv.FormatInt(s.LastBid, 10)}
	if withStop {
		parts = append(parts, "stop:"+strconv.FormatInt(s.StopPrice, 10))
	}
	if withWake {
		parts = append(parts, "wake:"+strconv.FormatInt(s.WakeAt, 10))
	}
	for _, o := range outs {
		switch o := o.(type) {
		case Join:
			parts = append(parts, "join")
		case Bid:
			parts = append(parts, "bid:"+strconv.FormatInt(o.Price, 10))
		default:
			parts = append(parts, fmt.Sprintf("%T", o))
		}
	}
	return strings.Join(parts, " ")
}

func TestStartRecordsStopPrice(t *testing.T) {
	s, _ := Decide(Snapshot{Item: "x"}, Start{StopPrice: 1100})
	if s.StopPrice != 1100 {
		t.Fatalf("stop price = %d, want 1100", s.StopPrice)
	}
}

func TestMalformedKeepsReason(t *testing.T) {
	s, _ := Decide(Snapshot{Item: "x"}, Start{StopPrice: 1100})
	s, outs := Decide(s, Malformed{Body: "junk", Reason: `missing field "Event"`})
	if s.State != Failed || s.Reason != `missing field "Event"` || len(outs) != 0 {
		t.Fatalf("got %+v %v, want Failed with the reason and no outputs", s, outs)
	}
}

func TestFinalStatesAbsorbEveryInput(t *testing.T) {
	inputs := []Input{Start{StopPrice: 5}, Stop{}, Close{}, Malformed{Reason: "r"}, SetStopPrice{StopPrice: 100},
		Price{Current: 1, Increment: 1, Bidder: "o"}, Price{Current: 1, Increment: 1, FromSniper: true}}
	for _, st := range []State{Won, Lost, Failed} {
		if !st.Final() || !st.Terminal() || !st.Valid() {
			t.Fatalf("%s: want final, terminal and valid", st)
		}
		before := Snapshot{Item: "x", State: st, LastPrice: 7, LastBid: 6, StopPrice: 9, Reason: "why"}
		for _, in := range inputs {
			after, outs := Decide(before, in)
			if after != before || len(outs) != 0 {
				t.Errorf("%s + %#v -> %+v %v, want unchanged and silent", st, in, after, outs)
			}
		}
	}
	for _, st := range []State{Joining, Bidding, Winning, Losing} {
		if st.Terminal() || st.Final() {
			t.Errorf("%s must not be terminal", st)
		}
	}
	if !Stopped.Terminal() || Stopped.Final() {
		t.Error("Stopped bids no more (terminal) but can be resumed (not final)")
	}
	if State("Sleeping").Valid() {
		t.Error("unknown state reported valid")
	}
}
