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

	consume natsjs.ConsumeContext
}

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
	cons, err := log.Stream().OrderedConsumer(ctx, natsjs.OrderedConsumerConfig{
		FilterSubjects: []string{messages.Subject("*", messages.KindState, messages.TypeSnapshot)},
		DeliverPolicy:  natsjs.DeliverByStartSequencePolicy,
		OptStartSeq:    upTo + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("projection: follow snapshots: %w", err)
	}
	// Short pulls with heartbeats: when the server holding this reader
	// dies, the ordered consumer notices in seconds and recreates itself.
	v.consume, err = cons.Consume(v.apply, natsjs.PullExpiry(10*time.Second), natsjs.PullHeartbeat(2*time.Second),
		natsjs.ConsumeErrHandler(func(_ natsjs.ConsumeContext, err error) {
			logger.Warn("projection: following snapshots", "error", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("projection: follow snapshots: %w", err)
	}
	return v, nil
}

func (v *View) apply(msg natsjs.Msg) {
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
	v.consume.Stop()
	<-v.consume.Closed()
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
