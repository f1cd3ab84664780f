package main

// sniper watch: the live table, from the API's Server-Sent Events stream.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"sniper/api"
	"sniper/api/client"
	"sniper/internal/clip"
)

const clearScreen = "\x1b[H\x1b[2J"

func cmdWatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	v := newVerb("watch", "watch", `Shows every sniper live, as the sniper decides, until Ctrl-C. On a terminal
the table is redrawn in place; otherwise (a pipe, a file) each change is
one line. With --json each changed snapshot is one JSON line, as the API
shows a sniper. The auction-house connection is shown when the service
reports it. When the stream drops, watch reconnects with backoff.
`)
	return runVerb(v, args, stdout, stderr, func(c *client.Client) error {
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
	c           *client.Client
	out, errOut io.Writer
	json, tty   bool

	snipers map[string]api.View
	status  string // summary of the last status event, "" before one
	notice  string // connection trouble, for the terminal view
	dropped bool   // the stream was lost and not yet back
	lastErr string // why, as last reported
	dirty   bool   // the terminal view needs a redraw
}

// run follows the stream until ctx ends (client.Watch).
func (w *watcher) run(ctx context.Context) error {
	return w.c.Watch(ctx, client.Watch{Opened: w.connected, Event: w.dispatch, Caught: w.redraw, Lost: w.lost})
}

func (w *watcher) connected() {
	if w.dropped {
		w.dropped, w.lastErr, w.notice = false, "", ""
		w.dirty = true
		if !w.tty {
			fmt.Fprintf(w.errOut, "sniper: watching %s again\n", w.c.Base())
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
			fmt.Fprintf(w.out, "%s  %s  %s\n", now(), clip.Printable(s.Item), client.DescribeView(s))
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
	fmt.Fprintf(&b, "sniper watch  %s  %s  (Ctrl-C to quit)\n", w.c.Base(), time.Now().Format("15:04:05"))
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
		_ = client.WriteTable(&b, list)
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
	return clip.Printable(house + "; " + log)
}

func now() string { return time.Now().Format("15:04:05.000") }
