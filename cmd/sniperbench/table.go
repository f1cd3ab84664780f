package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// sample is one run's figures for a row: "v" is the row's value (a rate,
// a time, a count, per the row's unit), "p50"/"p99"/"max" latencies in
// seconds; anything else feeds the row's note.
type sample map[string]float64

// row is one line of the table, aggregated over runs: each figure is the
// median of the runs that produced it.
type row struct {
	key   string
	name  string
	fsync string // "always", "1s", or "" when it does not concern the log
	unit  string // of "v": "/s", "ms", "s", "KiB", "%", ""
	// base is the key of the baseline row this one is compared with, and
	// cmp what is compared: "rate" (v/v), "lat" (p50 and p99), "v".
	base, cmp, baseName string
	// note renders the note from the row's medians (may be nil).
	note func(r *row, res *results) string

	samples []sample
	fails   []string
	skipped string // why later runs did not repeat it
	text    string // shown as the result when set (a file, say)
	extra   string // appended to the note
}

// results holds every row in the order first declared.
type results struct {
	mu    sync.Mutex
	order []string
	rows  map[string]*row
}

func newResults() *results { return &results{rows: map[string]*row{}} }

// declare adds a row (once) and returns it.
func (res *results) declare(r row) *row {
	res.mu.Lock()
	defer res.mu.Unlock()
	if old, ok := res.rows[r.key]; ok {
		return old
	}
	rr := r
	res.rows[r.key] = &rr
	res.order = append(res.order, r.key)
	return &rr
}

func (res *results) get(key string) *row {
	res.mu.Lock()
	defer res.mu.Unlock()
	return res.rows[key]
}

func (res *results) add(key string, s sample) {
	res.mu.Lock()
	defer res.mu.Unlock()
	res.rows[key].samples = append(res.rows[key].samples, s)
}

func (res *results) fail(key string, err error) {
	res.mu.Lock()
	defer res.mu.Unlock()
	msg := strings.Join(strings.Fields(strings.SplitN(err.Error(), "\n", 2)[0]), " ")
	if len(msg) > 160 {
		msg = msg[:157] + "..."
	}
	res.rows[key].fails = append(res.rows[key].fails, msg)
}

// failed reports whether the row failed in an earlier run: a later run
// does not repeat a stage that cannot pass, to keep the run short.
func (res *results) failed(key string) bool {
	res.mu.Lock()
	defer res.mu.Unlock()
	r := res.rows[key]
	return r != nil && len(r.fails) > 0
}

// setText gives a row a textual result and note (the profile's path and
// its top costs).
func (res *results) setText(key, text, extra string) {
	res.mu.Lock()
	defer res.mu.Unlock()
	res.rows[key].text, res.rows[key].extra = text, extra
}

func (res *results) skip(key, why string) {
	res.mu.Lock()
	defer res.mu.Unlock()
	res.rows[key].skipped = why
}

