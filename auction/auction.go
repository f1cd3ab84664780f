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
	// Waiting is a last-second sniper holding its bid until its lead
	// before the close: someone else leads, and it could outbid them.
	Waiting State = "Waiting"
	Won     State = "Won"
	Lost    State = "Lost"
	Failed  State = "Failed"
	Stopped State = "Stopped"
)

// Final reports whether nothing can move the sniper out of s any more: the
// auction is over for it (Won, Lost) or it gave up (Failed).
func (s State) Final() bool {
	switch s {
	case Won, Lost, Failed:
		return true
	}
	return false
}

// Terminal reports whether the sniper bids no more unless told: it is
// Final, or Stopped (which a new stop price resumes).
func (s State) Terminal() bool { return s.Final() || s == Stopped }

// States lists every named state, in the order a sniper goes through them.
func States() []State {
	return []State{Joining, Bidding, Winning, Losing, Waiting, Won, Lost, Failed, Stopped}
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
	// Increment is the last price's minimum raise, so that a new stop
	// price can bid on the last price without waiting for the next.
	Increment int64 `json:"increment,omitempty"`
	// Reason says why the sniper Failed; empty otherwise.
	Reason string `json:"reason,omitempty"`

	// Strategy is how the sniper bids: at once (Now, the zero value) or
	// at the last moment (LastSecond), LeadMS before the close.
	Strategy Strategy `json:"strategy,omitempty"`
	LeadMS   int64    `json:"lead_ms,omitempty"`
	// CloseAt is when the auction house says the auction closes (Unix
	// ms; 0: it never said). WakeAt is when a Waiting sniper wants its
	// timer (Unix ms; 0: none). Sniped: the last-second bid was made, so
	// the sniper now answers every outbid at once until the close.
	CloseAt int64 `json:"close_at,omitempty"`
	WakeAt  int64 `json:"wake_at,omitempty"`
	Sniped  bool  `json:"sniped,omitempty"`

	// Group names the snipe group the sniper belongs to ("": none). A
	// member bids only while it holds one of the group's slots (Slot),
	// which DecideGroup hands out; it gives its slot back itself when it
	// has no bid standing any more (Losing, Lost, Stopped, Failed).
	Group    string `json:"group,omitempty"`
	GroupWin int    `json:"group_win,omitempty"`
	Slot     bool   `json:"slot,omitempty"`
}

// Strategy is when a sniper bids.
type Strategy string

// The strategies.
const (
	Now        Strategy = ""
	LastSecond Strategy = "last-second"
)

// Valid reports whether s is a known strategy.
func (s Strategy) Valid() bool { return s == Now || s == LastSecond }

// Started reports whether the sniper has received its start command.
func (s Snapshot) Started() bool { return s.State != "" }

// Input is something that happened to a sniper: a user command or an
// auction-house event.
type Input interface{ isInput() }

// Start asks the sniper to join its auction and bid up to StopPrice, at
// once or, with LastSecond, LeadMS before the close.
type Start struct {
	StopPrice int64
	Strategy  Strategy
	LeadMS    int64
	// Group and Win make the sniper a member of a snipe group that wins
	// at most Win items (see DecideGroup).
	Group string
	Win   int
}

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
	// CloseTime is when the auction closes (Unix ms), if the auction
	// house says (the CloseTime extension of SOL); 0 if not.
	CloseTime int64
}

// Timer is the sniper's own timer going off: due when the snapshot's
// WakeAt asked for it, fired when the shell noticed (later than due after
// a restart). Time is an input: the core never reads a clock.
type Timer struct {
	Due, Fired int64
}

// SetStopPrice is the user changing their mind: a new most to bid. A
// Losing sniper bids at once if the last price plus its increment now
// fits; a Stopped one resumes. It cannot go below a bid the sniper has
// standing (Bidding, Winning, or Stopped while its bid leads): a bid made
// cannot be taken back, so such a change is refused and changes nothing.
// Nor does it change a Final sniper.
type SetStopPrice struct{ StopPrice int64 }

// Close is the auction house announcing the end of the auction.
type Close struct{}

// Malformed is a message from the auction house that could not be
// understood. GOOS fails the sniper: bidding on a misread price is worse
// than not bidding.
type Malformed struct {
	Body   string
	Reason string
}

func (Start) isInput()        {}
func (Stop) isInput()         {}
func (SetStopPrice) isInput() {}
func (Price) isInput()        {}
func (Close) isInput()        {}
func (Timer) isInput()        {}
func (Malformed) isInput()    {}

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
	s, outs := decide(s, in)
	if s.Slot && s.State != Won && (s.State.Final() || !s.HasStandingBid() && !(s.State == Waiting && s.WakeAt > 0)) {
		// No bid of its can stand any more (nor is it waiting for its
		// last second): the slot goes back to the group.
		s.Slot = false
	}
	return s, outs
}

