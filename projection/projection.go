// Package projection keeps the latest snapshot of every sniper in memory,
// following the log's state subjects, for the HTTP API and the live UI.
package projection

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
)

// View is a read model of the sniper states: eventually consistent with the
// log, and exact once it has caught up to a given sequence.
type View struct {
	logger *slog.Logger

	mu      sync.Mutex
	snaps   map[string]messages.SnapshotEvent
	lastSeq uint64
	changed chan struct{} // closed and replaced on every change
	subs    map[*Subscription]struct{}

	log  *jetstream.Log
	gen  int                   // generation of the reader; apply ignores older ones
	cur  natsjs.ConsumeContext // the current reader, guarded by mu
	stop chan struct{}         // closed by Stop: the watchdog ends
	done chan struct{}         // closed when the watchdog has ended
}

// snapshotFilter is every auction's snapshot subject.
var snapshotFilter = messages.Subject("*", messages.KindState, messages.TypeSnapshot)

// Start loads every sniper's last snapshot and follows new ones from the
// very next sequence, so nothing is missed or seen twice.
func Start(ctx context.Context, log *jetstream.Log, logger *slog.Logger) (*View, error) {
	info, err := log.Stream().Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("projection: stream info: %w", err)
	}
	upTo := info.State.LastSeq
	v := &View{logger: logger, snaps: map[string]messages.SnapshotEvent{}, changed: make(chan struct{}), subs: map[*Subscription]struct{}{}, lastSeq: upTo}
	if upTo > 0 {
		snaps, err := log.SnapshotsUpTo(ctx, upTo)
		if err != nil {
			return nil, fmt.Errorf("projection: %w", err)
		}
		for _, s := range snaps {
			v.snaps[s.Item] = s.SnapshotEvent
		}
	}
	v.log, v.stop, v.done = log, make(chan struct{}), make(chan struct{})
	if err := v.follow(ctx, upTo+1); err != nil {
		return nil, err
	}
	go v.watch()
	return v, nil
}

// follow starts a reader of the snapshots from sequence from on: an
// ordered consumer with short pulls and heartbeats, so that when the
// server holding it goes, nats.go recreates it within seconds.
func (v *View) follow(ctx context.Context, from uint64) error {
	cons, err := v.log.Stream().OrderedConsumer(ctx, natsjs.OrderedConsumerConfig{
		FilterSubjects: []string{snapshotFilter},
		DeliverPolicy:  natsjs.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return fmt.Errorf("projection: follow snapshots: %w", err)
	}
	v.mu.Lock()
	v.gen++
	gen := v.gen
	v.mu.Unlock()
	cc, err := cons.Consume(func(msg natsjs.Msg) { v.apply(gen, msg) },
		natsjs.PullExpiry(10*time.Second), natsjs.PullHeartbeat(2*time.Second),
		natsjs.ConsumeErrHandler(func(_ natsjs.ConsumeContext, err error) {
			v.logger.Warn("projection: following snapshots", "error", err)
		}))
	if err != nil {
		return fmt.Errorf("projection: follow snapshots: %w", err)
	}
	v.mu.Lock()
	v.cur = cc
	v.mu.Unlock()
	return nil
}

// Watchdog settings: how often the view compares itself with the log, and
// how long an attempt to read the log or replace the reader may take.
const (
	watchEvery   = 2 * time.Second
	watchTimeout = 5 * time.Second
)

// watch replaces a reader that has stopped following the log. The
// ordered consumer is R1: it lives on one server. When that server
// crashes, nats.go recreates it, but its attempt can hang for good while
// the cluster still counts the dead server as a live peer (seen after a
// crash: no new consumer for over 30 s, the view stuck). So the view
// checks every watchEvery that it has the log's last snapshot; if it is
// still behind the one the previous check saw, it starts a new reader
// from where it stands and drops the old one.
func (v *View) watch() {
	defer close(v.done)
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	var target uint64 // the log's last snapshot seen at the previous check
	for {
		select {
		case <-v.stop:
			return
		case <-t.C:
		}
		v.mu.Lock()
		seen := v.lastSeq
		v.mu.Unlock()
		if target > seen {
			v.logger.Warn("projection: the snapshot reader is stuck; replacing it", "view_seq", seen, "log_seq", target)
			v.replace(seen + 1)
			target = 0
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), watchTimeout)
		last, err := v.log.LastSeqOn(ctx, snapshotFilter)
		cancel()
		target = 0
		if err == nil && last > seen {
			target = last
		}
	}
}

