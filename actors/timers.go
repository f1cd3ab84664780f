package actors

import (
	"container/heap"
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
)

// timerRetry is how soon a timer the log refused is tried again.
const timerRetry = time.Second

// timers is the one timer of the whole system for the snipers that wait
// for a moment (last-second bids): a heap of due times and one goroutine,
// never a timer or goroutine per auction. When a sniper's time comes it
// appends an in.timer input to the log, which the sniper then decides like
// any input: time reaches the core only through the log, so a replay
// decides the same, and a timer due while no instance ran fires at the
// next start, late, and says so in the history. The message id (item and
// due time) keeps a retried append from being stored twice; a timer the
// snapshot no longer asks for changes nothing in the core.
type timers struct {
	log    *jetstream.Log
	logger *slog.Logger
	now    func() time.Time

	mu   sync.Mutex
	due  map[string]int64 // item -> due (Unix ms), the one live entry per item
	heap dueHeap          // may hold stale entries: checked against due
	wake chan struct{}
}

func newTimers(log *jetstream.Log, logger *slog.Logger) *timers {
	return &timers{log: log, logger: logger, now: time.Now, due: map[string]int64{}, wake: make(chan struct{}, 1)}
}

// follow schedules what snapshot s asks for: its WakeAt while it is
// Waiting, nothing otherwise.
func (t *timers) follow(item string, s auction.Snapshot) {
	if s.State == auction.Waiting && s.WakeAt > 0 {
		t.set(item, s.WakeAt)
	} else {
		t.set(item, 0)
	}
}

// set makes item's timer due at dueMS (Unix ms); 0 cancels it.
func (t *timers) set(item string, dueMS int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.due[item]; ok && old == dueMS {
		return
	}
	if dueMS == 0 {
		delete(t.due, item)
		return
	}
	t.due[item] = dueMS
	heap.Push(&t.heap, dueEntry{item: item, due: dueMS, at: dueMS})
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Len is how many snipers have a timer: the figure that grows with the
// auctions (a map entry and a heap entry each).
func (t *timers) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.due)
}

// run fires the timers until ctx ends.
func (t *timers) run(ctx context.Context) {
	idle := time.NewTimer(time.Hour)
	defer idle.Stop()
	for {
		next, fire := t.popDue()
		for _, e := range fire {
			t.fire(ctx, e)
		}
		wait := time.Hour
		if next > 0 {
			wait = time.Until(time.UnixMilli(next))
		}
		idle.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
		case <-idle.C:
		}
	}
}

// popDue takes every live entry due now, and says when the next is due
// (0: none).
func (t *timers) popDue() (next int64, fire []dueEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now().UnixMilli()
	for t.heap.Len() > 0 {
		e := t.heap[0]
		if t.due[e.item] != e.due {
			heap.Pop(&t.heap) // replaced or cancelled since
			continue
		}
		if e.at > now {
			return e.at, fire
		}
		heap.Pop(&t.heap)
		delete(t.due, e.item)
		fire = append(fire, e)
	}
	return 0, fire
}

// fire appends e's timer input; one the log refuses is tried again soon.
func (t *timers) fire(ctx context.Context, e dueEntry) {
	fired := t.now().UnixMilli()
	actx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	_, err := t.log.Append(actx, messages.Subject(e.item, messages.KindIn, messages.TypeTimer),
		messages.NewTimer(e.item, e.due, fired), jetstream.WithMsgID(e.item+"/timer/"+strconv.FormatInt(e.due, 10)))
	if err != nil {
		if ctx.Err() == nil {
			t.logger.Warn("cannot store a sniper's timer; trying again", "item", e.item, "due", time.UnixMilli(e.due).UTC(), "error", err)
			t.retryLater(e)
		}
		return
	}
	if late := time.Duration(fired-e.due) * time.Millisecond; late > time.Second {
		t.logger.Warn("a sniper's timer fired late", "item", e.item, "late", late.Round(time.Millisecond))
	}
}

func (t *timers) retryLater(e dueEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, replaced := t.due[e.item]; replaced {
		return
	}
	// Tried again in a second, under the same id (the due time is the
	// id): the run loop's wait covers it, no goroutine of its own.
	t.due[e.item] = e.due
	heap.Push(&t.heap, dueEntry{item: e.item, due: e.due, at: t.now().Add(timerRetry).UnixMilli()})
}

type dueEntry struct {
	item string
	due  int64 // what the sniper asked for (Unix ms)
	at   int64 // when to try: due, or later after a refused append
}

// dueHeap orders entries by when to try them.
type dueHeap []dueEntry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
