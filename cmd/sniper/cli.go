package main

// The client verbs: join, list, stop, history and watch talk to a running
// `sniper run` over its JSON API.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"sniper/api"
	"sniper/api/client"
	"sniper/internal/clip"
	"sniper/messages"
)

const (
	// defaultAPI is where `sniper run` serves by default.
	defaultAPI = "http://127.0.0.1:8080"
	// tokenEnv is the environment variable --token falls back to, shared
	// with the server side.
	tokenEnv = "SNIPER_HTTP_TOKEN"
)

// usageError is a bad command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// clientFlags are the flags every client verb has.
type clientFlags struct {
	api   string
	token string
	json  bool
}

func (c *clientFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&c.api, "api", defaultAPI, "base `URL` of the running sniper's API")
	fs.StringVar(&c.token, "token", "", "send `TOKEN` as 'Authorization: Bearer TOKEN'")
	fs.BoolVar(&c.json, "json", false, "print JSON, for scripts, instead of a table")
}

// verb is what a client command needs to parse its command line.
type verb struct {
	name     string // "join"
	synopsis string // "ITEM --stop-price N"
	about    string // paragraphs after the synopsis
	args     []string
	fs       *flag.FlagSet
	flags    clientFlags
}

func newVerb(name, synopsis, about string) *verb {
	v := &verb{name: name, synopsis: synopsis, about: about}
	v.fs = flag.NewFlagSet("sniper "+name, flag.ContinueOnError)
	v.fs.SetOutput(io.Discard)
	v.flags.add(v.fs)
	return v
}

func (v *verb) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: sniper %s [flags]\n\n%s\nFlags (each also read from the environment, as shown; flags win):\n", v.synopsis, v.about)
	loader.PrintFlags(w, v.fs)
}

// parse parses the command line, flags before and after the positional
// arguments alike (`sniper join ITEM --stop-price N` and
// `sniper join --stop-price N ITEM`; after "--" everything is positional),
// then fills what was not given from the environment. It returns
// flag.ErrHelp for --help.
func (v *verb) parse(args []string) error {
	fs := v.fs
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageError{err.Error()}
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if _, err := loader.Fill(fs); err != nil {
		return usageError{err.Error()}
	}
	v.args = pos
	return nil
}

// given reports whether a flag was set, on the command line or from the
// environment.
func (v *verb) given(name string) bool {
	set := false
	v.fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// itemAndStopPrice checks the command line of a verb taking ITEM and a
// required --stop-price (join, set), and returns the item.
func (v *verb) itemAndStopPrice(stop int64) (string, error) {
	if err := v.wantArgs("ITEM"); err != nil {
		return "", err
	}
	item := v.args[0]
	if err := itemArg(item); err != nil {
		return "", err
	}
	if !v.given("stop-price") {
		return "", usagef("--stop-price is required")
	}
	if stop <= 0 {
		return "", usagef("--stop-price must be a positive integer, got %d", stop)
	}
	return item, nil
}

// wantArgs checks the number of positional arguments.
func (v *verb) wantArgs(names ...string) error {
	if len(v.args) < len(names) {
		return usagef("missing %s", strings.Join(names[len(v.args):], " and "))
	}
	if len(v.args) > len(names) {
		return usagef("unexpected argument %q", v.args[len(names)])
	}
	return nil
}

// item checks the item argument here, so a typo is a usage error and
// never a strange URL.
func itemArg(item string) error {
	if err := messages.ValidItem(item); err != nil {
		return usageError{err.Error()}
	}
	return nil
}

// runVerb parses args for v, runs body and turns its error into the one
// line and the exit status: 2 for usage, 1 for anything else.
func runVerb(v *verb, args []string, stdout, stderr io.Writer, body func(c *client.Client) error) int {
	err := v.parse(args)
	if errors.Is(err, flag.ErrHelp) {
		v.usage(stdout)
		return 0
	}
	var c *client.Client
	if err == nil {
		c, err = newClient(v.flags.api, v.flags.token)
	}
	if err == nil {
		err = body(c)
	}
	if err == nil {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "sniper %s: %s (see 'sniper %s --help')\n", v.name, oneLine(ue.msg), v.name)
		return 2
	}
	fmt.Fprintf(stderr, "sniper: %s\n", oneLine(err.Error()))
	return 1
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(clip.Printable(s)), " ")
}

