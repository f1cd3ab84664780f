package main

// How the client verbs show snipers and events to a person.

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"sniper/api"
	"sniper/internal/clip"
	"sniper/messages"
)

// writeTable prints snipers as an aligned table.
func writeTable(w io.Writer, snipers []api.View) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ITEM\tSTOP\tLAST-PRICE\tLAST-BID\tSTATE")
	for _, s := range snipers {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", clean(s.Item), s.StopPrice, formatInt(s.LastPrice), formatInt(s.LastBid), stateText(s))
	}
	return tw.Flush()
}

// stateText is the state, with the reason of a Failed sniper.
func stateText(s api.View) string {
	st := clean(string(s.State))
	if s.Reason != "" {
		st += ": " + clean(s.Reason)
	}
	return st
}

// describeView is one sniper on one line.
func describeView(s api.View) string {
	return fmt.Sprintf("%s, stop price %d, last price %s, last bid %s", stateText(s), s.StopPrice, formatInt(s.LastPrice), formatInt(s.LastBid))
}

// writeHistory prints events one a line: local time, seq, description.
func writeHistory(w io.Writer, events []api.Event) error {
	width := 0
	for _, e := range events {
		width = max(width, len(strconv.FormatUint(e.Seq, 10))+1)
	}
	for _, e := range events {
		if _, err := fmt.Fprintf(w, "%s  %*s  %s\n", eventTime(e.Time), width, "#"+strconv.FormatUint(e.Seq, 10), describeEvent(e)); err != nil {
			return err
		}
	}
	return nil
}

// eventTime shows an RFC 3339 time as local HH:MM:SS.mmm.
func eventTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return clean(s)
	}
	return t.Local().Format("15:04:05.000")
}

// describeEvent says what one event of the log means.
func describeEvent(e api.Event) string {
	var d struct {
		StopPrice    int64  `json:"stop_price"`
		CurrentPrice int64  `json:"current_price"`
		Increment    int64  `json:"increment"`
		Bidder       string `json:"bidder"`
		FromSniper   bool   `json:"from_sniper"`
		Body         string `json:"body"`
		Reason       string `json:"reason"`
		Price        int64  `json:"price"`
		OutSeq       uint64 `json:"out_seq"`
		By           string `json:"by"`
	}
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return fmt.Sprintf("%s (unreadable: %s)", clean(e.Type), clean(clip.String(string(e.Data), 200)))
	}
	switch e.Type {
	case messages.TypeStart:
		return fmt.Sprintf("joined, stop price %d", d.StopPrice)
	case messages.TypeStop:
		return "asked to stop"
	case messages.TypePrice:
		s := fmt.Sprintf("price %d (+%d) by %s", d.CurrentPrice, d.Increment, clean(d.Bidder))
		if d.FromSniper {
			s += " (the sniper)"
		}
		return s
	case messages.TypeClose:
		return "auction closed"
	case messages.TypeMalformed:
		return fmt.Sprintf("unreadable message from the auction house: %s (%s)", strconv.Quote(d.Body), clean(d.Reason))
	case messages.TypeSent:
		return "sent to the auction house: " + clean(strings.TrimSpace(d.Body))
	case messages.TypeUndelivered:
		return fmt.Sprintf("the auction house never took: %s (%s)", clean(strings.TrimSpace(d.Body)), clean(d.Reason))
	}
	if isDecision(e) {
		var s api.View
		_ = json.Unmarshal(e.Data, &s)
		now := fmt.Sprintf("now %s (last price %s, last bid %s)", stateText(s), formatInt(s.LastPrice), formatInt(s.LastBid))
		switch e.Type {
		case messages.TypeJoin:
			return "decided to join; " + now
		case messages.TypeBid:
			return fmt.Sprintf("decided to bid %d; %s", s.LastBid, now)
		case messages.TypeClaim:
			return fmt.Sprintf("instance %s took over and joined again; %s", clean(d.By), now)
		}
		return now
	}
	return fmt.Sprintf("%s: %s", clean(e.Type), clean(clip.String(string(e.Data), 200)))
}

// isDecision reports whether e is one of the sniper's decisions
// (dec.join, dec.bid, dec.state), which carry its state.
func isDecision(e api.Event) bool {
	return strings.HasPrefix(e.Subject, messages.KindDec+".")
}

// clean escapes what must not reach a terminal as is: control characters
// (an escape sequence in a bidder's name, a newline in a message body).
func clean(s string) string {
	ok := true
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsPrint(r) || r == ' ' {
			b.WriteRune(r)
			continue
		}
		q := strconv.QuoteRune(r) // '\x1b'
		b.WriteString(q[1 : len(q)-1])
	}
	return b.String()
}
