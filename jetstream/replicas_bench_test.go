package jetstream_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
)

// What three replicas cost a decision: one fenced commit at a time (the
// latency a PRICE->BID pays for its decision), on the embedded server
// alone (R1) and on three embedded servers clustered on loopback (R3),
// both at fsync always, as `sniper run` stores by default. `make bench`
// runs it beside the sniper's table: quote R3 as a ratio to R1 of the
// same run. The sniper reaches its own server in-process; on the cluster
// the leader may be another node, one loopback hop away, as in a real
// embedded cluster.
func BenchmarkCommitReplicas(b *testing.B) {
	for _, replicas := range []int{1, 3} {
		b.Run(fmt.Sprintf("R%d", replicas), func(b *testing.B) {
			nc := replicaSet(b, replicas)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			l, err := jetstream.Open(ctx, nc, jetstream.StreamConfig{Replicas: replicas})
			if err != nil {
				b.Fatal(err)
			}
			const item = "item-bench"
			var fence uint64
			b.ResetTimer()
			for i := range b.N {
				ev, err := messages.NewDecision(auction.Snapshot{Item: item, State: auction.Bidding, LastPrice: int64(1000 + i), LastBid: int64(1010 + i), StopPrice: 1 << 40}, uint64(i+1), []auction.Output{auction.Bid{Price: int64(1010 + i)}})
				if err != nil {
					b.Fatal(err)
				}
				seq, err := l.Commit(ctx, jetstream.Decision{Item: item, Fence: fence, Event: ev})
				if err != nil {
					b.Fatal(err)
				}
				fence = seq
			}
		})
	}
}

// replicaSet starts n embedded servers (clustered when n > 1) at fsync
// always and returns a connection as the sniper's to the first.
func replicaSet(b *testing.B, n int) *nats.Conn {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var routes []string
	var listens []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		listens = append(listens, l.Addr().String())
		routes = append(routes, "nats://"+l.Addr().String())
		l.Close()
	}
	var first *jetstream.Server
	for i := range n {
		cfg := jetstream.EmbeddedConfig{DataDir: b.TempDir(), Listen: "127.0.0.1:0", ServerName: fmt.Sprintf("b%d", i+1), Logger: quiet()}
		if n > 1 {
			cfg.Cluster = &jetstream.ClusterConfig{Name: "bench", Listen: listens[i], Routes: routes}
		}
		srv, err := jetstream.StartEmbedded(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(srv.Shutdown)
		if first == nil {
			first = srv
		}
	}
	nc, err := first.Connect("bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	return nc
}

// quiet drops the servers' logs, which would swamp the benchmark's output.
func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