// med is the median over runs of figure k, if any run produced it.
func (r *row) med(k string) (float64, bool) {
	var v []float64
	for _, s := range r.samples {
		if x, ok := s[k]; ok && !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

func (r *row) mustMed(k string) float64 {
	v, _ := r.med(k)
	return v
}

// header says where and how the table was measured.
type header struct {
	machine, versions, sync, run string
}

// markdown renders the table, with the header lines above it.
func (res *results) markdown(h header) string {
	var b strings.Builder
	fmt.Fprintf(&b, "- machine: %s\n- versions: %s\n- sync policy: %s\n- run: %s\n\n", h.machine, h.versions, h.sync, h.run)
	b.WriteString("| measurement | fsync | result | p50 | p99 | max | vs baseline | runs | note |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	res.mu.Lock()
	keys := slices.Clone(res.order)
	res.mu.Unlock()
	for _, k := range keys {
		r := res.get(k)
		fs := r.fsync
		if fs == "" {
			fs = "-"
		}
		result, p50, p99, mx, ratio := "", "", "", "", ""
		var notes []string
		if len(r.samples) > 0 {
			if v, ok := r.med("v"); ok {
				result = formatValue(v, r.unit)
			}
			p50, p99, mx = latCell(r, "p50"), latCell(r, "p99"), latCell(r, "max")
			ratio = res.ratio(r)
			if r.note != nil {
				if n := r.note(r, res); n != "" {
					notes = append(notes, n)
				}
			}
		}
		if r.text != "" {
			result = r.text
		}
		if r.extra != "" {
			notes = append(notes, r.extra)
		}
		switch {
		case len(r.fails) > 0 && len(r.samples) == 0:
			result = "failed: " + r.fails[0]
		case len(r.fails) > 0 && len(r.samples) > 0 && result != "":
			// Measured, but the stage did not reach its goal.
			notes = append(notes, "failed: "+r.fails[0])
		case len(r.fails) > 0:
			result = "failed: " + r.fails[0]
		case len(r.samples) == 0 && r.skipped == "" && r.text == "":
			result = "not run"
		}
		if r.skipped != "" {
			notes = append(notes, r.skipped)
		}
		runs := fmt.Sprint(len(r.samples))
		if nf := len(r.fails); nf > 0 {
			runs = fmt.Sprintf("%d (+%d failed)", len(r.samples), nf)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.name, fs, cell(result), p50, p99, mx, ratio, runs, cell(strings.Join(notes, "; ")))
	}
	return b.String()
}

// ratio compares the row with its baseline of the same run set.
func (res *results) ratio(r *row) string {
	if r.base == "" {
		if r.cmp == "baseline" {
			return "baseline"
		}
		return ""
	}
	b := res.get(r.base)
	if b == nil || len(b.samples) == 0 {
		return ""
	}
	switch r.cmp {
	case "rate", "v":
		v, ok1 := r.med("v")
		bv, ok2 := b.med("v")
		if ok1 && ok2 && bv > 0 {
			return fmt.Sprintf("%sx %s", ratioNum(v/bv), r.baseName)
		}
	case "lat":
		var parts []string
		for _, k := range []string{"p50", "p99"} {
			v, ok1 := r.med(k)
			bv, ok2 := b.med(k)
			if ok1 && ok2 && bv > 0 {
				parts = append(parts, fmt.Sprintf("%s %sx", k, ratioNum(v/bv)))
			}
		}
		if len(parts) > 0 {
			return strings.Join(parts, ", ") + " " + r.baseName
		}
	}
	return ""
}

func ratioNum(x float64) string {
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	case x >= 0.1:
		return fmt.Sprintf("%.2f", x)
	default:
		return fmt.Sprintf("%.4f", x)
	}
}

func latCell(r *row, k string) string {
	v, ok := r.med(k)
	if !ok {
		return ""
	}
	return formatDur(time.Duration(v * float64(time.Second)))
}

func formatDur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms >= 1000:
		return fmt.Sprintf("%.2f s", ms/1000)
	case ms >= 10:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.2f ms", ms)
	}
}

func formatValue(v float64, unit string) string {
	switch unit {
	case "ms":
		return fmt.Sprintf("%.3g ms", v)
	case "s":
		return fmt.Sprintf("%.2f s", v)
	case "%":
		return fmt.Sprintf("%.1f%% of a core", v)
	case "KiB":
		return fmt.Sprintf("%.1f KiB", v)
	case "":
		return thousands(v)
	default:
		return thousands(v) + " " + unit
	}
}

// thousands formats a count or rate with separators: 12,345.
func thousands(v float64) string {
	if v < 10 && v != math.Trunc(v) {
		return fmt.Sprintf("%.2f", v)
	}
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func cell(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

// Markers around the generated part of docs/benchmarks.md.
const (
	beginMarker = "<!-- sniperbench:begin (generated by `make bench`; edit the prose outside the markers) -->"
	endMarker   = "<!-- sniperbench:end -->"
)

// writeDoc puts table between the markers of the doc at path, keeping
// everything outside them; a doc without markers gets them appended.
func writeDoc(path, table string) error {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	doc := string(b)
	block := beginMarker + "\n" + table + endMarker
	i := strings.Index(doc, "<!-- sniperbench:begin")
	j := strings.Index(doc, endMarker)
	switch {
	case i >= 0 && j > i:
		doc = doc[:i] + block + doc[j+len(endMarker):]
	case i >= 0 || j >= 0:
		return fmt.Errorf("%s: only one of the sniperbench markers is there; fix it by hand", path)
	default:
		if doc != "" && !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		if doc != "" {
			doc += "\n"
		}
		doc += "## Latest `make bench`\n\n" + block + "\n"
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}
