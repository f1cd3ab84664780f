package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"sniper/jetstream"
	"sniper/messages"
)

// System runs the sniper actors: the supervisor, one sniper per live
// auction, and the feed of start commands that creates new snipers.
type System struct {
	deps       Deps
	as         *actor.ActorSystem
	supervisor *actor.PID

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	// quiesce tells every sniper's feed to stop pulling and finish what it
	// holds (see follow).
	quiesce context.CancelFunc
}

// StartSystem recovers every unfinished sniper from its last snapshot and
// starts following new start commands.
func StartSystem(ctx context.Context, deps Deps) (*System, error) {
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	quiesceCtx, quiesce := context.WithCancel(context.Background())
	deps.quiesce, deps.feeds = quiesceCtx, newFeedTracker()
	as := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return deps.Logger.With("component", "protoactor")
	}))
	sup, err := as.Root.SpawnNamed(SupervisorProps(deps), "snipers")
	if err != nil {
		quiesce()
		return nil, fmt.Errorf("spawn supervisor: %w", err)
	}
	s := &System{deps: deps, as: as, supervisor: sup, quiesce: quiesce}
	if err := s.recover(ctx); err != nil {
		quiesce()
		s.stopActors()
		return nil, err
	}
	cons, err := deps.Log.StartConsumer(ctx)
	if err != nil {
		quiesce()
		s.stopActors()
		return nil, err
	}
	feedCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go s.followStarts(feedCtx, cons)
	return s, nil
}

// recover spawns a sniper for every started auction that is not finished.
// It reads one snapshot per auction, not the history.
func (s *System) recover(ctx context.Context) error {
	starts, err := s.deps.Log.StartedItems(ctx)
	if err != nil {
		return fmt.Errorf("recover snipers: %w", err)
	}
	snaps, err := s.deps.Log.Snapshots(ctx)
	if err != nil {
		return fmt.Errorf("recover snipers: %w", err)
	}
	finished := make(map[string]bool, len(snaps))
	for _, sn := range snaps {
		finished[sn.Item] = sn.State.Terminal()
	}
	n := 0
	for _, st := range starts {
		if finished[st.Item] {
			continue
		}
		if err := s.spawn(ctx, st.Item); err != nil {
			return fmt.Errorf("recover sniper for %s: %w", st.Item, err)
		}
		n++
	}
	s.deps.Logger.Info("snipers recovered", "running", n, "finished", len(starts)-n)
	return nil
}

func (s *System) spawn(ctx context.Context, item string) error {
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	res, err := s.as.Root.RequestFuture(s.supervisor, SpawnSniper{Item: item}, timeout).Result()
	if err != nil {
		return fmt.Errorf("spawn sniper for %s: %w", item, err)
	}
	if pid, _ := res.(*actor.PID); pid == nil {
		return fmt.Errorf("spawn sniper for %s: supervisor refused", item)
	}
	return nil
}

// followStarts spawns a sniper for each new start command, and acks the
// command only once the sniper exists.
func (s *System) followStarts(ctx context.Context, cons natsjs.Consumer) {
	defer s.wg.Done()
	// Stopping quiesces this feed: start commands already delivered still
	// get their sniper (and their ack) before the actors stop.
	follow(context.Background(), ctx, s.deps.Log, s.deps.Logger, "start command feed", cons, s.deps.Log.StartConsumer, func(msg natsjs.Msg) bool {
		item, _, _, err := messages.ParseSubject(msg.Subject())
		if err == nil {
			err = messages.ValidItem(item)
		}
		if err != nil {
			s.deps.Logger.Warn("ignoring start command on a bad subject", "subject", msg.Subject(), "error", err)
			_ = msg.Term()
			return true
		}
		if err := s.spawn(context.Background(), item); err != nil {
			s.deps.Logger.Error("cannot start sniper", "item", item, "error", err)
			_ = msg.NakWithDelay(time.Second)
			return true
		}
		_ = msg.Ack()
		return true
	})
}

// Pull settings of every follower: a pull request lives 10 s and the
// server sends a heartbeat every 2 s while it waits, so a pull lost in a
// server restart is noticed (and re-issued) within about 4 s.
const (
	pullExpiry    = 10 * time.Second
	pullHeartbeat = 2 * time.Second
)

// drainGrace bounds how long a follower that stops pulling waits for the
// messages already in its iterator's buffer.
const drainGrace = 2 * time.Second

