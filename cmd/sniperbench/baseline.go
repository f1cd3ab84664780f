package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	sniperjs "sniper/jetstream"
)

const payloadSize = 200 // bytes, the size of the bench's messages

// baseline measures the raw JetStream the sniper runs on: `nats bench js
// pub sync` and `... async` against an embedded nats-server started the
// way the sniper starts its own (sniper/jetstream.StartEmbedded, same
// sync policy), and sync publish latencies timed here with nats.go
// against the same server, over TCP like the CLI.
func baseline(ctx context.Context, e *bench, policy string) error {
	dir, err := os.MkdirTemp(e.dataRoot, "baseline-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	interval, _ := parsePolicy(policy)
	srv, err := sniperjs.StartEmbedded(ctx, sniperjs.EmbeddedConfig{
		DataDir: dir, Listen: "127.0.0.1:0", SyncInterval: interval,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	defer srv.Shutdown()

	syncKey, asyncKey := "base.sync."+policy, "base.async."+policy
	s := sample{}
	rate, err := natsBench(ctx, e.natsBin, srv.ClientURL(), "sync", e.p.syncMsgs)
	if err != nil {
		e.res.fail(syncKey, err)
	} else {
		s["v"] = rate
		lat, err := syncPublishLatencies(ctx, srv.ClientURL(), e.p.syncMsgs)
		if err != nil {
			e.res.fail(syncKey, fmt.Errorf("nats.go sync publishes: %w", err))
		} else {
			s["p50"], s["p99"], s["max"] = pct(lat, 50), pct(lat, 99), pct(lat, 100)
		}
		e.res.add(syncKey, s)
	}
	rate, err = natsBench(ctx, e.natsBin, srv.ClientURL(), "async", e.p.asyncMsgs)
	if err != nil {
		e.res.fail(asyncKey, err)
	} else {
		e.res.add(asyncKey, sample{"v": rate})
	}
	return nil
}

// natsBench runs `nats bench js pub <mode>` and returns the msgs/s of its
// CSV report.
func natsBench(ctx context.Context, bin, url, mode string, n int) (float64, error) {
	csvPath := filepath.Join(os.TempDir(), fmt.Sprintf("sniperbench-%d.csv", time.Now().UnixNano()))
	defer os.Remove(csvPath)
	stream := "BENCH" + strings.ToUpper(mode)
	args := []string{"--server", url, "bench", "js", "pub", mode, "bench." + mode,
		"--msgs", strconv.Itoa(n), "--size", fmt.Sprintf("%dB", payloadSize),
		"--create", "--purge", "--no-progress", "--stream", stream, "--csv", csvPath}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("nats %s: %v: %s", strings.Join(args[2:6], " "), err, lastLines(string(out), 3))
	}
	f, err := os.Open(csvPath)
	if err != nil {
		return 0, fmt.Errorf("nats bench wrote no CSV: %w", err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil || len(recs) < 2 {
		return 0, fmt.Errorf("nats bench CSV: %v (%d records)", err, len(recs))
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

// syncPublishLatencies times n sequential sync publishes of the bench's
// payload into a file stream of its own.
func syncPublishLatencies(ctx context.Context, url string, n int) ([]time.Duration, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "BENCHLAT", Subjects: []string{"bench.lat"}, Storage: jetstream.FileStorage}); err != nil {
		return nil, err
	}
	payload := make([]byte, payloadSize)
	lat := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		if _, err := js.Publish(ctx, "bench.lat", payload); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

// pct is the p-th percentile (100: the max) in seconds.
func pct(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := min(len(s)*p/100, len(s)-1)
	return s[i].Seconds()
}

// parsePolicy turns "always" into 0 and a duration into itself, as
// `sniper run --fsync` does.
func parsePolicy(p string) (time.Duration, error) {
	if p == "always" {
		return 0, nil
	}
	return time.ParseDuration(p)
}