// replace starts a new reader from sequence from and stops the old one.
func (v *View) replace(from uint64) {
	v.mu.Lock()
	old := v.cur
	v.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), watchTimeout)
	defer cancel()
	if err := v.follow(ctx, from); err != nil {
		v.logger.Warn("projection: cannot replace the snapshot reader; retrying", "error", err)
		return
	}
	// Stopping the old reader waits for its own retry in progress (up to
	// 10 s): not here.
	go old.Stop()
}

func (v *View) apply(gen int, msg natsjs.Msg) {
	var s messages.SnapshotEvent
	if err := json.Unmarshal(msg.Data(), &s); err != nil {
		v.logger.Warn("projection: undecodable snapshot skipped", "subject", msg.Subject(), "error", err)
		return
	}
	meta, err := msg.Metadata()
	if err != nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if gen != v.gen || meta.Sequence.Stream <= v.lastSeq {
		return // a replaced reader's, or seen already
	}
	v.snaps[s.Item] = s
	v.lastSeq = max(v.lastSeq, meta.Sequence.Stream)
	close(v.changed)
	v.changed = make(chan struct{})
	for sub := range v.subs {
		select {
		case sub.ch <- s:
		default:
			// A subscriber that cannot keep up is cut off rather than
			// allowed to hold the projection back; it resyncs on reconnect.
			delete(v.subs, sub)
			close(sub.ch)
		}
	}
}

// Stop stops following the log.
func (v *View) Stop() {
	close(v.stop)
	<-v.done
	v.mu.Lock()
	cur := v.cur
	v.mu.Unlock()
	cur.Stop()
	<-cur.Closed()
	v.mu.Lock()
	defer v.mu.Unlock()
	for sub := range v.subs {
		delete(v.subs, sub)
		close(sub.ch)
	}
}

// Get returns the latest snapshot of item.
func (v *View) Get(item string) (messages.SnapshotEvent, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s, ok := v.snaps[item]
	return s, ok
}

// List returns every sniper's latest snapshot, ordered by item.
func (v *View) List() []messages.SnapshotEvent {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]messages.SnapshotEvent, 0, len(v.snaps))
	for _, s := range v.snaps {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b messages.SnapshotEvent) int { return strings.Compare(a.Item, b.Item) })
	return out
}

// Wait blocks until item's snapshot satisfies ok, or ctx ends.
func (v *View) Wait(ctx context.Context, item string, ok func(messages.SnapshotEvent) bool) (messages.SnapshotEvent, error) {
	for {
		v.mu.Lock()
		s, found := v.snaps[item]
		changed := v.changed
		v.mu.Unlock()
		if found && ok(s) {
			return s, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return s, ctx.Err()
		}
	}
}

// Subscription delivers every new snapshot until it is closed.
type Subscription struct {
	ch chan messages.SnapshotEvent
	v  *View
}

// Subscribe starts a subscription; the current state is List().
func (v *View) Subscribe() *Subscription {
	sub := &Subscription{ch: make(chan messages.SnapshotEvent, 256), v: v}
	v.mu.Lock()
	v.subs[sub] = struct{}{}
	v.mu.Unlock()
	return sub
}

// C delivers snapshots; it is closed when the subscriber fell behind or the
// view stopped.
func (s *Subscription) C() <-chan messages.SnapshotEvent { return s.ch }

// Close ends the subscription.
func (s *Subscription) Close() {
	s.v.mu.Lock()
	defer s.v.mu.Unlock()
	if _, ok := s.v.subs[s]; ok {
		delete(s.v.subs, s)
		close(s.ch)
	}
}

// CountByState counts the snipers in each state, for metrics.
func (v *View) CountByState() map[auction.State]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[auction.State]int{}
	for _, s := range v.snaps {
		out[s.State]++
	}
	return out
}
