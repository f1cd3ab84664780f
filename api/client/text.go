package client

// How a person is shown snipers and events: the CLI's tables and lines.

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"sniper/api"
	"sniper/internal/clip"
	"sniper/messages"
)

// WriteTable prints snipers as an aligned table.
func WriteTable(w io.Writer, snipers []api.View) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ITEM\tSTOP\tLAST-PRICE\tLAST-BID\tSTATE")
	for _, s := range snipers {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", clip.Printable(s.Item), s.StopPrice, formatInt(s.LastPrice), formatInt(s.LastBid), StateText(s))
	}
	return tw.Flush()
}

// StateText is the state, with the reason of a Failed sniper.
func StateText(s api.View) string {
	st := clip.Printable(string(s.State))
	if s.Reason != "" {
		st += ": " + clip.Printable(s.Reason)
	}
	if s.Group != "" {
		st += " [group " + clip.Printable(s.Group) + "]"
	}
	return st
}

// DescribeView is one sniper on one line.
func DescribeView(s api.View) string {
	return fmt.Sprintf("%s, stop price %d, last price %s, last bid %s", StateText(s), s.StopPrice, formatInt(s.LastPrice), formatInt(s.LastBid))
}

// WriteHistory prints events one a line: local time, seq, description.
func WriteHistory(w io.Writer, events []api.Event) error {
	width := 0
	for _, e := range events {
		width = max(width, len(strconv.FormatUint(e.Seq, 10))+1)
	}
	for _, e := range events {
		if _, err := fmt.Fprintf(w, "%s  %*s  %s\n", EventTime(e.Time), width, "#"+strconv.FormatUint(e.Seq, 10), DescribeEvent(e)); err != nil {
			return err
		}
	}
	return nil
}

// EventTime shows an RFC 3339 time as local HH:MM:SS.mmm.
func EventTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return clip.Printable(s)
	}
	return t.Local().Format("15:04:05.000")
}

// DescribeEvent says what one event of the log means.
func DescribeEvent(e api.Event) string {
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
		Strategy     string `json:"strategy"`
		LeadMS       int64  `json:"lead_ms"`
		CloseTime    int64  `json:"close_time"`
		Due          int64  `json:"due"`
		Fired        int64  `json:"fired"`
		EventSeq     uint64 `json:"event_seq"`
		Attempts     int    `json:"attempts"`
	}
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return fmt.Sprintf("%s (unreadable: %s)", clip.Printable(e.Type), clip.Printable(clip.String(string(e.Data), 200)))
	}
	switch e.Type {
	case messages.TypeStart:
		if d.Strategy == "last-second" {
			return fmt.Sprintf("joined, stop price %d, bidding %s before the close", d.StopPrice, time.Duration(d.LeadMS)*time.Millisecond)
		}
		return fmt.Sprintf("joined, stop price %d", d.StopPrice)
	case messages.TypeStop:
		return "asked to stop"
	case messages.TypeSet:
		return fmt.Sprintf("asked for a stop price of %d", d.StopPrice)
	case messages.TypeTimer:
		s := "the last-second timer went off"
		if late := time.Duration(d.Fired-d.Due) * time.Millisecond; late >= time.Second {
			s += fmt.Sprintf(", late by %s (no instance was running when it was due at %s)", late.Round(time.Millisecond), time.UnixMilli(d.Due).Local().Format("15:04:05.000"))
		}
		return s
	case messages.TypePrice:
		s := fmt.Sprintf("price %d (+%d) by %s", d.CurrentPrice, d.Increment, clip.Printable(d.Bidder))
		if d.FromSniper {
			s += " (the sniper)"
		}
		if d.CloseTime > 0 {
			s += ", closing at " + time.UnixMilli(d.CloseTime).Local().Format("15:04:05.000")
		}
		return s
	case messages.TypeClose:
		return "auction closed"
	case messages.TypeMalformed:
		return fmt.Sprintf("unreadable message from the auction house: %s (%s)", strconv.Quote(d.Body), clip.Printable(d.Reason))
	case messages.TypeSent:
		return "sent to the auction house: " + clip.Printable(strings.TrimSpace(d.Body))
	case messages.TypeUndelivered:
		return fmt.Sprintf("the auction house never took: %s (%s)", clip.Printable(strings.TrimSpace(d.Body)), clip.Printable(d.Reason))
	case messages.TypeNotified:
		if d.Attempts > 1 {
			return fmt.Sprintf("notified event %d (after %d attempts)", d.EventSeq, d.Attempts)
		}
		return fmt.Sprintf("notified event %d", d.EventSeq)
	case messages.TypeNotifyFailed:
		return fmt.Sprintf("notifying event %d failed, retrying: %s", d.EventSeq, clip.Printable(d.Reason))
	}
	if IsDecision(e) {
		var s api.View
		_ = json.Unmarshal(e.Data, &s)
		now := fmt.Sprintf("now %s (last price %s, last bid %s)", StateText(s), formatInt(s.LastPrice), formatInt(s.LastBid))
		switch e.Type {
		case messages.TypeJoin:
			return "decided to join; " + now
		case messages.TypeBid:
			return fmt.Sprintf("decided to bid %d; %s", s.LastBid, now)
		case messages.TypeClaim:
			return fmt.Sprintf("instance %s took over and joined again; %s", clip.Printable(d.By), now)
		}
		return now
	}
	return fmt.Sprintf("%s: %s", clip.Printable(e.Type), clip.Printable(clip.String(string(e.Data), 200)))
}

// IsDecision reports whether e is one of the sniper's decisions
// (dec.join, dec.bid, dec.state), which carry its state.
func IsDecision(e api.Event) bool {
	return strings.HasPrefix(e.Subject, messages.KindDec+".")
}

// formatInt shows 0 as "-": no price or bid yet.
func formatInt(n int64) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatInt(n, 10)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
