// Command sniperbench is `make bench`: in one run on one machine it
// measures the baselines and the sniper, and prints a Markdown table of
// both with ratios to the baselines of the same run (-write also puts it
// in docs/benchmarks.md, between markers, keeping the prose).
//
// The sniper is measured black-box: the real binary (go build
// ./cmd/sniper) run as a process, spoken to over its HTTP API, over XMPP
// through a stock Prosody (the testkit's), and over its NATS port. Rows:
//
//   - baselines: `nats bench js pub sync` (with p50/p99 of sync publishes
//     timed with nats.go) and `... async` against an embedded nats-server
//     started as the sniper starts its own; an XMPP echo bot on the same
//     Prosody, 1 auction and 100 auctions x 20 prices, closed loop;
//   - the sniper through Prosody: PRICE->BID latency (1 auction), BIDs/s
//     (100 x 20, closed loop), its CPU per BID, a CPU profile if it serves
//     /debug/pprof;
//   - log only: inputs published straight into its stream, decisions/s at
//     1, 100 and 10,000 concurrent auctions;
//   - scale: POSTs/s creating 10,000 snipers (-scale-max), restart time
//     with 1,000 and 10,000 auctions, RSS, heap and CPU of idle auctions,
//     JetStream consumers.
//
// Each log-related row runs at --fsync always and --fsync 1s; figures are
// medians over -runs runs. A stage that fails or runs out of time is a
// "failed: why" cell, never a hang or an abort.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"
)

// params sizes a run.
type params struct {
	runs                     int
	syncMsgs, asyncMsgs      int
	latPrices                int
	loadAuctions, loadPrices int
	logLevels                []logLevel
	scaleMax                 int
	restartSizes             []int
	idleWindow               time.Duration
	postTimeout              time.Duration
	profileFor               time.Duration
}

func defaultParams(quick bool, scaleMax int) params {
	if quick {
		return params{runs: 1, syncMsgs: 1000, asyncMsgs: 10000, latPrices: 50, loadAuctions: 100, loadPrices: 5,
			logLevels: []logLevel{{1, 300}, {100, 5}, {1000, 1}}, scaleMax: scaleMax, idleWindow: 3 * time.Second,
			profileFor: 3 * time.Second}
	}
	return params{runs: 3, syncMsgs: 5000, asyncMsgs: 20000, latPrices: 200, loadAuctions: 100, loadPrices: 20,
		logLevels: []logLevel{{1, 2000}, {100, 20}, {10000, 1}}, scaleMax: scaleMax, idleWindow: 10 * time.Second,
		profileFor: 10 * time.Second}
}

// bench is what every stage shares.
type bench struct {
	p          params
	res        *results
	root       string // the module
	dataRoot   string // where data dirs go
	profileDir string
	logDir     string
	natsBin    string
	bin        string // the sniper binary
	house      *house
	loadItems  []string
}

const latItem = "lat-1"

func (e *bench) loadAuctions() []*auctionClient {
	out := make([]*auctionClient, 0, len(e.loadItems))
	for _, it := range e.loadItems {
		out = append(out, e.house.auctions[it])
	}
	return out
}

func (e *bench) logPath(name string) string { return filepath.Join(e.logDir, name) }

var policies = []string{"always", "1s"}

