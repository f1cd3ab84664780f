package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The log-only stages write inputs straight into the SNIPER stream, as
// the API and the XMPP bridge would (the subjects and payloads are the
// outside contract of the log), and watch the API until every sniper has
// decided its last input. The sniper's --auction-domain is the sink
// component, so its JOINs and BIDs are delivered and dropped.

func startSubject(item string) string { return "sniper." + item + ".cmd.start" }
func priceSubject(item string) string { return "sniper." + item + ".in.price" }

func startPayload(item string) []byte {
	b, _ := json.Marshal(map[string]any{"type": "start", "item": item, "stop_price": 1_000_000_000})
	return b
}

func pricePayload(item string, price int64) []byte {
	b, _ := json.Marshal(map[string]any{"type": "price", "item": item, "current_price": price, "increment": 1, "bidder": "other", "from_sniper": false})
	return b
}

// inputPrice is the k-th price (from 1) of a log-only auction.
func inputPrice(k int) int64 { return int64(1000 + 10*k) }

// publisher publishes async into the sniper's stream over its NATS port,
// at most maxPending unacknowledged.
type publisher struct {
	nc *nats.Conn
	js jetstream.JetStream

	mu     sync.Mutex
	failed int
	first  error
}

const maxPending = 4096

func newPublisher(url string) (*publisher, error) {
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	p := &publisher{nc: nc}
	p.js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.failed++
			if p.first == nil {
				p.first = err
			}
		}))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return p, nil
}

func (p *publisher) close() { p.nc.Close() }

// publish waits (up to a minute) while maxPending publishes are in flight.
func (p *publisher) publish(subject string, data []byte) error {
	_, err := p.js.PublishAsync(subject, data, jetstream.WithStallWait(time.Minute))
	return err
}

// flush waits until every publish so far is acknowledged, and fails if any
// was refused.
func (p *publisher) flush(ctx context.Context) error {
	select {
	case <-p.js.PublishAsyncComplete():
	case <-ctx.Done():
		return fmt.Errorf("publish acks: %w", ctx.Err())
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("publish acks: %d still pending after 5 min", p.js.PublishAsyncPending())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed > 0 {
		return fmt.Errorf("%d publishes failed, the first: %w", p.failed, p.first)
	}
	return nil
}

// pollEvery is how often to list n snipers: often enough to time a small
// run, not so often that listing a large one loads the sniper.
func pollEvery(n int) time.Duration { return 5*time.Millisecond + time.Duration(n)*50*time.Microsecond }

// startAll publishes a start command per item and waits until the API
// lists want snipers of prefix.
func startAll(ctx context.Context, p *sniperProc, pub *publisher, prefix string, items []string, want int, stall, timeout time.Duration) error {
	for _, it := range items {
		if err := pub.publish(startSubject(it), startPayload(it)); err != nil {
			return fmt.Errorf("publish start: %w", err)
		}
	}
	if err := pub.flush(ctx); err != nil {
		return err
	}
	return p.waitListed(ctx, fmt.Sprintf("%s snipers started", thousands(float64(want))), pollEvery(want), stall, timeout,
		scorePrefix(prefix, want, func(sniperView) int { return 1 }))
}

// scorePrefix sums score over the listed snipers of prefix; done at want.
func scorePrefix(prefix string, want int, score func(sniperView) int) func([]sniperView) (int, bool) {
	return func(l []sniperView) (int, bool) {
		n := 0
		for _, v := range l {
			if strings.HasPrefix(v.Item, prefix) {
				n += score(v)
			}
		}
		return n, n >= want
	}
}

// decisionCounter counts the sniper's decisions of one type on prefix's
// auctions as they are stored, through a plain subscription on the
// sniper's NATS (every message a stream stores is also published): the
// count is exact and timed when it happens, and costs the sniper nothing,
// unlike listing thousands of snipers through the API while it works.
type decisionCounter struct {
	sub  *nats.Subscription
	n    atomic.Int64
	last atomic.Int64 // unix nanoseconds of the last one counted
}

func (p *publisher) countDecisions(prefix, typ string) (*decisionCounter, error) {
	c := &decisionCounter{}
	sub, err := p.nc.Subscribe("sniper.*.dec."+typ, func(m *nats.Msg) {
		if strings.HasPrefix(m.Subject, "sniper."+prefix) {
			c.n.Add(1)
			c.last.Store(time.Now().UnixNano())
		}
	})
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	c.sub = sub
	return c, p.nc.Flush()
}

// wait waits until want decisions were counted and returns when the last
// one was; it fails when none came for stall, or after timeout.
func (c *decisionCounter) wait(ctx context.Context, what string, want int64, stall, timeout time.Duration) (time.Time, error) {
	defer func() { _ = c.sub.Unsubscribe() }()
	deadline := time.Now().Add(timeout)
	seen, moved := int64(-1), time.Now()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		n := c.n.Load()
		if n >= want {
			return time.Unix(0, c.last.Load()), nil
		}
		if n != seen {
			seen, moved = n, time.Now()
		}
		switch {
		case time.Since(moved) > stall:
			return time.Time{}, fmt.Errorf("%s: no progress for %s at %d of %d", what, stall, n, want)
		case time.Now().After(deadline):
			return time.Time{}, fmt.Errorf("%s: %d of %d after %s", what, n, want, timeout)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-t.C:
		}
	}
}