// ---- the verbs ----

func cmdJoin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	v := newVerb("join", "join ITEM --stop-price N [--last-second LEAD]", `Joins the auction for ITEM: the sniper bids for you, each time someone
outbids you, up to N. With --last-second it holds its bid instead, and
bids once, LEAD before the close (where the auction house announces its
close, SOL's CloseTime extension), without driving the price up before.
Joining an item already joined changes nothing (the first stop price
stands) and says so.
`)
	stop := v.fs.Int64("stop-price", 0, "the most to bid, a positive integer (required)")
	lastSecond := v.fs.Duration("last-second", 0, "hold the bid until `LEAD` before the close (e.g. 2s), then bid once; at once where the auction house does not announce its close")
	return runVerb(v, args, stdout, stderr, func(c *client.Client) error {
		item, err := v.itemAndStopPrice(*stop)
		if err != nil {
			return err
		}
		var opts []client.JoinOption
		if v.given("last-second") {
			if *lastSecond < time.Millisecond {
				return usagef("--last-second must be a lead of 1ms or more, got %s", *lastSecond)
			}
			opts = append(opts, client.LastSecond(*lastSecond))
		}
		a, err := c.Join(ctx, item, *stop, opts...)
		if err != nil {
			return err
		}
		status, s, data := a.Status, a.Sniper, a.Raw
		if v.flags.json {
			return writeRaw(stdout, data)
		}
		switch status {
		case http.StatusCreated:
			fmt.Fprintf(stdout, "joined %s: %s\n", clip.Printable(s.Item), client.DescribeView(s))
		case http.StatusAccepted:
			fmt.Fprintf(stdout, "join of %s accepted, stop price %d: in the log, not decided yet ('sniper list' shows it)\n", clip.Printable(item), *stop)
		default:
			fmt.Fprintf(stdout, "already joined %s: %s\n", clip.Printable(s.Item), client.DescribeView(s))
			if s.StopPrice != *stop {
				fmt.Fprintf(stdout, "(the stop price stays %d: 'sniper set' changes it)\n", s.StopPrice)
			}
		}
		return nil
	})
}

func cmdList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	v := newVerb("list", "list", `Shows every sniper: its stop price, the auction's last price, the sniper's
last bid and its state (with the reason when it Failed).
`)
	return runVerb(v, args, stdout, stderr, func(c *client.Client) error {
		if err := v.wantArgs(); err != nil {
			return err
		}
		list, data, err := c.Snipers(ctx)
		if err != nil {
			return err
		}
		if v.flags.json {
			return writeRaw(stdout, data)
		}
		if len(list) == 0 {
			fmt.Fprintln(stdout, "no snipers yet: join an auction with 'sniper join ITEM --stop-price N'")
			return nil
		}
		return client.WriteTable(stdout, list)
	})
}

func cmdStop(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	v := newVerb("stop", "stop ITEM", `Stops the sniper on ITEM: it bids no more. A sniper whose auction has
already ended stays as it is.
`)
	return runVerb(v, args, stdout, stderr, func(c *client.Client) error {
		if err := v.wantArgs("ITEM"); err != nil {
			return err
		}
		item := v.args[0]
		if err := itemArg(item); err != nil {
			return err
		}
		a, err := c.Stop(ctx, item)
		if err != nil {
			return err
		}
		status, s, data := a.Status, a.Sniper, a.Raw
		if v.flags.json {
			return writeRaw(stdout, data)
		}
		switch {
		case status == http.StatusAccepted:
			fmt.Fprintf(stdout, "stop of %s accepted: in the log, not decided yet (still %s)\n", clip.Printable(item), s.State)
		case s.State == "Stopped":
			fmt.Fprintf(stdout, "stopped %s: %s\n", clip.Printable(s.Item), client.DescribeView(s))
		default:
			fmt.Fprintf(stdout, "%s had already ended: %s\n", clip.Printable(s.Item), client.DescribeView(s))
		}
		return nil
	})
}

