// Command sniperbench measures the sniper against the raw JetStream it runs
// on, in one run on one machine, and prints a table with ratios:
//
//   - the baseline: `nats bench js pub sync` and `nats bench js pub atomic
//     --batch 2` (a decision is an atomic batch of two messages) against
//     the same embedded server;
//   - the log port: jetstream.Log.Commit of a decision (snapshot + bid,
//     fenced, with message ids), over TCP like the baseline and in-process
//     as the sniper uses it;
//   - the whole sniper: inputs appended to the log and decided by the
//     actors (one per auction), end to end, with per-input latency.
//
// Each is run with the store fsynced on every write (the default) and
// flushed every second, to show what the durability policy costs.
package main

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"sniper/actors"
	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
)

type row struct {
	name    string
	fsync   string
	rate    float64 // operations per second
	p50     time.Duration
	p99     time.Duration
	note    string
	baseRef string // name of the baseline row this is compared with
}

func main() {
	n := flag.Int("n", 5000, "operations per measurement")
	items := flag.Int("items", 20, "auctions in the end-to-end measurement")
	natsBin := flag.String("nats", "nats", "the nats CLI, for the baseline")
	flag.Parse()
	if err := run(*n, *items, *natsBin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sniperbench:", err)
		os.Exit(1)
	}
}

func run(n, items int, natsBin string, out io.Writer) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var rows []row
	for _, sync := range []time.Duration{0, time.Second} {
		policy := "always"
		if sync > 0 {
			policy = sync.String()
		}
		dir, err := os.MkdirTemp("", "sniperbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		ctx := context.Background()
		srv, err := jetstream.StartEmbedded(ctx, jetstream.EmbeddedConfig{DataDir: dir, Listen: "127.0.0.1:0", SyncInterval: sync, Logger: quiet})
		if err != nil {
			return err
		}
		r, err := measure(ctx, srv, n, items, natsBin, policy, quiet)
		srv.Shutdown()
		if err != nil {
			return err
		}
		rows = append(rows, r...)
	}
	printTable(out, rows)
	return nil
}

func measure(ctx context.Context, srv *jetstream.Server, n, items int, natsBin, policy string, logger *slog.Logger) ([]row, error) {
	var rows []row
	for _, mode := range []string{"sync", "atomic"} {
		args := []string{"--server", srv.ClientURL(), "bench", "js", "pub", mode, "bench." + mode, "--msgs", strconv.Itoa(n),
			"--size", "200B", "--create", "--purge", "--no-progress", "--stream", "BENCH" + strings.ToUpper(mode)}
		if mode == "atomic" {
			args = append(args, "--batch", "2")
		}
		rate, err := natsBench(natsBin, args)
		if err != nil {
			return nil, err
		}
		name := "nats bench js pub sync (1 msg)"
		if mode == "atomic" {
			name = "nats bench js pub atomic --batch 2"
			rate /= 2 // batches per second: one batch is one decision's worth
		}
		rows = append(rows, row{name: name, fsync: policy, rate: rate, note: "baseline, TCP"})
	}
	tcp, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return nil, err
	}
	defer tcp.Close()
	inproc, err := srv.Connect("bench")
	if err != nil {
		return nil, err
	}
	defer inproc.Close()
	for _, c := range []struct {
		nc   *nats.Conn
		how  string
		base string
	}{{tcp, "TCP", "nats bench js pub atomic --batch 2"}, {inproc, "in-process", "nats bench js pub atomic --batch 2"}} {
		log, err := jetstream.Open(ctx, c.nc, jetstream.StreamConfig{})
		if err != nil {
			return nil, err
		}
		rate, p50, p99, err := commits(ctx, log, n, c.how)
		if err != nil {
			return nil, err
		}
		rows = append(rows, row{name: "Log.Commit (snapshot+bid, fenced), " + c.how, fsync: policy, rate: rate, p50: p50, p99: p99, baseRef: c.base})
	}
	log, err := jetstream.Open(ctx, inproc, jetstream.StreamConfig{})
	if err != nil {
		return nil, err
	}
	rate, p50, p99, err := endToEnd(ctx, log, n, items, logger)
	if err != nil {
		return nil, err
	}
	rows = append(rows, row{name: fmt.Sprintf("sniper: input decided end to end (%d auctions)", items), fsync: policy, rate: rate, p50: p50, p99: p99, baseRef: "nats bench js pub sync (1 msg)",
		note: "append + actor decide + commit + ack"})
	return rows, nil
}

