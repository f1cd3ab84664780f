// Package messages defines what travels on the sniper's log and on the
// wire: the JSON events and commands stored in the SNIPER stream, their
// subjects, and the SOL 1.1 chat codec spoken with the auction house.
package messages

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"sniper/auction"
)

// Event type names: the "type" field of every payload and the last token of
// its subject.
const (
	TypeStart = "start"
	TypeStop  = "stop"
	// TypeSet changes a sniper's stop price (and resumes a stopped one).
	TypeSet   = "set"
	TypePrice = "price"
	TypeClose = "close"
	// TypeTimer is the sniper's own timer going off (last-second bids).
	TypeTimer     = "timer"
	TypeMalformed = "malformed"
	// A decision's type says what it sends: join, bid, or nothing (state).
	TypeJoin  = "join"
	TypeBid   = "bid"
	TypeState = "state"
	// TypeClaim is written by an instance that became active, once per
	// unfinished auction: the state unchanged, a JOIN to send again (the
	// auction house answers with its current state, whatever it told the
	// sniper while no instance was connected), and the decision fence
	// moved, so that the instance it replaced can no longer decide.
	TypeClaim = "claim"
	TypeSent  = "sent"
	// TypeUndelivered records a request the auction house never took.
	TypeUndelivered = "undelivered"
	// TypeNotified records that a notification of a state change reached
	// its receiver (a 2xx); TypeNotifyFailed, once per event, that its
	// first attempt failed and it is being retried.
	TypeNotified     = "notified"
	TypeNotifyFailed = "notify_failed"
)

// Subject kinds: the third token of a subject says who wrote it and who
// reads it (see docs/architecture.md).
const (
	KindCmd = "cmd" // user commands: HTTP API, CLI
	KindIn  = "in"  // auction-house events: inbound XMPP bridge
	KindDec = "dec" // the sniper's decisions: its new state and what to send
	KindOut = "out" // the outbound bridge's records of what reached the wire
)

// SubjectPrefix is the first token of every subject in the stream.
const SubjectPrefix = "sniper"

var itemPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ErrInvalidItem is returned for item ids outside [A-Za-z0-9_-]{1,64}.
var ErrInvalidItem = errors.New("item id must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'")

// ValidItem checks an item id. Ids become subject tokens, consumer names
// and JIDs, so the alphabet is kept to what all three accept.
func ValidItem(item string) error {
	if !itemPattern.MatchString(item) {
		return fmt.Errorf("%w: %q", ErrInvalidItem, item)
	}
	return nil
}

// Subject is where an event of the given kind and type about item lives.
func Subject(item, kind, typ string) string {
	return SubjectPrefix + "." + item + "." + kind + "." + typ
}

// ItemFilter matches the whole history of one auction.
func ItemFilter(item string) string { return SubjectPrefix + "." + item + ".>" }

// ParseSubject splits a stream subject into item, kind and type.
func ParseSubject(subject string) (item, kind, typ string, err error) {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 || parts[0] != SubjectPrefix {
		return "", "", "", fmt.Errorf("subject %q is not sniper.<item>.<kind>.<type>", subject)
	}
	return parts[1], parts[2], parts[3], nil
}

// StartCommand asks for a sniper on Item bidding up to StopPrice.
type StartCommand struct {
	Type      string `json:"type"`
	Item      string `json:"item"`
	StopPrice int64  `json:"stop_price"`
	// Strategy "last-second" holds the bid until LeadMS before the close.
	Strategy string `json:"strategy,omitempty"`
	LeadMS   int64  `json:"lead_ms,omitempty"`
	// Group and Win make the sniper a member of a snipe group that wins
	// at most Win of its items.
	Group string `json:"group,omitempty"`
	Win   int    `json:"win,omitempty"`
	// NotifyURL, when set, receives this sniper's notifications instead
	// of the global --notify-url (see package notify).
	NotifyURL string `json:"notify_url,omitempty"`
}

// StopCommand asks the sniper on Item to stop bidding.
type StopCommand struct {
	Type string `json:"type"`
	Item string `json:"item"`
}

// SetStopPriceCommand changes the stop price of the sniper on Item.
type SetStopPriceCommand struct {
	Type      string `json:"type"`
	Item      string `json:"item"`
	StopPrice int64  `json:"stop_price"`
}

// PriceEvent is a PRICE message from the auction house.
type PriceEvent struct {
	Type         string `json:"type"`
	Item         string `json:"item"`
	CurrentPrice int64  `json:"current_price"`
	Increment    int64  `json:"increment"`
	Bidder       string `json:"bidder"`
	// FromSniper is decided by the inbound bridge, which knows the
	// sniper's JID, and recorded so the decision can be replayed.
	FromSniper bool `json:"from_sniper"`
	// CloseTime is the close the auction house announced (Unix ms), 0 if
	// it did not (SOL's CloseTime extension).
	CloseTime int64 `json:"close_time,omitempty"`
}

