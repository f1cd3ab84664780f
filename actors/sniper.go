// Package actors is the sniper's imperative shell: protoactor-go actors that
// feed the log's inputs to the pure auction core and write its decisions
// back, plus the bridges to the auction house.
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

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
)

// Fault points name the moments a test may crash the process at. They sit
// where a crash is most likely to lose or repeat something.
const (
	FaultBeforeDecide      = "before-decide"       // an input received, nothing written
	FaultAfterCommit       = "after-commit"        // decision in the log, input not acked
	FaultAfterSend         = "after-send"          // BID on the wire, request not acked
	FaultAfterInboundWrite = "after-inbound-write" // not used by the core actors
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

	// Set by StartSystem: ends when the system stops (the snipers' feeds
	// stop pulling and finish what they hold), and counts those feeds.
	quiesce context.Context
	feeds   *feedTracker
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
	// Committed reports how long writing one decision to the log took and
	// how many messages it held (1: a plain publish, more: an atomic batch).
	Committed(messages int, took time.Duration)
	Restarted(item string)
}

func (d Deps) fault(point, item string) {
	if d.Fault != nil {
		d.Fault(point, item)
	}
}

// input is one message of the auction's consumer, delivered to the actor by
// its feeder goroutine; done tells the feeder it may fetch the next one.
type input struct {
	msg  natsjs.Msg
	done chan struct{}
}

// sniper is the actor for one auction: it owns the auction's snapshot and
// is the only writer of its decisions.
type sniper struct {
	deps Deps
	item string
	log  *slog.Logger

	snap  messages.SnapshotEvent
	fence uint64 // sequence of snap in the log, 0 if none
	// stale says snap may not be the log's: a commit failed and the
	// reload after it did too. The next input reloads before deciding.
	stale bool
	// failures counts commits failed in a row, to keep the log readable
	// while the log refuses writes for a long time.
	failures int

	stopFeeder context.CancelFunc
	feederDone sync.WaitGroup
}

func newSniperProps(deps Deps, item string) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &sniper{deps: deps, item: item, log: deps.Logger.With("item", item)}
	})
}

func (s *sniper) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if err := s.start(ctx); err != nil {
			// Panicking hands the failure to the supervisor, which retries
			// the start with its restart policy.
			panic(fmt.Errorf("start sniper for %s: %w", s.item, err))
		}
	case *actor.Restarting:
		s.stop()
		if s.deps.Metrics != nil {
			s.deps.Metrics.Restarted(s.item)
		}
	case *actor.Stopping:
		s.stop()
	case input:
		s.handle(ctx, m)
	}
}

// start loads the last snapshot and starts feeding the auction's inputs.
func (s *sniper) start(ctx actor.Context) error {
	opCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.reload(opCtx); err != nil {
		return err
	}
	if s.snap.State.Terminal() {
		s.finish(ctx)
		return nil
	}
	cons, err := s.deps.Log.InputConsumer(opCtx, s.item)
	if err != nil {
		return err
	}
	feedCtx, stop := context.WithCancel(context.Background())
	s.stopFeeder = stop
	if s.deps.feeds == nil || s.deps.feeds.add() {
		s.feederDone.Add(1)
		go s.feed(feedCtx, ctx.ActorSystem().Root, ctx.Self(), cons)
	}
	s.log.Debug("sniper started", "state", s.snap.State, "input_seq", s.snap.InputSeq)
	return nil
}

func (s *sniper) reload(ctx context.Context) error {
	stored, err := s.deps.Log.LastSnapshot(ctx, s.item)
	switch {
	case errors.Is(err, jetstream.ErrNotFound):
		s.snap = messages.NewSnapshot(auction.Snapshot{Item: s.item}, 0)
		s.fence = 0
	case err != nil:
		return err
	default:
		s.snap = stored.SnapshotEvent
		s.fence = stored.Seq
	}
	return nil
}

// feed hands the actor one input at a time and waits until it is decided,
// so the actor's mailbox never holds more than one. When the system stops
// (quiesce) the feed stops pulling and finishes what the server already
// delivered; when the actor stops on its own (finished, restarted) the
// input not yet taken is given back at once (Nak). See follow.
func (s *sniper) feed(ctx context.Context, root *actor.RootContext, self *actor.PID, cons natsjs.Consumer) {
	defer s.feederDone.Done()
	quiesce := s.deps.quiesce
	if s.deps.feeds != nil {
		defer s.deps.feeds.done()
	} else {
		quiesce = context.Background()
	}
	reopen := func(ctx context.Context) (natsjs.Consumer, error) { return s.deps.Log.InputConsumer(ctx, s.item) }
	follow(ctx, quiesce, s.deps.Log, s.log, "input feed", cons, reopen, func(msg natsjs.Msg) bool {
		done := make(chan struct{})
		root.Send(self, input{msg: msg, done: done})
		select {
		case <-done:
			return true
		case <-ctx.Done():
			_ = msg.Nak()
			return false
		}
	})
}

func (s *sniper) stop() {
	if s.stopFeeder != nil {
		s.stopFeeder()
		s.feederDone.Wait()
		s.stopFeeder = nil
	}
}