func cmdSet(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	v := newVerb("set", "set ITEM --stop-price N", `Changes the most the sniper on ITEM bids to N. A Losing sniper bids at once
if the auction's last price plus its increment now fits under N; a stopped
one resumes bidding from the last price. N cannot go below a bid the
sniper has standing (a bid made cannot be taken back), and a sniper that
has Won, Lost or Failed cannot change: both are refused, saying why.
`)
	stop := v.fs.Int64("stop-price", 0, "the new most to bid, a positive integer (required)")
	return runVerb(v, args, stdout, stderr, func(c *client.Client) error {
		item, err := v.itemAndStopPrice(*stop)
		if err != nil {
			return err
		}
		a, err := c.SetStopPrice(ctx, item, *stop)
		if err != nil {
			return err
		}
		if v.flags.json {
			return writeRaw(stdout, a.Raw)
		}
		if a.Status == http.StatusAccepted {
			fmt.Fprintf(stdout, "stop price %d for %s accepted: in the log, not decided yet\n", *stop, clip.Printable(item))
			return nil
		}
		fmt.Fprintf(stdout, "%s: %s\n", clip.Printable(a.Sniper.Item), client.DescribeView(a.Sniper))
		return nil
	})
}

func cmdGroup(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	v := newVerb("group", "group GROUP --win N ITEM=STOP_PRICE...", `Joins several equal items as one snipe group that wins at most N of them
(default 1). At most N members bid at any time; the others follow their
prices (Waiting) and the cheapest takes over when a bidder is outbid
beyond its stop price; once N are won the others are stopped.
`)
	win := v.fs.Int("win", 1, "the most items of the group to win")
	return runVerb(v, args, stdout, stderr, func(c *client.Client) error {
		if len(v.args) < 2 {
			return usagef("want GROUP and at least one ITEM=STOP_PRICE")
		}
		name := v.args[0]
		if err := itemArg(name); err != nil {
			return err
		}
		var items []client.GroupItem
		for _, arg := range v.args[1:] {
			item, price, ok := strings.Cut(arg, "=")
			stop, err := strconv.ParseInt(price, 10, 64)
			if !ok || err != nil || stop <= 0 {
				return usagef("%q: want ITEM=STOP_PRICE, a positive integer", arg)
			}
			if err := itemArg(item); err != nil {
				return err
			}
			items = append(items, client.GroupItem{Item: item, StopPrice: stop})
		}
		if *win < 1 || *win > len(items) {
			return usagef("--win must be 1 to the number of items (%d), got %d", len(items), *win)
		}
		status, g, data, err := c.JoinGroup(ctx, name, *win, items)
		if err != nil {
			return err
		}
		if v.flags.json {
			return writeRaw(stdout, data)
		}
		verb := "joined"
		switch status {
		case http.StatusOK:
			verb = "already joined"
		case http.StatusAccepted:
			verb = "accepted (in the log, not all decided yet)"
		}
		fmt.Fprintf(stdout, "group %s %s, winning at most %d:\n", clip.Printable(g.Group), verb, g.Win)
		return client.WriteTable(stdout, g.Snipers)
	})
}