// TimerEvent is the sniper's own timer going off: due when the sniper
// asked for it (Unix ms), fired when it was noticed; both are logged so
// that a replay decides the same, and a late timer says how late.
type TimerEvent struct {
	Type  string `json:"type"`
	Item  string `json:"item"`
	Due   int64  `json:"due"`
	Fired int64  `json:"fired"`
}

// NewTimer builds a timer event.
func NewTimer(item string, due, fired int64) TimerEvent {
	return TimerEvent{Type: TypeTimer, Item: item, Due: due, Fired: fired}
}

// CloseEvent is a CLOSE message from the auction house.
type CloseEvent struct {
	Type string `json:"type"`
	Item string `json:"item"`
}

// MalformedEvent is a message from the auction house that did not decode.
type MalformedEvent struct {
	Type   string `json:"type"`
	Item   string `json:"item"`
	Body   string `json:"body"`
	Reason string `json:"reason"`
}

// SentEvent records that the outbound request at OutSeq reached the
// auction house: the bridge's durable memory of what it already sent, and
// in the history the moment a JOIN or BID actually went out.
type SentEvent struct {
	Type   string `json:"type"`
	Item   string `json:"item"`
	OutSeq uint64 `json:"out_seq"`
	Body   string `json:"body"`
}

// UndeliveredEvent records that the request at OutSeq was given up: the
// XMPP server kept bouncing it (the auction's account was offline).
type UndeliveredEvent struct {
	Type   string `json:"type"`
	Item   string `json:"item"`
	OutSeq uint64 `json:"out_seq"`
	Body   string `json:"body"`
	Reason string `json:"reason"`
}

// NotifiedEvent records that the notification of the decision at EventSeq
// was accepted by its receiver after Attempts attempts.
type NotifiedEvent struct {
	Type     string `json:"type"`
	Item     string `json:"item"`
	EventSeq uint64 `json:"event_seq"`
	Attempts int    `json:"attempts"`
}

// NotifyFailedEvent records that the first attempt to notify the decision
// at EventSeq failed; it is retried until it is accepted (NotifiedEvent).
type NotifyFailedEvent struct {
	Type     string `json:"type"`
	Item     string `json:"item"`
	EventSeq uint64 `json:"event_seq"`
	Reason   string `json:"reason"`
}

// DecisionEvent is what the sniper decided for the input at InputSeq: its
// new state and what to send to the auction house, in one message, so that
// a decision is one write (fenced, see jetstream.Log.Commit). It is the unit
// of recovery, what the UI shows and what the outbound bridge sends. Type
// names what it sends: TypeJoin, TypeBid, or TypeState for nothing.
type DecisionEvent struct {
	Type string `json:"type"`
	auction.Snapshot
	InputSeq uint64    `json:"input_seq"`
	Send     []Request `json:"send,omitempty"`
	// By names the instance that wrote the decision, when instances share
	// the log (see TypeClaim).
	By string `json:"by,omitempty"`
	// Followup marks a decision of a snipe group member that answers no
	// input of its own but another member's (the group handed it a slot,
	// or stopped it): its InputSeq is that of its previous decision.
	Followup bool `json:"followup,omitempty"`
	// From is the state before the input (empty: not started), so a
	// reader knows whether the decision changed the state.
	From auction.State `json:"from,omitempty"`
}

// Request is one message the sniper asks the outbound bridge to send.
type Request struct {
	Type  string `json:"type"` // TypeJoin or TypeBid
	Price int64  `json:"price,omitempty"`
}

// Body is the request as a SOL 1.1 message.
func (r Request) Body() (string, error) {
	switch r.Type {
	case TypeJoin:
		return EncodeJoin(), nil
	case TypeBid:
		if r.Price <= 0 {
			return "", fmt.Errorf("bid price %d is not positive", r.Price)
		}
		return EncodeBid(r.Price), nil
	}
	return "", fmt.Errorf("unknown request type %q", r.Type)
}

// NewStart and friends build payloads with their type field set.
func NewStart(item string, stopPrice int64) StartCommand {
	return StartCommand{Type: TypeStart, Item: item, StopPrice: stopPrice}
}

// NewStop builds a stop command.
func NewStop(item string) StopCommand { return StopCommand{Type: TypeStop, Item: item} }

// NewSetStopPrice builds a command changing the stop price.
func NewSetStopPrice(item string, stopPrice int64) SetStopPriceCommand {
	return SetStopPriceCommand{Type: TypeSet, Item: item, StopPrice: stopPrice}
}

// NewPrice builds a price event.
func NewPrice(item string, price, increment int64, bidder string, fromSniper bool) PriceEvent {
	return PriceEvent{Type: TypePrice, Item: item, CurrentPrice: price, Increment: increment, Bidder: bidder, FromSniper: fromSniper}
}

// NewClose builds a close event.
func NewClose(item string) CloseEvent { return CloseEvent{Type: TypeClose, Item: item} }

// NewMalformed builds a malformed-message event.
func NewMalformed(item, body, reason string) MalformedEvent {
	return MalformedEvent{Type: TypeMalformed, Item: item, Body: body, Reason: reason}
}