func main() {
	runs := flag.Int("runs", 3, "runs per measurement; the table shows medians")
	quick := flag.Bool("quick", false, "one run with fewer operations (scale: 1,000 snipers unless -scale-max is given)")
	write := flag.Bool("write", false, "also write the table into -doc, between its sniperbench markers")
	doc := flag.String("doc", "docs/benchmarks.md", "the document -write updates (relative to the module root)")
	scaleMax := flag.Int("scale-max", 10000, "snipers created in the scale stage; restarts are timed at 1,000, 10,000 and 100,000 up to this")
	natsFlag := flag.String("nats", "", "the nats CLI (default: PATH, then $(go env GOPATH)/bin/nats)")
	dataRoot := flag.String("dir", os.TempDir(), "where the data dirs of the servers go (its filesystem is what fsync costs)")
	out := flag.String("out", "", "where profiles and the sniper's logs go (default: <module>/bin/bench)")
	stages := flag.String("stages", "baseline,echo,sniper,log,scale", "the stages to run, comma-separated")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })

	sm := *scaleMax
	if *quick && !set["scale-max"] {
		sm = 1000
	}
	p := defaultParams(*quick, sm)
	if set["runs"] || !*quick {
		p.runs = max(*runs, 1)
	}
	for _, n := range []int{1000, 10000, 100000} {
		if n <= p.scaleMax {
			p.restartSizes = append(p.restartSizes, n)
		}
	}
	p.postTimeout = 60*time.Second + time.Duration(p.scaleMax/500)*time.Second

	if err := run(p, *write, *doc, *natsFlag, *dataRoot, *out, *stages); err != nil {
		fmt.Fprintln(os.Stderr, "sniperbench:", err)
		os.Exit(1)
	}
}