// pricesAll publishes prices 1..k to every item, round robin (so every
// auction has inputs waiting at once), and returns when the last of their
// decisions was stored.
func pricesAll(ctx context.Context, pub *publisher, prefix string, items []string, k int, stall, timeout time.Duration) (time.Time, error) {
	count, err := pub.countDecisions(prefix, "bid")
	if err != nil {
		return time.Time{}, err
	}
	for i := 1; i <= k; i++ {
		for _, it := range items {
			if err := pub.publish(priceSubject(it), pricePayload(it, inputPrice(i))); err != nil {
				return time.Time{}, fmt.Errorf("publish price: %w", err)
			}
		}
	}
	if err := pub.flush(ctx); err != nil {
		return time.Time{}, err
	}
	return count.wait(ctx, fmt.Sprintf("%s inputs decided", thousands(float64(len(items)*k))), int64(len(items)*k), stall, timeout)
}

func itemNames(prefix string, from, to int) []string {
	out := make([]string, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%06d", prefix, i))
	}
	return out
}

// logStage measures decisions/s with inputs straight into the log, at
// each level of concurrent auctions, in one sniper process.
func logStage(ctx context.Context, e *bench, run int, policy string) error {
	var todo []logLevel
	for _, lv := range e.p.logLevels {
		key := lv.key(policy)
		if e.res.failed(key) {
			e.res.skip(key, "not repeated after failing in an earlier run")
			continue
		}
		todo = append(todo, lv)
	}
	if len(todo) == 0 {
		return nil
	}
	failAll := func(err error) {
		for _, lv := range todo {
			e.res.fail(lv.key(policy), err)
		}
	}
	dir, err := os.MkdirTemp(e.dataRoot, "log-"+policy+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := startSniper(ctx, sniperConfig{bin: e.bin, dataDir: dir, fsync: policy, xmppAddr: e.house.p.Addr(),
		auctionDomain: sinkDomain, logPath: e.logPath(fmt.Sprintf("sniper-log-%s-run%d.log", policy, run))})
	if err != nil {
		failAll(err)
		return nil
	}
	defer p.stop()
	pub, err := newPublisher(p.natsURL)
	if err != nil {
		failAll(err)
		return nil
	}
	defer pub.close()
	for _, lv := range todo {
		key := lv.key(policy)
		prefix := fmt.Sprintf("lo%d-", lv.auctions)
		items := itemNames(prefix, 0, lv.auctions)
		if err := startAll(ctx, p, pub, prefix, items, len(items), 15*time.Second, 3*time.Minute); err != nil {
			e.res.fail(key, err)
			continue
		}
		// The JOINs of the starts go out first: the prices are timed on
		// their own.
		if err := p.waitOutboundIdle(ctx, 3*time.Minute); err != nil {
			e.res.fail(key, err)
			continue
		}
		s0, _ := streamState(ctx, p.natsURL)
		t0 := time.Now()
		lastDecided, err := pricesAll(ctx, pub, prefix, items, lv.prices, 15*time.Second, 3*time.Minute)
		if err != nil {
			e.res.fail(key, err)
			continue
		}
		wall := lastDecided.Sub(t0)
		// What the decisions wrote, the bridge's records of the BIDs
		// included, once they are all in.
		_ = p.waitOutboundIdle(ctx, 3*time.Minute)
		s1, _ := streamState(ctx, p.natsURL)
		n := lv.auctions * lv.prices
		e.res.add(key, sample{"v": float64(n) / wall.Seconds(), "writes_per_input": float64(s1.LastSeq-s0.LastSeq) / float64(n),
			"writes_per_s": float64(s1.LastSeq-s0.LastSeq) / wall.Seconds()})
	}
	return nil
}

// logLevel is one log-only measurement: auctions x prices each.
type logLevel struct{ auctions, prices int }

func (l logLevel) key(policy string) string { return fmt.Sprintf("log.%d.%s", l.auctions, policy) }
