package main

// sniper watch: the live table, from the API's Server-Sent Events stream.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"sniper/api"
)

const (
	// The stream sends a keepalive every 15 s: three missed and the
	// connection is taken for dead.
	streamIdleTimeout = 45 * time.Second
	minBackoff        = 100 * time.Millisecond
	maxBackoff        = 5 * time.Second
	// maxEventBytes caps one line of the stream.
	maxEventBytes = 1 << 20
	clearScreen   = "\x1b[H\x1b[2J"
)

func cmdWatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	v := newVerb("watch", "watch", `Shows every sniper live, as the sniper decides, until Ctrl-C. On a terminal
the table is redrawn in place; otherwise (a pipe, a file) each change is
one line. With --json each changed snapshot is one JSON line, as the API
shows a sniper. The auction-house connection is shown when the service
reports it. When the stream drops, watch reconnects with backoff.
`)
	return runVerb(v, args, stdout, stderr, func(c *client) error {
		if err := v.wantArgs(); err != nil {
			return err
		}
		w := &watcher{
			c: c, out: stdout, errOut: stderr, json: v.flags.json,
			tty:     !v.flags.json && isTerminal(stdout),
			snipers: map[string]api.View{},
		}
		return w.run(ctx)
	})
}

// isTerminal reports whether w is a terminal (golang.org/x/term is only an
// indirect dependency, so this is the portable check of the standard
// library).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// watcher keeps the latest snapshot of every sniper and shows changes.
type watcher struct {
	c           *client
	out, errOut io.Writer
	json, tty   bool

	snipers map[string]api.View
	status  string // summary of the last status event, "" before one
	notice  string // connection trouble, for the terminal view
	dropped bool   // the stream was lost and not yet back
	lastErr string // why, as last reported
	dirty   bool   // the terminal view needs a redraw
}