func run(p params, write bool, doc, natsFlag, dataRoot, outDir, stageList string) error {
	began := time.Now()
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if outDir == "" {
		outDir = filepath.Join(root, "bin", "bench")
	}
	e := &bench{p: p, res: newResults(), root: root, profileDir: outDir, logDir: filepath.Join(outDir, "logs")}
	if err := os.MkdirAll(e.logDir, 0o755); err != nil {
		return err
	}
	if old, err := filepath.Glob(filepath.Join(e.logDir, "sniper-*.log")); err == nil {
		for _, f := range old {
			_ = os.Remove(f)
		}
	}
	tmp, err := os.MkdirTemp(dataRoot, "sniperbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	e.dataRoot = tmp
	for i := 1; i <= p.loadAuctions; i++ {
		e.loadItems = append(e.loadItems, fmt.Sprintf("load-%03d", i))
	}
	e.declareRows()
	want := map[string]bool{}
	for _, s := range strings.Split(stageList, ",") {
		want[strings.TrimSpace(s)] = true
	}
	defer killAll()

	natsBin, natsErr := natsCLI(natsFlag)
	e.natsBin = natsBin
	progress("building ./cmd/sniper")
	bin, buildErr := buildSniper(root, tmp)
	e.bin = bin
	var houseErr error
	if want["echo"] || want["sniper"] || want["log"] || want["scale"] {
		progress("starting Prosody, logging in %d auctions, the echo bot and the sink", p.loadAuctions+1)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		e.house, houseErr = startHouse(ctx, filepath.Join(tmp, "prosody"), append([]string{latItem}, e.loadItems...))
		cancel()
		if e.house != nil {
			defer e.house.close()
		}
	}
	// needs says why a stage cannot run, if it cannot.
	needs := func(nats, sniper, house bool) error {
		switch {
		case nats && natsErr != nil:
			return natsErr
		case sniper && buildErr != nil:
			return buildErr
		case house && houseErr != nil:
			return fmt.Errorf("prosody: %w", houseErr)
		}
		return nil
	}

	for r := 1; r <= p.runs; r++ {
		if want["echo"] {
			e.stage(fmt.Sprintf("run %d/%d: XMPP echo bot", r, p.runs), 5*time.Minute, needs(false, false, true),
				[]string{"echo.lat", "echo.load"}, func(ctx context.Context) error { return echoStage(ctx, e) })
		}
		for _, pol := range policies {
			if want["baseline"] {
				e.stage(fmt.Sprintf("run %d/%d, fsync %s: nats bench", r, p.runs, pol), 5*time.Minute, needs(true, false, false),
					[]string{"base.sync." + pol, "base.async." + pol}, func(ctx context.Context) error { return baseline(ctx, e, pol) })
			}
			if want["sniper"] {
				e.stage(fmt.Sprintf("run %d/%d, fsync %s: sniper through Prosody", r, p.runs, pol), 8*time.Minute, needs(false, true, true),
					[]string{"sniper.lat." + pol, "sniper.load." + pol, "sniper.cpu." + pol}, func(ctx context.Context) error { return sniperStage(ctx, e, r, pol) })
			}
			if want["log"] {
				var keys []string
				for _, lv := range p.logLevels {
					keys = append(keys, lv.key(pol))
				}
				e.stage(fmt.Sprintf("run %d/%d, fsync %s: log only", r, p.runs, pol), 12*time.Minute, needs(false, true, true),
					keys, func(ctx context.Context) error { return logStage(ctx, e, r, pol) })
			}
		}
	}
	if want["scale"] {
		for _, pol := range policies {
			e.stage(fmt.Sprintf("fsync %s: scale, %s snipers by POST", pol, thousands(float64(p.scaleMax))), 15*time.Minute, needs(false, true, true),
				[]string{"scale.post." + pol, "scale.rss." + pol, "scale.idlecpu." + pol, "scale.consumers." + pol},
				func(ctx context.Context) error { return scaleStage(ctx, e, pol) })
		}
		var keys []string
		for _, n := range p.restartSizes {
			for _, pol := range policies {
				keys = append(keys, fmt.Sprintf("scale.restart.%d.%s", n, pol))
			}
		}
		e.stage("scale: restarts", 25*time.Minute, needs(false, true, true),
			keys, func(ctx context.Context) error { return restartStage(ctx, e) })
	}

	args := strings.Join(os.Args[1:], " ")
	if args != "" {
		args = " " + args
	}
	scaleRuns := ""
	if want["scale"] {
		scaleRuns = " (scale rows: 1 run per sync policy)"
	}
	h := header{
		machine:  machine(dataRoot),
		versions: versions(root, natsBin),
		sync: "`--fsync always`: the embedded store fsyncs every write (`sync_interval: always`), the default; " +
			"`--fsync 1s`: flushed every second. The nats bench baselines run on a server with the same setting.",
		run: fmt.Sprintf("%s, `go run ./cmd/sniperbench%s` (sniper at %s), medians of %d run(s)%s, took %s. "+
			"Latencies: every round trip of a run (the 1-auction loops after %d warm-up rounds), its p50/p99/max, then the median over runs. Log and output of each sniper process: `%s`.",
			began.Format("2006-01-02 15:04 MST"), args, vcsRevision(root), p.runs, scaleRuns, time.Since(began).Round(time.Second), warmup, relTo(root, e.logDir)),
	}
	table := e.res.markdown(h)
	fmt.Println(table)
	if write {
		path := doc
		if !filepath.IsAbs(path) {
			path = filepath.Join(root, path)
		}
		if err := writeDoc(path, table); err != nil {
			return err
		}
		progress("wrote %s", path)
	}
	return nil
}

// stage runs fn with a deadline. Whatever fn does, the stage ends: past
// its deadline (plus a grace) it is reported as failed and left behind,
// and any sniper process still alive is killed.
func (e *bench) stage(name string, timeout time.Duration, cannot error, keys []string, fn func(context.Context) error) {
	if cannot != nil {
		for _, k := range keys {
			if !e.res.failed(k) {
				e.res.fail(k, cannot)
			}
		}
		return
	}
	progress("%s", name)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		done <- fn(ctx)
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout + 30*time.Second):
		err = fmt.Errorf("stage did not end within %s", timeout)
	}
	killAll()
	if err != nil {
		progress("%s: %v", name, err)
		for _, k := range keys {
			e.res.fail(k, err)
		}
	}
	progress("%s: %s", name, time.Since(start).Round(100*time.Millisecond))
}

var t0 = time.Now()

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Since(t0).Round(time.Second), fmt.Sprintf(format, args...))
}

func relTo(root, path string) string {
	if r, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

// vcsRevision names the commit the sniper was built from, "+dirty" when
// the working tree had changes.
func vcsRevision(root string) string {
	out, err := gitOut(root, "rev-parse", "--short", "HEAD")
	if err != nil {
		return "an unknown commit"
	}
	rev := strings.TrimSpace(out)
	if st, err := gitOut(root, "status", "--porcelain", "--untracked-files=no"); err == nil && strings.TrimSpace(st) != "" {
		rev += "+dirty"
	}
	return rev
}
