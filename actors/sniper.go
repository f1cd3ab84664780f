// Package actors is the sniper's imperative shell: protoactor-go actors that
// feed the log's inputs to the pure auction core and write its decisions
// back, plus the bridges to the auction house.
package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
)

// Fault points name the moments a test may crash the process at. They sit
// where a crash is most likely to lose or repeat something.
const (
	FaultBeforeDecide      = "before-decide"       // an input received, nothing written
	FaultAfterCommit       = "after-commit"        // decision in the log, the checkpoint not past its input
	FaultAfterSend         = "after-send"          // BID on the wire, not recorded as sent
	FaultAfterInboundWrite = "after-inbound-write" // not used by the core actors
	// FaultBetweenGroupCommits: a snipe group committed one member's
	// decision of an input and not yet the others' it implies.
	FaultBetweenGroupCommits = "between-group-commits"
)

// FaultHook is called at every fault point; production code passes nil.
type FaultHook func(point, item string)

// Deps is what the actors need from the outside world.
type Deps struct {
	Log    *jetstream.Log
	Logger *slog.Logger
	Fault  FaultHook
	// Metrics is told about each decision; nil is allowed.
	Metrics DecisionObserver
	// Writes is told whether the log took each write the actors made (a
	// decision, an auction event); nil is allowed. It is how readiness
	// learns that the log refuses writes (full, unreachable).
	Writes WriteObserver
	// UndeliverableFor bounds how long the outbound bridge retries a
	// request the XMPP server bounces (0: DefaultUndeliverableFor).
	UndeliverableFor time.Duration
	// CheckpointEvery is how often the followers of the log write their
	// checkpoints (0: jetstream.DefaultCheckpointEvery).
	CheckpointEvery time.Duration
	// RetryDelay is how soon a sniper tries again an input whose decision
	// the log did not take (0: DefaultRetryDelay).
	RetryDelay time.Duration
	// PassivateAfter is how long a sniper with no input may keep its
	// actor: one sweep of the supervisor every PassivateAfter stops those
	// that got nothing since the previous one (0: DefaultPassivateAfter;
	// negative: never).
	PassivateAfter time.Duration
	// Recovered is every auction's last decision, if the caller read it
	// already (the app reads it once for the actors and the projection);
	// nil: StartSystem reads it.
	Recovered *jetstream.Recovery
	// Instance names the instance deciding, written into each decision
	// (messages.DecisionEvent.By) so the history says who decided what
	// when several instances share the log.
	Instance string

	// Set by StartSystem: the system's lifetime (hard stop), the input
	// follower's Done, and the system's one timer.
	runCtx context.Context
	done   func(seq uint64)
	timers *timers
}

// DefaultPassivateAfter is how often the supervisor stops idle snipers:
// an idle auction keeps its last decision in the supervisor's memory (a
// few hundred bytes) instead of an actor (about 2 KiB).
const DefaultPassivateAfter = 30 * time.Second

// commitTimeout bounds one attempt to decide an input (the reload and the
// commit): a commit whose answer was lost with a server is retried (its
// message id makes the retry harmless) rather than waited on.
const commitTimeout = 5 * time.Second

// DefaultRetryDelay is how soon a sniper tries an undecided input again.
const DefaultRetryDelay = time.Second

func (d Deps) retryDelay() time.Duration {
	if d.RetryDelay > 0 {
		return d.RetryDelay
	}
	return DefaultRetryDelay
}

func (d Deps) ctx() context.Context {
	if d.runCtx != nil {
		return d.runCtx
	}
	return context.Background()
}

func (d Deps) inputDone(seq uint64) {
	if d.done != nil {
		d.done(seq)
	}
}

// WriteObserver learns the outcome of the actors' writes to the log.
type WriteObserver interface {
	WriteFailed(err error)
	WriteSucceeded()
}

func (d Deps) writeFailed(err error) {
	if d.Writes != nil {
		d.Writes.WriteFailed(err)
	}
}

func (d Deps) writeSucceeded() {
	if d.Writes != nil {
		d.Writes.WriteSucceeded()
	}
}

// DecisionObserver learns about every decision, for metrics.
type DecisionObserver interface {
	Decided(input string, before, after auction.State, took time.Duration)
	// Committed reports how long writing one decision to the log took.
	Committed(took time.Duration)
	Restarted(item string)
}

func (d Deps) fault(point, item string) {
	if d.Fault != nil {
		d.Fault(point, item)
	}
}

// input is one message of the log a sniper decides on (a command or an
// auction event), handed to it by the supervisor in log order.
type input struct{ jetstream.Delivery }

// retry asks a sniper to try its oldest undecided input again.
type retry struct{}

