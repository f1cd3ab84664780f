package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sniper/api"
	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/projection"
)

// The API's tests run on these in-memory fakes of its two seams: no NATS
// server, no actors. What the real ones do that the handlers rely on is
// tested in their own packages (jetstream: FirstOfSubject, message ids,
// Available after the connection closed; projection: Wait, subscriptions).

// fakeLog is an in-memory api.Log, and it plays the sniper. Appends get
// increasing sequences; an append with jetstream.FirstOfSubject on a
// subject that holds a message fails with jetstream.ErrExists (checked
// before the message id, as the SNIPER stream does: a second start with
// the same id is refused, not acknowledged again); a message id seen
// before returns the sequence it got then and stores nothing.
type fakeLog struct {
	mu      sync.Mutex
	recs    []jetstream.Record
	ids     map[string]uint64 // message id -> its sequence
	down    error             // what Available returns
	changed chan struct{}     // closed and replaced on every append and setDown
}

var _ api.Log = (*fakeLog)(nil)

func newFakeLog() *fakeLog {
	return &fakeLog{ids: map[string]uint64{}, changed: make(chan struct{})}
}

// setDown makes the log unreachable with err (nil: reachable again). While
// it is down, Available returns err, and Append and History wait for their
// context to end, as a publish does while nats.go reconnects: a handler
// that did not check Available first would answer late.
func (l *fakeLog) setDown(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = err
	l.notify()
}

// notify wakes whoever waits on the log; l.mu is held.
func (l *fakeLog) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *fakeLog) Available() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.down
}

// unreachable waits for ctx to end when the log is down, and returns the
// error a caller then gets; nil when the log is up.
func (l *fakeLog) unreachable(ctx context.Context, what string) error {
	l.mu.Lock()
	down := l.down
	l.mu.Unlock()
	if down == nil {
		return nil
	}
	<-ctx.Done()
	return fmt.Errorf("%s: %w", what, ctx.Err())
}

func (l *fakeLog) Append(ctx context.Context, subject string, payload any, opts ...jetstream.AppendOption) (uint64, error) {
	data, err := json.Marshal(payload)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", subject, err)
	}
	if err := l.unreachable(ctx, "append "+subject); err != nil {
		return 0, err
	}
	msgID, first := jetstream.AppendOptions(opts...)
	l.mu.Lock()
	defer l.mu.Unlock()
	if first && slices.ContainsFunc(l.recs, func(r jetstream.Record) bool { return r.Subject == subject }) {
		return 0, fmt.Errorf("append %s: %w", subject, jetstream.ErrExists)
	}
	if seq, ok := l.ids[msgID]; ok && msgID != "" {
		return seq, nil
	}
	seq := uint64(len(l.recs)) + 1
	l.recs = append(l.recs, jetstream.Record{Seq: seq, Subject: subject, Time: time.Now(), Data: data})
	if msgID != "" {
		l.ids[msgID] = seq
	}
	l.notify()
	return seq, nil
}

func (l *fakeLog) History(ctx context.Context, item string) ([]jetstream.Record, error) {
	if err := l.unreachable(ctx, "history of "+item); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	prefix := strings.TrimSuffix(messages.ItemFilter(item), ">")
	var out []jetstream.Record
	for _, r := range l.recs {
		if strings.HasPrefix(r.Subject, prefix) {
			out = append(out, r)
		}
	}
	return out, nil
}

// playSniper decides, until the test ends, every input appended to l (in
// log order, one at a time, as the input follower hands them out) with
// the real core, auction.Decide, the way the actors do: an auction's
// inputs before its start, and after it finished, get no decision; every
// other input gets one, appended to l and shown in v. While l is down it
// waits, as a sniper's commit would be retried.
func playSniper(t testing.TB, l *fakeLog, v *fakeView) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	go func() {
		defer close(done)
		snaps := map[string]messages.DecisionEvent{}
		next := 0 // index in l.recs of the next record to read
		for {
			l.mu.Lock()
			var recs []jetstream.Record
			if l.down == nil {
				recs = l.recs[next:len(l.recs):len(l.recs)]
			}
			changed := l.changed
			l.mu.Unlock()
			for _, rec := range recs {
				next++
				item, kind, _, err := messages.ParseSubject(rec.Subject)
				if err != nil || (kind != messages.KindCmd && kind != messages.KindIn) {
					continue
				}
				input, err := messages.DecodeInput(rec.Subject, rec.Data)
				last, started := snaps[item]
				_, isStart := input.(auction.Start)
				if err != nil || (!started && !isStart) || last.State.Final() {
					continue
				}
				before := last.Snapshot
				before.Item = item
				after, outs := auction.Decide(before, input)
				d, err := messages.NewDecision(after, rec.Seq, outs)
				if err != nil {
					panic(err) // the core asked for a request nobody can send
				}
				if _, err := l.Append(ctx, messages.DecisionSubject(item, d.Type), d); err != nil {
					return // the test ended
				}
				snaps[item] = d
				v.publish(d)
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}()
}

// fakeView is an in-memory api.Projection, which shows what the test (or
// playSniper) publishes.
type fakeView struct {
	mu      sync.Mutex
	snaps   map[string]messages.DecisionEvent
	changed chan struct{} // closed and replaced on every publish
	subs    map[*projection.Subscription]chan messages.DecisionEvent
}

var _ api.Projection = (*fakeView)(nil)

func newFakeView() *fakeView {
	return &fakeView{snaps: map[string]messages.DecisionEvent{}, changed: make(chan struct{}),
		subs: map[*projection.Subscription]chan messages.DecisionEvent{}}
}

// publish makes d its auction's last decision and hands it to every
// subscriber; one whose buffer is full is cut off, as projection.View does.
func (v *fakeView) publish(d messages.DecisionEvent) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.snaps[d.Item] = d
	close(v.changed)
	v.changed = make(chan struct{})
	for sub, ch := range v.subs {
		select {
		case ch <- d:
		default:
			delete(v.subs, sub)
			close(ch)
		}
	}
}

func (v *fakeView) Get(item string) (messages.DecisionEvent, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	d, ok := v.snaps[item]
	return d, ok
}

func (v *fakeView) List() []messages.DecisionEvent {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]messages.DecisionEvent, 0, len(v.snaps))
	for _, d := range v.snaps {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b messages.DecisionEvent) int { return strings.Compare(a.Item, b.Item) })
	return out
}

func (v *fakeView) Wait(ctx context.Context, item string, ok func(messages.DecisionEvent) bool) (messages.DecisionEvent, error) {
	for {
		v.mu.Lock()
		d, found := v.snaps[item]
		changed := v.changed
		v.mu.Unlock()
		if found && ok(d) {
			return d, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return d, ctx.Err()
		}
	}
}

func (v *fakeView) Subscribe() *projection.Subscription {
	ch := make(chan messages.DecisionEvent, 256)
	var sub *projection.Subscription
	sub = projection.NewSubscription(ch, func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		if _, ok := v.subs[sub]; ok {
			delete(v.subs, sub)
			close(ch)
		}
	})
	v.mu.Lock()
	v.subs[sub] = ch
	v.mu.Unlock()
	return sub
}

// newFakes returns a fake log and view with the sniper playing on them,
// until the test ends.
func newFakes(t testing.TB) (*fakeLog, *fakeView) {
	l, v := newFakeLog(), newFakeView()
	playSniper(t, l, v)
	return l, v
}
