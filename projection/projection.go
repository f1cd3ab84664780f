// Package projection keeps the latest decision of every sniper in memory,
// following the log's decision subjects, for the HTTP API and the live UI.
package projection

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
)

// View is a read model of the sniper states: eventually consistent with the
// log, and exact once it has caught up to a given sequence.
type View struct {
	logger *slog.Logger

	mu      sync.Mutex
	snaps   map[string]messages.DecisionEvent
	lastSeq uint64
	changed chan struct{} // closed and replaced on every change
	// subs holds the channel each subscription's C receives from.
	subs map[*Subscription]chan messages.DecisionEvent

	stop context.CancelFunc // ends the follower
	done chan struct{}      // closed when the follower has ended
}

// Start loads every sniper's last decision and follows new ones from the
// very next sequence, so nothing is missed or seen twice. rec is what the
// caller already read of the log (the sniper reads it once at start for
// the actors and the view); nil reads it here.
func Start(ctx context.Context, log *jetstream.Log, logger *slog.Logger, rec *jetstream.Recovery) (*View, error) {
	if rec == nil {
		r, err := log.Recover(ctx)
		if err != nil {
			return nil, fmt.Errorf("projection: %w", err)
		}
		rec = &r
	}
	v := &View{logger: logger, snaps: make(map[string]messages.DecisionEvent, len(rec.Decisions)), changed: make(chan struct{}),
		subs: map[*Subscription]chan messages.DecisionEvent{}, lastSeq: rec.Through}
	for _, d := range rec.Decisions {
		v.snaps[d.Item] = d.DecisionEvent
	}
	f, err := log.Follower(ctx, jetstream.FollowSpec{
		Name: "projection", Filters: []string{messages.DecisionFilter("*")}, From: rec.Through + 1, Logger: logger,
	})
	if err != nil {
		return nil, fmt.Errorf("projection: %w", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	v.stop, v.done = stop, make(chan struct{})
	go func() {
		defer close(v.done)
		_ = f.Run(runCtx, func(d jetstream.Delivery) {
			v.apply(d)
			f.Done(d.Seq)
		})
	}()
	return v, nil
}

func (v *View) apply(d jetstream.Delivery) {
	var s messages.DecisionEvent
	if err := json.Unmarshal(d.Data, &s); err != nil {
		v.logger.Warn("projection: undecodable decision skipped", "subject", d.Subject, "seq", d.Seq, "error", err)
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if d.Seq <= v.lastSeq {
		return // seen already
	}
	v.snaps[s.Item] = s
	v.lastSeq = d.Seq
	close(v.changed)
	v.changed = make(chan struct{})
	for sub, ch := range v.subs {
		select {
		case ch <- s:
		default:
			// A subscriber that cannot keep up is cut off rather than
			// allowed to hold the projection back; it resyncs on reconnect.
			delete(v.subs, sub)
			close(ch)
		}
	}
}

// Stop stops following the log.
func (v *View) Stop() {
	v.stop()
	<-v.done
	v.mu.Lock()
	defer v.mu.Unlock()
	for sub, ch := range v.subs {
		delete(v.subs, sub)
		close(ch)
	}
}

// Get returns the latest snapshot of item.
func (v *View) Get(item string) (messages.DecisionEvent, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s, ok := v.snaps[item]
	return s, ok
}

// List returns every sniper's latest snapshot, ordered by item.
func (v *View) List() []messages.DecisionEvent {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]messages.DecisionEvent, 0, len(v.snaps))
	for _, s := range v.snaps {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b messages.DecisionEvent) int { return strings.Compare(a.Item, b.Item) })
	return out
}

// Wait blocks until item's snapshot satisfies ok, or ctx ends.
func (v *View) Wait(ctx context.Context, item string, ok func(messages.DecisionEvent) bool) (messages.DecisionEvent, error) {
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
	c    <-chan messages.DecisionEvent
	once sync.Once
	stop func()
}

// NewSubscription makes a Subscription whose C is c and whose first Close
// calls stop. It is for other implementations of the view's reads, such as
// a test's in-memory view; a View's own come from Subscribe.
func NewSubscription(c <-chan messages.DecisionEvent, stop func()) *Subscription {
	return &Subscription{c: c, stop: stop}
}

// Subscribe starts a subscription; the current state is List().
func (v *View) Subscribe() *Subscription {
	ch := make(chan messages.DecisionEvent, 256)
	var sub *Subscription
	sub = NewSubscription(ch, func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		if _, ok := v.subs[sub]; ok { // not cut off or stopped already
			delete(v.subs, sub)
			close(ch)
		}
	})
	v.mu.Lock()
	v.subs[sub] = ch
	v.mu.Unlock()
	return sub
}

// C delivers snapshots; it is closed when the subscriber fell behind or the
// view stopped.
func (s *Subscription) C() <-chan messages.DecisionEvent { return s.c }

// Close ends the subscription.
func (s *Subscription) Close() { s.once.Do(s.stop) }

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
