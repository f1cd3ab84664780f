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
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sniper/api"
	"sniper/internal/cliflags"
	"sniper/internal/clip"
	"sniper/messages"
)

const (
	// defaultAPI is where `sniper run` serves by default.
	defaultAPI = "http://127.0.0.1:8080"
	// requestTimeout bounds every request but the live stream.
	requestTimeout = 10 * time.Second
	// maxResponseBytes caps what the CLI reads of an answer.
	maxResponseBytes = 32 << 20
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

// verbEnv names the variables flags are read from where that is not
// SNIPER_<FLAG NAME>.
var verbEnv = map[string]string{"token": tokenEnv}

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
	cliflags.Print(w, v.fs, func(name string) string {
		if e, ok := verbEnv[name]; ok {
			return e
		}
		return envName(name)
	})
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
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if err := parseFlags(fs, nil); err != nil {
		return usageError{err.Error()}
	}
	for name, env := range verbEnv {
		if given[name] || fs.Lookup(name) == nil {
			continue
		}
		if val, ok := os.LookupEnv(env); ok {
			if err := fs.Set(name, val); err != nil {
				return usagef("%s=%q: %v", env, val, err)
			}
		}
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
func runVerb(v *verb, args []string, stdout, stderr io.Writer, body func(c *client) error) int {
	err := v.parse(args)
	if errors.Is(err, flag.ErrHelp) {
		v.usage(stdout)
		return 0
	}
	var c *client
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

// ---- the client ----

// client calls the API of one running sniper.
type client struct {
	base  string // without a trailing slash
	token string
	http  *http.Client // bounded requests
	live  *http.Client // the stream: no overall timeout
}

func newClient(base, token string) (*client, error) {
	base = strings.TrimSpace(base)
	if base != "" && !strings.Contains(base, "://") {
		base = "http://" + base // --api 127.0.0.1:8080
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--api must be an http:// or https:// URL, got %q", base)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = requestTimeout
	return &client{
		base:  strings.TrimRight(base, "/"),
		token: token,
		http:  &http.Client{Timeout: requestTimeout, Transport: tr},
		live:  &http.Client{Transport: tr},
	}, nil
}

// apiError is an answer other than 2xx.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func (c *client) newRequest(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "sniper-cli")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// do sends one request and returns the status and body of a 2xx answer;
// anything else is an error saying what went wrong in one line.
func (c *client) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return 0, nil, err
	}
	res, err := c.http.Do(req)
	if err != nil {
		return 0, nil, c.transportError(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the answer from %s: %w", c.base, c.transportError(err))
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return res.StatusCode, nil, answerError(res, data)
	}
	return res.StatusCode, data, nil
}

// getJSON GETs path into v.
func (c *client) getJSON(ctx context.Context, path string, v any) ([]byte, error) {
	_, data, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("%s answered GET %s with something unexpected: %v", c.base, path, err)
	}
	return data, nil
}

// transportError says why the sniper could not be talked to.
func (c *client) transportError(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach the sniper at %s (is 'sniper run' running?)", c.base)
	case errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("the sniper at %s did not answer within %s", c.base, requestTimeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("cannot reach the sniper at %s: %v", c.base, err)
}

// answerError turns a non-2xx answer into its {"error"} message.
func answerError(res *http.Response, data []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return &apiError{status: res.StatusCode, msg: e.Error}
	}
	msg := res.Status
	if s := strings.TrimSpace(string(data)); s != "" {
		msg += ": " + clip.String(s, 200)
	}
	return &apiError{status: res.StatusCode, msg: msg}
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(clean(s)), " ")
}

func requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, requestTimeout)
}

// command sends a join or a stop (what names it in errors) and decodes
// the sniper the API answers with; data is the raw answer, for --json.
func (c *client) command(ctx context.Context, method, path string, body []byte, what string) (status int, s api.View, data []byte, err error) {
	ctx, cancel := requestContext(ctx)
	defer cancel()
	status, data, err = c.do(ctx, method, path, body)
	if err != nil {
		return 0, s, nil, err
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return 0, s, nil, fmt.Errorf("%s answered the %s with something unexpected: %v", c.base, what, err)
	}
	return status, s, data, nil
}

// ---- the verbs ----