// follow hands each message of a durable consumer to handle (which returns
// false to stop) until one of two contexts ends:
//
//   - quiesce: stop pulling, finish what the server already delivered
//     (handle it as usual, so it is acked), then return. This is the
//     graceful stop: nothing is left delivered-but-unacked, which after a
//     restart of the server would be redelivered only after the AckWait (a
//     Nak does not outlive the server).
//   - ctx: stop at once; what is delivered and not handled is given back
//     (Nak), for a server that stays up (another instance, a restarted
//     actor).
//
// The nats.go iterator rides out disconnections and server restarts by
// itself (it re-issues its pull on reconnect) and reports missed
// heartbeats, after which it pulls again: both are logged and followed on.
// When the iterator ends for any other reason (the consumer was deleted,
// the server answered a bad request), the consumer is opened again with
// reopen, with backoff: a follower must never go quietly deaf.
func follow(ctx, quiesce context.Context, l *jetstream.Log, logger *slog.Logger, what string, cons natsjs.Consumer,
	reopen func(context.Context) (natsjs.Consumer, error), handle func(natsjs.Msg) bool) {
	stopped := func() bool { return ctx.Err() != nil || quiesce.Err() != nil }
	delay := 100 * time.Millisecond
	wait := func() bool {
		t := time.NewTimer(delay)
		defer t.Stop()
		delay = min(2*delay, 5*time.Second)
		select {
		case <-ctx.Done():
			return false
		case <-quiesce.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for !stopped() {
		if cons == nil {
			opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := reopen(opCtx)
			cancel()
			if err != nil {
				if stopped() {
					return
				}
				logger.Error("cannot reopen the "+what+"; retrying", "error", err, "retry_in", delay)
				if !wait() {
					return
				}
				continue
			}
			logger.Info(what + " reopened")
			cons = c
		}
		err := drain(ctx, quiesce, l, logger, what, cons, handle)
		if err == nil || stopped() {
			return
		}
		logger.Error(what+" stopped; reopening it", "error", err)
		cons = nil
		if !wait() {
			return
		}
	}
}

// drain runs one iterator over cons (see follow); it returns nil when it
// should not be reopened (stopped, handle said stop, the connection is
// closed for good).
func drain(ctx, quiesce context.Context, l *jetstream.Log, logger *slog.Logger, what string, cons natsjs.Consumer, handle func(natsjs.Msg) bool) error {
	it, err := cons.Messages(natsjs.PullExpiry(pullExpiry), natsjs.PullHeartbeat(pullHeartbeat))
	if err != nil {
		return err
	}
	defer it.Stop()
	// Drain unsubscribes the iterator's inbox: the server hands nothing
	// more to a pull request nobody listens to, and Next returns what is
	// already buffered, then ErrMsgIteratorClosed. Without a connection
	// there is nothing to drain.
	nextCtx, cancelNext := context.WithCancel(context.Background())
	defer cancelNext()
	var once sync.Once
	stopPulling := func() {
		once.Do(func() {
			if l.Available() != nil {
				it.Stop()
				return
			}
			it.Drain()
			time.AfterFunc(drainGrace, cancelNext)
		})
	}
	defer context.AfterFunc(ctx, stopPulling)()
	defer context.AfterFunc(quiesce, stopPulling)()
	missed := false
	for {
		msg, err := it.Next(natsjs.NextContext(nextCtx))
		switch {
		case err == nil && ctx.Err() != nil:
			_ = msg.Nak()
			continue
		case err == nil:
		case ctx.Err() != nil, quiesce.Err() != nil, errors.Is(err, natsjs.ErrConnectionClosed):
			return nil
		case errors.Is(err, natsjs.ErrNoHeartbeat):
			// The iterator pulls again by itself; say so once per outage.
			if !missed {
				logger.Warn(what+": no heartbeat from the server; pulling again", "error", err)
				missed = true
			}
			continue
		default:
			return err
		}
		if missed {
			logger.Info(what + ": receiving again")
			missed = false
		}
		if !handle(msg) {
			if ctx.Err() != nil {
				continue // give back what is still buffered
			}
			return nil
		}
	}
}

// feedTracker counts the running input feeds, so that Stop can wait until
// each has finished what the server already delivered to it.
type feedTracker struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{} // closed once closed and n == 0
}

func newFeedTracker() *feedTracker { return &feedTracker{idle: make(chan struct{})} }

// add registers a feed; false means the system is stopping: start none.
func (f *feedTracker) add() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.n++
	return true
}

func (f *feedTracker) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.closed && f.n == 0 {
		close(f.idle)
	}
}

// closeAndWait refuses new feeds, runs quiesce, and waits (up to timeout)
// for the running ones to end.
func (f *feedTracker) closeAndWait(quiesce func(), timeout time.Duration) bool {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		if f.n == 0 {
			close(f.idle)
		}
	}
	f.mu.Unlock()
	quiesce()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-f.idle:
		return true
	case <-t.C:
		return false
	}
}

// ActorSystem is the system the snipers run in, for the bridges.
func (s *System) ActorSystem() *actor.ActorSystem { return s.as }

// Stop stops taking new auctions, lets every sniper decide the inputs the
// server already delivered to it, and stops the actors. Inputs not yet
// delivered stay in the log for the next start. Calling it again does
// nothing.
func (s *System) Stop() {
	s.stopOnce.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		s.wg.Wait()
		if !s.deps.feeds.closeAndWait(s.quiesce, 2*drainGrace) {
			s.deps.Logger.Warn("some sniper feeds did not finish in time; their inputs come back after the AckWait")
		}
		s.stopActors()
	})
}

func (s *System) stopActors() {
	// ActorSystem.Shutdown stops no actors: poison the root supervisor,
	// whose children stop after the message they are handling.
	if err := s.as.Root.PoisonFuture(s.supervisor).Wait(); err != nil {
		s.deps.Logger.Warn("supervisor did not stop in time", "error", err)
	}
	s.as.Shutdown()
}