// handle decides one input and commits the decision before acking it. An
// input at or below the snapshot's input_seq was decided before (a
// redelivery after a crash between commit and ack): ack it and move on.
func (s *sniper) handle(ctx actor.Context, in input) {
	settled := false
	defer func() {
		// A panic (a bug, or a test's fault point) leaves the input
		// unacknowledged: give it back now so the restarted sniper gets it
		// without waiting out the AckWait.
		if !settled {
			_ = in.msg.Nak()
		}
		close(in.done)
		if r := recover(); r != nil {
			// Say which auction failed; the supervisor restarts it.
			s.log.Error("sniper failed while deciding; restarting it from its last snapshot", "panic", r)
			panic(r)
		}
	}()
	meta, err := in.msg.Metadata()
	if err != nil {
		s.log.Error("input without metadata, dropped", "error", err)
		settled = true
		_ = in.msg.Term()
		return
	}
	seq := meta.Sequence.Stream
	opCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s.stale {
		if err := s.reload(opCtx); err != nil {
			s.log.Error("cannot reload the snapshot; input held for later", "seq", seq, "error", err)
			settled = true
			_ = in.msg.NakWithDelay(time.Second)
			return
		}
		s.stale = false
	}
	for attempt := 1; ; attempt++ {
		if seq <= s.snap.InputSeq {
			s.log.Debug("input already decided", "seq", seq)
			settled = true
			_ = in.msg.Ack()
			return
		}
		s.deps.fault(FaultBeforeDecide, s.item)
		err := s.decide(opCtx, seq, in.msg)
		if err == nil {
			break
		}
		if errors.Is(err, jetstream.ErrConflict) && attempt < 3 {
			s.log.Warn("another writer decided first; reloading", "seq", seq, "error", err)
			if rerr := s.reload(opCtx); rerr == nil {
				continue
			}
		}
		s.commitFailed(seq, err)
		// Nothing is acked that is not decided: the input comes back in a
		// second, and again until the log takes the decision.
		settled = true
		_ = in.msg.NakWithDelay(time.Second)
		// The snapshot in memory may be ahead of or behind the log now;
		// reload it before the redelivery (or, if the log cannot be read
		// either, at the next input).
		if rerr := s.reload(opCtx); rerr != nil {
			s.stale = true
		}
		return
	}
	if s.failures > 0 {
		s.log.Info("decisions committed again", "seq", seq, "failed_attempts", s.failures)
		s.failures = 0
	}
	s.deps.fault(FaultAfterCommit, s.item)
	settled = true
	if err := in.msg.Ack(); err != nil {
		s.log.Warn("ack failed; the input will be redelivered and skipped", "seq", seq, "error", err)
	}
	if s.snap.State.Terminal() {
		s.finish(ctx)
	}
}

// commitFailed reports a decision the log did not take. The first failure
// of a run is an error line, then one every 30 attempts (about every 30 s).
func (s *sniper) commitFailed(seq uint64, err error) {
	if !errors.Is(err, jetstream.ErrConflict) {
		s.deps.writeFailed(err)
	}
	s.failures++
	if s.failures != 1 && s.failures%30 != 0 {
		return
	}
	msg := "decision not committed; the input is held (not acked) and retried"
	if errors.Is(err, jetstream.ErrFull) {
		msg = "the event log is full: decision not committed; the input is held (not acked) and retried until space is freed"
	}
	s.log.Error(msg, "seq", seq, "attempts", s.failures, "error", err)
}

// decide applies the core to one stored input and commits the result.
func (s *sniper) decide(ctx context.Context, seq uint64, msg natsjs.Msg) error {
	started := time.Now()
	in, err := messages.DecodeInput(msg.Subject(), msg.Data())
	before := s.snap.Snapshot
	after, outs := before, []auction.Output(nil)
	inputType := "invalid"
	if err != nil {
		// A payload nobody can decode is still decided (as a no-op) so the
		// log shows it was seen; the reason is logged, not guessed at.
		s.log.Warn("undecodable input ignored", "seq", seq, "subject", msg.Subject(), "error", err)
	} else {
		_, _, inputType, _ = messages.ParseSubject(msg.Subject())
		after, outs = auction.Decide(before, in)
	}
	if m, ok := in.(auction.Malformed); ok && after.State == auction.Failed && before.State != auction.Failed {
		s.log.Error(fmt.Sprintf("Could not translate message %q because %q", m.Body, m.Reason), "seq", seq)
	}
	outgoing, err := messages.Outputs(s.item, seq, outs)
	if err != nil {
		return err
	}
	next := messages.NewSnapshot(after, seq)
	commitStart := time.Now()
	snapSeq, err := s.deps.Log.Commit(ctx, jetstream.Decision{
		Item: s.item, Fence: s.fence, InputSeq: seq, Snapshot: next, Outputs: outgoing,
	})
	if err != nil {
		return err
	}
	if s.deps.Metrics != nil {
		s.deps.Metrics.Committed(1+len(outgoing), time.Since(commitStart))
	}
	s.deps.writeSucceeded()
	s.snap, s.fence = next, snapSeq
	if before.State != after.State {
		s.log.Info("sniper state changed", "from", string(before.State), "to", string(after.State),
			"last_price", after.LastPrice, "last_bid", after.LastBid, "seq", seq)
	}
	if s.deps.Metrics != nil {
		s.deps.Metrics.Decided(inputType, before.State, after.State, time.Since(started))
	}
	return nil
}

// finish retires a sniper whose auction is over: its consumer goes, and so
// does the actor. The log keeps everything.
func (s *sniper) finish(ctx actor.Context) {
	// The feed goes first: it would otherwise see its consumer deleted
	// and open it again.
	s.stop()
	opCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.deps.Log.DeleteInputConsumer(opCtx, s.item); err != nil {
		s.log.Warn("cannot delete input consumer", "error", err)
	}
	s.log.Debug("sniper finished", "state", s.snap.State)
	ctx.Stop(ctx.Self())
}