// passivate asks an idle sniper to hand its state back to the supervisor,
// which stops it; it answers passivated.
type passivate struct{}

// passivated is a sniper's answer to passivate: ok with its last decision,
// or not ok because it holds inputs.
type passivated struct {
	item string
	ok   bool
	last jetstream.StoredDecision
}

// sniperFinished tells the supervisor that a sniper reached a final state:
// the supervisor stops routing to it and stops it.
type sniperFinished struct{ item string }

// sniper is the actor for one auction: it owns the auction's state and is
// the only writer of its decisions. Inputs wait in its own queue until
// decided, so a decision the log does not take yet (down, full) is retried
// without losing the order of the inputs behind it, and without holding
// any other auction.
type sniper struct {
	deps Deps
	item string
	log  *slog.Logger

	snap  messages.DecisionEvent
	fence uint64 // sequence of snap in the log, 0 if none
	// stale says snap may not be the log's: a commit failed, or the
	// sniper panicked. The next attempt reloads before deciding.
	stale bool
	// failures counts attempts failed in a row, to keep the log readable
	// while the log refuses writes for a long time.
	failures int

	queue    []jetstream.Delivery // handed over, not decided yet, in log order
	retryAt  *time.Timer          // set while a retry is scheduled
	finished bool                 // the supervisor was told
}

// newSniperProps builds a sniper starting from its last decision in the
// log (nil: the auction has none). A sniper that protoactor restarts
// (after a panic outside a decision) reloads from the log instead.
func newSniperProps(deps Deps, item string, last *jetstream.StoredDecision) *actor.Props {
	incarnations := 0
	return actor.PropsFromProducer(func() actor.Actor {
		s := &sniper{deps: deps, item: item, log: deps.Logger.With("item", item)}
		s.snap = messages.DecisionEvent{Snapshot: auction.Snapshot{Item: item}}
		switch {
		case incarnations > 0:
			s.stale = true
		case last != nil:
			s.snap, s.fence = last.DecisionEvent, last.Seq
		}
		incarnations++
		return s
	})
}

func (s *sniper) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Restarting:
		if s.deps.Metrics != nil {
			s.deps.Metrics.Restarted(s.item)
		}
	case *actor.Stopping:
		if s.retryAt != nil {
			s.retryAt.Stop()
		}
	case input:
		s.queue = append(s.queue, m.Delivery)
		if s.retryAt == nil {
			s.process(ctx)
		}
	case retry:
		s.retryAt = nil
		s.process(ctx)
	case passivate:
		// Idle and settled: hand the state back and go; the supervisor
		// brings the sniper back on the auction's next input.
		idle := len(s.queue) == 0 && s.retryAt == nil && !s.stale && !s.finished
		reply := passivated{item: s.item, ok: idle}
		if idle {
			reply.last = jetstream.StoredDecision{Seq: s.fence, DecisionEvent: s.snap}
		}
		ctx.Send(ctx.Parent(), reply)
	}
}

// process decides the queued inputs in order until the queue is empty or
// one cannot be decided now; that one is tried again later.
func (s *sniper) process(ctx actor.Context) {
	for len(s.queue) > 0 {
		in := s.queue[0]
		if !s.handleSafely(in) {
			s.scheduleRetry(ctx)
			return
		}
		s.queue = s.queue[1:]
		s.deps.inputDone(in.Seq)
		if s.snap.State.Final() && !s.finished {
			s.finished = true
			s.log.Debug("sniper finished", "state", s.snap.State)
			ctx.Send(ctx.Parent(), sniperFinished{item: s.item})
		}
	}
}

// scheduleRetry asks for a retry in a second, or sooner after a panic.
func (s *sniper) scheduleRetry(ctx actor.Context) {
	if s.retryAt != nil {
		return
	}
	root, self := ctx.ActorSystem().Root, ctx.Self()
	s.retryAt = time.AfterFunc(s.deps.retryDelay(), func() { root.Send(self, retry{}) })
}

// handleSafely is handle with a panic (a bug, or a test's fault point)
// turned into a retry from the state in the log: the input stays at the
// head of the queue, so nothing behind it overtakes it.
func (s *sniper) handleSafely(in jetstream.Delivery) (settled bool) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("sniper failed while deciding; retrying from its last decision in the log", "seq", in.Seq, "panic", r)
			if s.deps.Metrics != nil {
				s.deps.Metrics.Restarted(s.item)
			}
			s.stale = true
			settled = false
		}
	}()
	return s.handle(in)
}