// natsBench runs the nats CLI and returns the messages per second it
// reports in its CSV output.
func natsBench(bin string, args []string) (float64, error) {
	csvPath := filepath.Join(os.TempDir(), fmt.Sprintf("sniperbench-%d.csv", time.Now().UnixNano()))
	defer os.Remove(csvPath)
	cmd := exec.Command(bin, append(args, "--csv", csvPath)...)
	outp, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, outp)
	}
	f, err := os.Open(csvPath)
	if err != nil {
		return 0, fmt.Errorf("nats bench wrote no CSV: %w\n%s", err, outp)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil || len(recs) < 2 {
		return 0, fmt.Errorf("nats bench CSV: %v", err)
	}
	col := slices.Index(recs[0], "MsgsPerSec")
	if col < 0 {
		return 0, fmt.Errorf("nats bench CSV has no MsgsPerSec column: %v", recs[0])
	}
	total := 0.0
	for _, r := range recs[1:] {
		v, _ := strconv.ParseFloat(r[col], 64)
		total += v
	}
	return total, nil
}

// commits measures sequential decision commits on one auction, each fenced
// on the previous one, as a sniper actor makes them.
func commits(ctx context.Context, log *jetstream.Log, n int, tag string) (float64, time.Duration, time.Duration, error) {
	item := "bench-commit-" + strings.ReplaceAll(tag, " ", "")
	fence := uint64(0)
	lat := make([]time.Duration, 0, n)
	start := time.Now()
	for i := 1; i <= n; i++ {
		s := auction.Snapshot{Item: item, State: auction.Bidding, LastPrice: int64(i), LastBid: int64(i + 1), StopPrice: 1 << 40}
		t0 := time.Now()
		seq, err := log.Commit(ctx, jetstream.Decision{
			Item: item, Fence: fence, InputSeq: uint64(i), Snapshot: messages.NewSnapshot(s, uint64(i)),
			Outputs: []messages.Outgoing{{Subject: messages.Subject(item, messages.KindOut, messages.TypeBid), Payload: messages.BidRequest{Type: messages.TypeBid, Item: item, Price: int64(i + 1), InputSeq: uint64(i)}}},
		})
		if err != nil {
			return 0, 0, 0, err
		}
		lat = append(lat, time.Since(t0))
		fence = seq
	}
	p50, p99 := percentiles(lat)
	return float64(n) / time.Since(start).Seconds(), p50, p99, nil
}

// endToEnd runs the actor system and measures how fast appended inputs are
// decided, and each input's latency from append to its snapshot.
func endToEnd(ctx context.Context, log *jetstream.Log, n, items int, logger *slog.Logger) (float64, time.Duration, time.Duration, error) {
	sys, err := actors.StartSystem(ctx, actors.Deps{Log: log, Logger: logger})
	if err != nil {
		return 0, 0, 0, err
	}
	defer sys.Stop()
	names := make([]string, items)
	for i := range names {
		names[i] = fmt.Sprintf("bench-e2e-%d", i)
		if _, err := log.Append(ctx, messages.Subject(names[i], messages.KindCmd, messages.TypeStart), messages.NewStart(names[i], 1<<40)); err != nil {
			return 0, 0, 0, err
		}
	}
	per := max(n/items, 1)
	var (
		mu  sync.Mutex
		lat []time.Duration
		wg  sync.WaitGroup
		bad error
	)
	start := time.Now()
	for _, item := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 1; k <= per; k++ {
				t0 := time.Now()
				seq, err := log.Append(ctx, messages.Subject(item, messages.KindIn, messages.TypePrice), messages.NewPrice(item, int64(k*10), 1, "other", false))
				if err == nil {
					err = waitDecided(ctx, log, item, seq)
				}
				if err != nil {
					mu.Lock()
					bad = err
					mu.Unlock()
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(t0))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if bad != nil {
		return 0, 0, 0, bad
	}
	p50, p99 := percentiles(lat)
	return float64(len(lat)) / time.Since(start).Seconds(), p50, p99, nil
}

// waitDecided polls the auction's last snapshot: the benchmark's own
// reading adds a direct get per poll, which the table's note mentions.
func waitDecided(ctx context.Context, log *jetstream.Log, item string, seq uint64) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := log.LastSnapshot(ctx, item)
		if err == nil && s.InputSeq >= seq {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("input %d of %s not decided in 30 s", seq, item)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func percentiles(d []time.Duration) (time.Duration, time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return d[len(d)*50/100], d[min(len(d)*99/100, len(d)-1)]
}

func printTable(out io.Writer, rows []row) {
	rate := map[string]float64{}
	for _, r := range rows {
		if r.baseRef == "" {
			rate[r.name+"|"+r.fsync] = r.rate
		}
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tfsync\tops/s\tp50\tp99\tvs baseline\tnote")
	for _, r := range rows {
		ratio := ""
		if b := rate[r.baseRef+"|"+r.fsync]; b > 0 {
			ratio = fmt.Sprintf("%.2fx of %s", r.rate/b, short(r.baseRef))
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%s\n", r.name, r.fsync, r.rate, dur(r.p50), dur(r.p99), ratio, r.note)
	}
	tw.Flush()
}

func short(s string) string {
	if strings.Contains(s, "atomic") {
		return "atomic batch"
	}
	return "sync publish"
}

func dur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(time.Microsecond).String()
}