// NewDecision builds the decision event for state s and the outputs the
// core gave for the input at inputSeq.
func NewDecision(s auction.Snapshot, inputSeq uint64, outs []auction.Output) (DecisionEvent, error) {
	d := DecisionEvent{Type: TypeState, Snapshot: s, InputSeq: inputSeq}
	for _, o := range outs {
		switch o := o.(type) {
		case auction.Join:
			d.Send = append(d.Send, Request{Type: TypeJoin})
			d.Type = TypeJoin
		case auction.Bid:
			d.Send = append(d.Send, Request{Type: TypeBid, Price: o.Price})
			if d.Type != TypeJoin {
				d.Type = TypeBid
			}
		default:
			return DecisionEvent{}, fmt.Errorf("no request for output %T", o)
		}
	}
	return d, nil
}

// NewClaim builds the claim instance by writes on an auction whose last
// decision is last: the same state and input, and a JOIN to send again.
func NewClaim(last DecisionEvent, by string) DecisionEvent {
	return DecisionEvent{Type: TypeClaim, Snapshot: last.Snapshot, InputSeq: last.InputSeq, Send: []Request{{Type: TypeJoin}}, By: by}
}

// DecisionSubject is where a decision of type typ on item is stored.
func DecisionSubject(item, typ string) string { return Subject(item, KindDec, typ) }

// DecisionFilter matches every decision on item, or with item "*" every
// decision: the fence of an auction's decisions and the filter of their
// readers.
func DecisionFilter(item string) string { return Subject(item, KindDec, "*") }

// InputSubjects are the subjects a sniper decides on, for one item or, with
// item "*", for all.
func InputSubjects(item string) []string {
	return []string{
		SubjectPrefix + "." + item + "." + KindCmd + ".>",
		SubjectPrefix + "." + item + "." + KindIn + ".>",
	}
}

// DecodeInput turns a stored input (a cmd.* or in.* message) into the core's
// Input. The type comes from the payload's "type" field and must agree with
// the subject, so a mislabelled message is rejected rather than guessed at.
func DecodeInput(subject string, data []byte) (auction.Input, error) {
	_, kind, typ, err := ParseSubject(subject)
	if err != nil {
		return nil, err
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("decode %s: %w", subject, err)
	}
	if head.Type != typ {
		return nil, fmt.Errorf("decode %s: type %q does not match the subject", subject, head.Type)
	}
	switch kind + "." + typ {
	case KindCmd + "." + TypeStart:
		var c StartCommand
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("decode %s: %w", subject, err)
		}
		if c.StopPrice <= 0 {
			return nil, fmt.Errorf("decode %s: stop_price must be positive, got %d", subject, c.StopPrice)
		}
		if !auction.Strategy(c.Strategy).Valid() {
			return nil, fmt.Errorf("decode %s: unknown strategy %q", subject, c.Strategy)
		}
		if c.LeadMS < 0 {
			return nil, fmt.Errorf("decode %s: lead_ms must not be negative, got %d", subject, c.LeadMS)
		}
		if c.Group != "" {
			if err := ValidItem(c.Group); err != nil {
				return nil, fmt.Errorf("decode %s: group: %w", subject, err)
			}
			if c.Win < 1 {
				return nil, fmt.Errorf("decode %s: a group's win must be 1 or more, got %d", subject, c.Win)
			}
		}
		return auction.Start{StopPrice: c.StopPrice, Strategy: auction.Strategy(c.Strategy), LeadMS: c.LeadMS, Group: c.Group, Win: c.Win}, nil
	case KindCmd + "." + TypeStop:
		return auction.Stop{}, nil
	case KindCmd + "." + TypeSet:
		var c SetStopPriceCommand
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("decode %s: %w", subject, err)
		}
		if c.StopPrice <= 0 {
			return nil, fmt.Errorf("decode %s: stop_price must be positive, got %d", subject, c.StopPrice)
		}
		return auction.SetStopPrice{StopPrice: c.StopPrice}, nil
	case KindIn + "." + TypePrice:
		var p PriceEvent
		if err := json.Unmarshal(data, &p); err != nil {
			return nil, fmt.Errorf("decode %s: %w", subject, err)
		}
		return auction.Price{Current: p.CurrentPrice, Increment: p.Increment, Bidder: p.Bidder, FromSniper: p.FromSniper, CloseTime: p.CloseTime}, nil
	case KindIn + "." + TypeTimer:
		var e TimerEvent
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, fmt.Errorf("decode %s: %w", subject, err)
		}
		return auction.Timer{Due: e.Due, Fired: e.Fired}, nil
	case KindIn + "." + TypeClose:
		return auction.Close{}, nil
	case KindIn + "." + TypeMalformed:
		var m MalformedEvent
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("decode %s: %w", subject, err)
		}
		return auction.Malformed{Body: m.Body, Reason: m.Reason}, nil
	}
	return nil, fmt.Errorf("decode %s: not an input", subject)
}