func decide(s Snapshot, in Input) (Snapshot, []Output) {
	if start, ok := in.(Start); ok {
		if s.Started() {
			return s, nil
		}
		s.State = Joining
		s.StopPrice = start.StopPrice
		s.Strategy, s.LeadMS = start.Strategy, max(start.LeadMS, 0)
		if start.Group != "" {
			s.Group, s.GroupWin = start.Group, start.Win
		}
		return s, []Output{Join{}}
	}
	if set, ok := in.(SetStopPrice); ok {
		return setStopPrice(s, set.StopPrice)
	}
	if !s.Started() || s.State.Final() {
		return s, nil
	}
	if s.State == Stopped {
		// A stopped sniper bids no more but keeps the auction's price, to
		// resume from it if told to.
		if p, ok := in.(Price); ok {
			s.LastPrice, s.Increment = p.Current, p.Increment
			if p.CloseTime > 0 {
				s.CloseAt = p.CloseTime
			}
		}
		return s, nil
	}
	switch in := in.(type) {
	case Stop:
		s.State = Stopped
		s.WakeAt = 0
	case Close:
		if s.State == Winning {
			s.State = Won
		} else {
			s.State = Lost
		}
		s.WakeAt = 0
	case Timer:
		if s.State != Waiting || in.Due != s.WakeAt {
			return s, nil // an old timer: the plan changed since
		}
		s.WakeAt, s.Sniped = 0, true
		return bidOnLastPrice(s)
	case Malformed:
		s.State = Failed
		s.Reason = in.Reason
	case Price:
		s.LastPrice, s.Increment = in.Current, in.Increment
		if in.CloseTime > 0 {
			s.CloseAt = in.CloseTime
		}
		if in.FromSniper {
			s.State = Winning
			s.WakeAt = 0
			return s, nil
		}
		return answer(s)
	}
	return s, nil
}

// answer is what the sniper does when someone else leads at the last
// price: outbid them now, or, a last-second sniper that knows the close
// and has not made its bid yet, wait for its lead before the close.
// Without a close time a last-second sniper bids at once.
func answer(s Snapshot) (Snapshot, []Output) {
	if s.Group != "" && !s.Slot {
		// A group member without a slot follows the price: Waiting for
		// a slot while it could outbid, Losing when it could not.
		if bid, ok := add(s.LastPrice, s.Increment); !ok || bid > s.StopPrice {
			s.State, s.WakeAt = Losing, 0
		} else {
			s.State, s.WakeAt = Waiting, 0
		}
		return s, nil
	}
	if s.Strategy != LastSecond || s.Sniped || s.CloseAt == 0 {
		return bidOnLastPrice(s)
	}
	if bid, ok := add(s.LastPrice, s.Increment); !ok || bid > s.StopPrice {
		s.State, s.WakeAt = Losing, 0
		return s, nil
	}
	s.State, s.WakeAt = Waiting, s.CloseAt-s.LeadMS
	return s, nil
}

// bidOnLastPrice outbids the last price if that fits under the stop price.
func bidOnLastPrice(s Snapshot) (Snapshot, []Output) {
	bid, ok := add(s.LastPrice, s.Increment)
	if !ok || bid > s.StopPrice {
		s.State = Losing
		return s, nil
	}
	s.State = Bidding
	s.LastBid = bid
	return s, []Output{Bid{Price: bid}}
}

// HasStandingBid reports whether the sniper's last bid may still be the
// auction's best: it was made and no higher price came after it.
func (s Snapshot) HasStandingBid() bool {
	switch s.State {
	case Bidding, Winning:
		return true
	case Won, Lost, Failed:
		return false
	}
	// Stopped, or Losing on a price below a bid still on its way: the
	// bid leads, or may yet, while no higher price came.
	return s.LastBid > 0 && s.LastBid >= s.LastPrice
}

func setStopPrice(s Snapshot, stop int64) (Snapshot, []Output) {
	if !s.Started() || s.State.Final() || stop <= 0 || (s.HasStandingBid() && stop < s.LastBid) {
		return s, nil
	}
	s.StopPrice = stop
	switch {
	case s.State == Losing || s.State == Waiting:
		return answer(s)
	case s.State != Stopped:
		return s, nil
	case s.LastPrice == 0:
		s.State = Joining // joined, no price yet
		return s, nil
	case s.HasStandingBid():
		// Its bid leads (Winning), or is still on its way (Bidding): no
		// new bid either way.
		s.State = Bidding
		if s.LastBid == s.LastPrice {
			s.State = Winning
		}
		return s, nil
	}
	return answer(s)
}

// add returns a+b unless the sum overflows: an auction house that reports
// absurd prices must not make the sniper bid a wrapped-around negative.
func add(a, b int64) (int64, bool) {
	if b > 0 && a > math.MaxInt64-b {
		return 0, false
	}
	return a + b, true
}