func cmdJoin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	v := newVerb("join", "join ITEM --stop-price N", `Joins the auction for ITEM: the sniper bids for you, each time someone
outbids you, up to N. Joining an item already joined changes nothing (the
first stop price stands) and says so.
`)
	stop := v.fs.Int64("stop-price", 0, "the most to bid, a positive integer (required)")
	return runVerb(v, args, stdout, stderr, func(c *client) error {
		if err := v.wantArgs("ITEM"); err != nil {
			return err
		}
		item := v.args[0]
		if err := itemArg(item); err != nil {
			return err
		}
		if !v.given("stop-price") {
			return usagef("--stop-price is required")
		}
		if *stop <= 0 {
			return usagef("--stop-price must be a positive integer, got %d", *stop)
		}
		body, _ := json.Marshal(map[string]any{"item": item, "stop_price": *stop})
		status, s, data, err := c.command(ctx, http.MethodPost, "/api/snipers", body, "join")
		if err != nil {
			return err
		}
		if v.flags.json {
			return writeRaw(stdout, data)
		}
		switch status {
		case http.StatusCreated:
			fmt.Fprintf(stdout, "joined %s: %s\n", clean(s.Item), describeView(s))
		case http.StatusAccepted:
			fmt.Fprintf(stdout, "join of %s accepted, stop price %d: in the log, not decided yet ('sniper list' shows it)\n", clean(item), *stop)
		default:
			fmt.Fprintf(stdout, "already joined %s: %s\n", clean(s.Item), describeView(s))
			if s.StopPrice != *stop {
				fmt.Fprintf(stdout, "(the stop price stays %d: a sniper's stop price is set once)\n", s.StopPrice)
			}
		}
		return nil
	})
}

func cmdList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	v := newVerb("list", "list", `Shows every sniper: its stop price, the auction's last price, the sniper's
last bid and its state (with the reason when it Failed).
`)
	return runVerb(v, args, stdout, stderr, func(c *client) error {
		if err := v.wantArgs(); err != nil {
			return err
		}
		ctx, cancel := requestContext(ctx)
		defer cancel()
		var list struct {
			Snipers []api.View `json:"snipers"`
		}
		data, err := c.getJSON(ctx, "/api/snipers", &list)
		if err != nil {
			return err
		}
		if v.flags.json {
			return writeRaw(stdout, data)
		}
		if len(list.Snipers) == 0 {
			fmt.Fprintln(stdout, "no snipers yet: join an auction with 'sniper join ITEM --stop-price N'")
			return nil
		}
		return writeTable(stdout, list.Snipers)
	})
}

func cmdStop(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	v := newVerb("stop", "stop ITEM", `Stops the sniper on ITEM: it bids no more. A sniper whose auction has
already ended stays as it is.
`)
	return runVerb(v, args, stdout, stderr, func(c *client) error {
		if err := v.wantArgs("ITEM"); err != nil {
			return err
		}
		item := v.args[0]
		if err := itemArg(item); err != nil {
			return err
		}
		status, s, data, err := c.command(ctx, http.MethodDelete, "/api/snipers/"+url.PathEscape(item), nil, "stop")
		if err != nil {
			return err
		}
		if v.flags.json {
			return writeRaw(stdout, data)
		}
		switch {
		case status == http.StatusAccepted:
			fmt.Fprintf(stdout, "stop of %s accepted: in the log, not decided yet (still %s)\n", clean(item), s.State)
		case s.State == "Stopped":
			fmt.Fprintf(stdout, "stopped %s: %s\n", clean(s.Item), describeView(s))
		default:
			fmt.Fprintf(stdout, "%s had already ended: %s\n", clean(s.Item), describeView(s))
		}
		return nil
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
	return runVerb(v, args, stdout, stderr, func(c *client) error {
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
		ctx, cancel := requestContext(ctx)
		defer cancel()
		var hist struct {
			Events []api.Event `json:"events"`
		}
		data, err := c.getJSON(ctx, "/api/snipers/"+url.PathEscape(item)+"/events", &hist)
		if err != nil {
			return err
		}
		events := hist.Events
		if !timeTravel {
			if v.flags.json {
				return writeRaw(stdout, data)
			}
			if !*noChart && len(events) > 0 {
				if err := renderChart(stdout, events, chartWidth); err != nil {
					return err
				}
				fmt.Fprintln(stdout)
			}
			return writeHistory(stdout, events)
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
		if err := writeHistory(stdout, upTo); err != nil {
			return err
		}
		fmt.Fprintln(stdout)
		if state == nil {
			fmt.Fprintf(stdout, "as of #%d: %s was not decided on yet\n", *at, clean(item))
		} else {
			fmt.Fprintf(stdout, "as of #%d: %s\n", *at, describeView(*state))
			fmt.Fprintf(stdout, "(its last decision up to #%d is #%d)\n", *at, stateSeq)
		}
		if later > 0 {
			fmt.Fprintf(stdout, "%d later event%s, up to #%d: 'sniper history %s' shows them\n", later, plural(later), last, clean(item))
		}
		return nil
	})
}

// stateAt is the state of the last decision among events, and its seq.
func stateAt(events []api.Event) (*api.View, uint64) {
	for i := len(events) - 1; i >= 0; i-- {
		e := events[i]
		if !isDecision(e) {
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

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
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

// formatInt shows 0 as "-": no price or bid yet.
func formatInt(n int64) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatInt(n, 10)
}