func cmdHistory(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	v := newVerb("history", "history ITEM [--at SEQ] [--no-chart]", `Shows ITEM's history from the log, one event a line: the local time, the
event's sequence number in the log, and what happened. Above them, unless
--no-chart, a small chart of the auction: the price in the order of the
log, the sniper's bids marked, the stop price as a line, and the outcome.

With --at SEQ it travels back in time: the sniper's state as it was after
event SEQ (its last decision up to there), and the events that led to it.
`)
	at := v.fs.Uint64("at", 0, "show the state as of the event numbered `SEQ`")
	noChart := v.fs.Bool("no-chart", false, "leave out the chart of the auction above the events")
	return runVerb(v, args, stdout, stderr, func(c *client.Client) error {
		if err := v.wantArgs("ITEM"); err != nil {
			return err
		}
		item := v.args[0]
		if err := itemArg(item); err != nil {
			return err
		}
		timeTravel := v.given("at")
		if timeTravel && *at == 0 {
			return usagef("--at must be an event's sequence number, 1 or more")
		}
		events, data, err := c.History(ctx, item)
		if err != nil {
			return err
		}
		if !timeTravel {
			if v.flags.json {
				return writeRaw(stdout, data)
			}
			if !*noChart && len(events) > 0 {
				if err := client.WriteChart(stdout, events, client.ChartWidth); err != nil {
					return err
				}
				fmt.Fprintln(stdout)
			}
			return client.WriteHistory(stdout, events)
		}
		if len(events) == 0 {
			return fmt.Errorf("no events for %s", item)
		}
		first, last := events[0].Seq, events[len(events)-1].Seq
		if *at > last {
			return fmt.Errorf("%s has no event #%d: its history ends at #%d", item, *at, last)
		}
		if *at < first {
			return fmt.Errorf("%s has no event #%d: its history begins at #%d", item, *at, first)
		}
		n := 0
		for n < len(events) && events[n].Seq <= *at {
			n++
		}
		upTo, later := events[:n], len(events)-n
		state, stateSeq := stateAt(upTo)
		if v.flags.json {
			return writeJSONLine(stdout, struct {
				At       uint64      `json:"at"`
				State    *api.View   `json:"state"` // null: not decided on yet
				StateSeq uint64      `json:"state_seq,omitempty"`
				Events   []api.Event `json:"events"`
			}{*at, state, stateSeq, upTo})
		}
		if err := client.WriteHistory(stdout, upTo); err != nil {
			return err
		}
		fmt.Fprintln(stdout)
		if state == nil {
			fmt.Fprintf(stdout, "as of #%d: %s was not decided on yet\n", *at, clip.Printable(item))
		} else {
			fmt.Fprintf(stdout, "as of #%d: %s\n", *at, client.DescribeView(*state))
			fmt.Fprintf(stdout, "(its last decision up to #%d is #%d)\n", *at, stateSeq)
		}
		if later > 0 {
			events := "events"
			if later == 1 {
				events = "event"
			}
			fmt.Fprintf(stdout, "%d later %s, up to #%d: 'sniper history %s' shows them\n", later, events, last, clip.Printable(item))
		}
		return nil
	})
}

// stateAt is the state of the last decision among events, and its seq.
func stateAt(events []api.Event) (*api.View, uint64) {
	for i := len(events) - 1; i >= 0; i-- {
		e := events[i]
		if !client.IsDecision(e) {
			continue
		}
		var s api.View
		if err := json.Unmarshal(e.Data, &s); err != nil {
			continue
		}
		return &s, e.Seq
	}
	return nil, 0
}

// writeRaw prints an API answer as it came, on its own line.
func writeRaw(w io.Writer, data []byte) error {
	data = bytes.TrimRight(data, "\n")
	_, err := fmt.Fprintf(w, "%s\n", data)
	return err
}

func writeJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// newClient is the API client of a verb; a bad --api is a usage error.
func newClient(base, token string) (*client.Client, error) {
	c, err := client.New(base, token)
	if errors.Is(err, client.ErrBadURL) {
		return nil, usagef("--api must be an http:// or https:// URL, got %q", strings.TrimSpace(base))
	}
	if err != nil {
		return nil, err
	}
	c.UserAgent = "sniper-cli"
	return c, nil
}