// run streams until ctx ends, reconnecting with backoff. The first
// connection failing is an error: there is nothing to watch.
func (w *watcher) run(ctx context.Context) error {
	backoff := minBackoff
	everConnected := false
	for {
		connected, err := w.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if connected {
			everConnected, backoff = true, minBackoff
		}
		var ae *apiError
		if !everConnected || (errors.As(err, &ae) && ae.status < 500) {
			return err
		}
		w.lost(err, backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// stream reads one connection to /api/stream until it ends; connected
// says whether the stream was opened at all.
func (w *watcher) stream(parent context.Context) (connected bool, err error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	req, err := w.c.newRequest(ctx, http.MethodGet, "/api/stream", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	res, err := w.c.live.Do(req)
	if err != nil {
		return false, w.c.transportError(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		return false, answerError(res, data)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return false, fmt.Errorf("%s/api/stream is not an event stream (Content-Type %q)", w.c.base, ct)
	}
	var idled atomic.Bool
	idle := time.AfterFunc(streamIdleTimeout, func() { idled.Store(true); cancel() })
	defer idle.Stop()
	w.connected()

	br := bufio.NewReaderSize(res.Body, 64<<10)
	var event string
	var data bytes.Buffer
	for {
		line, err := readLine(br)
		if err != nil {
			switch {
			case idled.Load():
				return true, fmt.Errorf("nothing from %s for %s", w.c.base, streamIdleTimeout)
			case errors.Is(err, io.EOF):
				return true, fmt.Errorf("the sniper at %s ended the stream", w.c.base)
			}
			return true, w.c.transportError(err)
		}
		idle.Reset(streamIdleTimeout)
		switch {
		case line == "":
			if data.Len() > 0 || event != "" {
				w.dispatch(event, data.Bytes())
			}
			event = ""
			data.Reset()
			if br.Buffered() == 0 {
				w.redraw() // a burst (the state at connect) is drawn once
			}
		case line[0] == ':': // a comment: keepalive
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				event = value
			case "data":
				if data.Len() > 0 {
					data.WriteByte('\n')
				}
				data.WriteString(value)
			}
			// retry and id: the CLI has its own backoff and the stream
			// resends the whole state on reconnect.
		}
	}
}

// readLine reads one line without its \n or \r\n, up to maxEventBytes.
func readLine(br *bufio.Reader) (string, error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > maxEventBytes {
			return "", fmt.Errorf("a line of the stream is over %d bytes", maxEventBytes)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return "", err
		}
		return strings.TrimSuffix(strings.TrimSuffix(string(buf), "\n"), "\r"), nil
	}
}

func (w *watcher) connected() {
	if w.dropped {
		w.dropped, w.lastErr, w.notice = false, "", ""
		w.dirty = true
		if !w.tty {
			fmt.Fprintf(w.errOut, "sniper: watching %s again\n", w.c.base)
		}
	}
}

// lost reports a dropped stream: on a terminal in the view, otherwise on
// stderr, once for each new reason (not on every retry).
func (w *watcher) lost(err error, retry time.Duration) {
	w.dropped = true
	why := oneLine(err.Error())
	if !w.tty {
		if why != w.lastErr {
			fmt.Fprintf(w.errOut, "sniper: lost the stream: %s; reconnecting\n", why)
		}
		w.lastErr = why
		return
	}
	w.notice = fmt.Sprintf("lost the stream: %s; reconnecting in %s", why, retry)
	w.dirty = true
	w.redraw()
}

// dispatch takes one event of the stream.
func (w *watcher) dispatch(event string, data []byte) {
	switch event {
	case "snapshot":
		var s api.View
		if err := json.Unmarshal(data, &s); err != nil || s.Item == "" {
			return
		}
		if old, ok := w.snipers[s.Item]; ok && old == s {
			return // a reconnect resends what is known
		}
		w.snipers[s.Item] = s
		switch {
		case w.json:
			var line bytes.Buffer
			if json.Compact(&line, data) == nil {
				line.WriteByte('\n')
				_, _ = w.out.Write(line.Bytes())
			}
		case w.tty:
			w.dirty = true
		default:
			fmt.Fprintf(w.out, "%s  %s  %s\n", now(), clean(s.Item), describeView(s))
		}
	case "status":
		summary := statusSummary(data)
		if summary == "" || summary == w.status {
			return
		}
		w.status = summary
		switch {
		case w.json:
		case w.tty:
			w.dirty = true
		default:
			fmt.Fprintf(w.out, "%s  %s\n", now(), summary)
		}
	}
}

// redraw draws the terminal view if anything changed.
func (w *watcher) redraw() {
	if !w.tty || !w.dirty {
		return
	}
	w.dirty = false
	var b bytes.Buffer
	b.WriteString(clearScreen)
	fmt.Fprintf(&b, "sniper watch  %s  %s  (Ctrl-C to quit)\n", w.c.base, time.Now().Format("15:04:05"))
	if w.status != "" {
		fmt.Fprintln(&b, w.status)
	}
	if w.notice != "" {
		fmt.Fprintln(&b, w.notice)
	}
	fmt.Fprintln(&b)
	if len(w.snipers) == 0 {
		fmt.Fprintln(&b, "no snipers yet: join an auction with 'sniper join ITEM --stop-price N'")
	} else {
		items := make([]string, 0, len(w.snipers))
		for item := range w.snipers {
			items = append(items, item)
		}
		slices.Sort(items)
		list := make([]api.View, len(items))
		for i, item := range items {
			list[i] = w.snipers[item]
		}
		_ = writeTable(&b, list)
	}
	_, _ = w.out.Write(b.Bytes())
}

// statusSummary says in one line what a status event reports:
// {"ready", "checks": [{"name", "ok", "error"}...]}.
func statusSummary(data []byte) string {
	var st struct {
		Ready  bool `json:"ready"`
		Checks []struct {
			Name  string `json:"name"`
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		} `json:"checks"`
	}
	if json.Unmarshal(data, &st) != nil {
		return ""
	}
	house := "auction house: not configured"
	var bad []string
	for _, c := range st.Checks {
		switch {
		case c.Name == "xmpp" && c.OK:
			house = "auction house: connected"
		case c.Name == "xmpp":
			house = "auction house: disconnected"
		case !c.OK && c.Error != "":
			bad = append(bad, c.Error)
		case !c.OK:
			bad = append(bad, c.Name+" failing")
		}
	}
	log := "event log: ok"
	if len(bad) > 0 {
		log = "event log: " + strings.Join(bad, "; ")
	}
	return clean(house + "; " + log)
}

func now() string { return time.Now().Format("15:04:05.000") }