// handle decides one input and commits the decision; it reports whether
// the input is settled (decided now or before). An input at or below the
// state's input_seq was decided before (read again after a restart from
// an older checkpoint): it is skipped.
func (s *sniper) handle(in jetstream.Delivery) bool {
	opCtx, cancel := context.WithTimeout(s.deps.ctx(), commitTimeout)
	defer cancel()
	if s.stale {
		if err := s.reload(opCtx); err != nil {
			s.attemptFailed(in.Seq, fmt.Errorf("reload the last decision: %w", err))
			return false
		}
		s.stale = false
	}
	for attempt := 1; ; attempt++ {
		if in.Seq <= s.snap.InputSeq {
			s.log.Debug("input already decided", "seq", in.Seq)
			return true
		}
		if s.snap.State.Final() {
			// Later inputs stay in the log, undecided, as history.
			return true
		}
		s.deps.fault(FaultBeforeDecide, s.item)
		err := s.decide(opCtx, in)
		if err == nil {
			break
		}
		if errors.Is(err, jetstream.ErrConflict) && attempt < 3 {
			s.log.Warn("another writer decided first; reloading", "seq", in.Seq, "error", err)
			if rerr := s.reload(opCtx); rerr == nil {
				continue
			}
		}
		s.attemptFailed(in.Seq, err)
		// The state in memory may be ahead of or behind the log now.
		s.stale = true
		return false
	}
	if s.failures > 0 {
		s.log.Info("decisions committed again", "seq", in.Seq, "failed_attempts", s.failures)
		s.failures = 0
	}
	s.deps.fault(FaultAfterCommit, s.item)
	return true
}

func (s *sniper) reload(ctx context.Context) error {
	stored, err := s.deps.Log.LastDecision(ctx, s.item)
	switch {
	case errors.Is(err, jetstream.ErrNotFound):
		s.snap = messages.DecisionEvent{Snapshot: auction.Snapshot{Item: s.item}}
		s.fence = 0
	case err != nil:
		return err
	default:
		s.snap, s.fence = stored.DecisionEvent, stored.Seq
	}
	return nil
}

// attemptFailed reports a decision the log did not take. The first failure
// of a run is an error line, then one every 30 attempts (about every 30 s).
func (s *sniper) attemptFailed(seq uint64, err error) {
	if !errors.Is(err, jetstream.ErrConflict) {
		s.deps.writeFailed(err)
	}
	s.failures++
	if s.failures != 1 && s.failures%30 != 0 {
		return
	}
	msg := "decision not committed; the input is held and retried"
	if errors.Is(err, jetstream.ErrFull) {
		msg = "the event log is full: decision not committed; the input is held and retried until space is freed"
	}
	s.log.Error(msg, "seq", seq, "attempts", s.failures, "error", err)
}

// decide applies the core to one stored input and commits the result.
func (s *sniper) decide(ctx context.Context, in jetstream.Delivery) error {
	started := time.Now()
	input, err := messages.DecodeInput(in.Subject, in.Data)
	before := s.snap.Snapshot
	after, outs := before, []auction.Output(nil)
	inputType := "invalid"
	if err != nil {
		// A payload nobody can decode is still decided (as a no-op) so the
		// log shows it was seen; the reason is logged, not guessed at.
		s.log.Warn("undecodable input ignored", "seq", in.Seq, "subject", in.Subject, "error", err)
	} else {
		_, _, inputType, _ = messages.ParseSubject(in.Subject)
		after, outs = auction.Decide(before, input)
	}
	if m, ok := input.(auction.Malformed); ok && after.State == auction.Failed && before.State != auction.Failed {
		s.log.Error(fmt.Sprintf("Could not translate message %q because %q", m.Body, m.Reason), "seq", in.Seq)
	}
	next, err := messages.NewDecision(after, in.Seq, outs)
	if err != nil {
		return err
	}
	next.By = s.deps.Instance
	next.From = before.State
	commitStart := time.Now()
	seq, err := s.deps.Log.Commit(ctx, jetstream.Decision{Item: s.item, Fence: s.fence, Event: next})
	if err != nil {
		return err
	}
	if s.deps.Metrics != nil {
		s.deps.Metrics.Committed(time.Since(commitStart))
	}
	s.deps.writeSucceeded()
	s.snap, s.fence = next, seq
	if s.deps.timers != nil && (after.State == auction.Waiting || before.WakeAt != after.WakeAt) {
		s.deps.timers.follow(s.item, after)
	}
	if before.State != after.State {
		s.log.Info("sniper state changed", "from", string(before.State), "to", string(after.State),
			"last_price", after.LastPrice, "last_bid", after.LastBid, "seq", in.Seq)
	}
	if s.deps.Metrics != nil {
		s.deps.Metrics.Decided(inputType, before.State, after.State, time.Since(started))
	}
	return nil
}
