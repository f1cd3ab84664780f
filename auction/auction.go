// Package auction is the sniper's functional core: a pure state machine that
// decides, for one auction, what the sniper does with each input. It performs
// no I/O and keeps no hidden state, so the same inputs always give the same
// decisions; the actors around it persist and replay them (see DESIGN).
package auction

import (
	"math"
	"slices"
)

// State is where a sniper stands in its auction, in the words of GOOS.
type State string

// The sniper states. The zero State ("") is a sniper that was never started.
const (
	Joining State = "Joining"
	Bidding State = "Bidding"
	Winning State = "Winning"
	Losing  State = "Losing"
	Won     State = "Won"
	Lost    State = "Lost"
	Failed  State = "Failed"
	Stopped State = "Stopped"
)

// Terminal reports whether no input can move the sniper out of s any more.
func (s State) Terminal() bool {
	switch s {
	case Won, Lost, Failed, Stopped:
		return true
	}
	return false
}

// States lists every named state, in the order a sniper goes through them.
func States() []State {
	return []State{Joining, Bidding, Winning, Losing, Won, Lost, Failed, Stopped}
}

// Valid reports whether s is one of the named states.
func (s State) Valid() bool { return slices.Contains(States(), s) }

// Snapshot is everything the core knows about one sniper. It is the state
// the actors persist after every decision.
type Snapshot struct {
	Item      string `json:"item"`
	State     State  `json:"state"`
	LastPrice int64  `json:"last_price"`
	LastBid   int64  `json:"last_bid"`
	StopPrice int64  `json:"stop_price"`
	// Reason says why the sniper Failed; empty otherwise.
	Reason string `json:"reason,omitempty"`
}

// Started reports whether the sniper has received its start command.
func (s Snapshot) Started() bool { return s.State != "" }

// Input is something that happened to a sniper: a user command or an
// auction-house event.
type Input interface{ isInput() }

// Start asks the sniper to join its auction and bid up to StopPrice.
type Start struct{ StopPrice int64 }

// Stop is the user's request to stop bidding.
type Stop struct{}

// Price is the auction house reporting a new current price.
type Price struct {
	Current   int64
	Increment int64
	Bidder    string
	// FromSniper is true when Bidder is this sniper; the inbound bridge
	// knows the sniper's identity, the core does not.
	FromSniper bool
}

// Close is the auction house announcing the end of the auction.
type Close struct{}

// Malformed is a message from the auction house that could not be
// understood. GOOS fails the sniper: bidding on a misread price is worse
// than not bidding.
type Malformed struct {
	Body   string
	Reason string
}

func (Start) isInput()     {}
func (Stop) isInput()      {}
func (Price) isInput()     {}
func (Close) isInput()     {}
func (Malformed) isInput() {}

// Output is something the sniper asks the outside world to do.
type Output interface{ isOutput() }

// Join asks the auction house to let the sniper take part.
type Join struct{}

// Bid offers Price to the auction house.
type Bid struct{ Price int64 }

func (Join) isOutput() {}
func (Bid) isOutput()  {}

// Decide is the whole bidding policy: given the sniper's state and one
// input, it returns the next state and what to send. It never fails: inputs
// that make no sense in the current state (a second CLOSE, a price before
// the start, anything after the end) leave the state as it is and send
// nothing, because the log may legitimately replay them.
func Decide(s Snapshot, in Input) (Snapshot, []Output) {
	if start, ok := in.(Start); ok {
		if s.Started() {
			return s, nil
		}
		s.State = Joining
		s.StopPrice = start.StopPrice
		return s, []Output{Join{}}
	}
	if !s.Started() || s.State.Terminal() {
		return s, nil
	}
	switch in := in.(type) {
	case Stop:
		s.State = Stopped
	case Close:
		if s.State == Winning {
			s.State = Won
		} else {
			s.State = Lost
		}
	case Malformed:
		s.State = Failed
		s.Reason = in.Reason
	case Price:
		s.LastPrice = in.Current
		if in.FromSniper {
			s.State = Winning
			return s, nil
		}
		bid, ok := add(in.Current, in.Increment)
		if !ok || bid > s.StopPrice {
			s.State = Losing
			return s, nil
		}
		s.State = Bidding
		s.LastBid = bid
		return s, []Output{Bid{Price: bid}}
	}
	return s, nil
}

// add returns a+b unless the sum overflows: an auction house that reports
// absurd prices must not make the sniper bid a wrapped-around negative.
func add(a, b int64) (int64, bool) {
	if b > 0 && a > math.MaxInt64-b {
		return 0, false
	}
	return a + b, true
}
