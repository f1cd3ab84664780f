package actors

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
)

// InputFollowerName names the follower of every auction's inputs and its
// checkpoint in the log.
const InputFollowerName = "inputs"

// DefaultDrainGrace is how long the app lets Stop wait for the snipers to decide
// the inputs already handed to them.
const DefaultDrainGrace = 4 * time.Second

// System runs the sniper actors: the supervisor, one sniper per active
// auction, and the one follower of the log that feeds them every input.
type System struct {
	deps       Deps
	as         *actor.ActorSystem
	supervisor *actor.PID
	inputs     *jetstream.Follower

	stopReading context.CancelFunc // ends the follower and the sweeps
	readDone    chan struct{}
	sweepDone   chan struct{}
	timersDone  chan struct{}
	cancel      context.CancelFunc // ends the snipers' retries and writes, and the timers
	stopOnce    sync.Once
}

// StartSystem recovers every auction's last decision and starts following
// the inputs from the checkpoint of the last run.
//
// Inputs reach the snipers through one ordered reader, whatever the number
// of auctions. The log is the cursor: each decision records the input it
// answers, so an auction's progress is durable in the same write as its
// decision, and the reader's checkpoint (below which every input is
// decided) only bounds what a restart reads again; each sniper skips what
// its last decision says it decided.
func StartSystem(ctx context.Context, deps Deps) (*System, error) {
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	runCtx, cancel := context.WithCancel(context.Background())
	deps.runCtx = runCtx
	inputs, err := deps.Log.Follower(ctx, jetstream.FollowSpec{
		Name:            InputFollowerName,
		Filters:         messages.InputSubjects("*"),
		Checkpointed:    true,
		CheckpointEvery: deps.CheckpointEvery,
		Logger:          deps.Logger,
	})
	if err != nil {
		cancel()
		return nil, err
	}
	deps.done = inputs.Done
	if deps.Recovered == nil {
		rec, err := deps.Log.Recover(ctx)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("recover snipers: %w", err)
		}
		deps.Recovered = &rec
	}
	decisions := deps.Recovered.Decisions
	deps.Recovered = nil // not kept in every actor's Deps
	deps.timers = newTimers(deps.Log, deps.Logger)
	for _, d := range decisions {
		if d.State == auction.Waiting {
			deps.timers.follow(d.Item, d.Snapshot) // only a waiting sniper has a timer: no lock per auction at start
		}
	}
	as := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return deps.Logger.With("component", "protoactor")
	}))
	sup, err := as.Root.SpawnNamed(SupervisorProps(deps), "snipers")
	if err != nil {
		cancel()
		return nil, fmt.Errorf("spawn supervisor: %w", err)
	}
	s := &System{deps: deps, as: as, supervisor: sup, inputs: inputs, cancel: cancel, readDone: make(chan struct{})}
	res, err := as.Root.RequestFuture(sup, recovered{decisions: decisions}, 30*time.Second).Result()
	if err != nil {
		cancel()
		s.stopActors()
		return nil, fmt.Errorf("recover snipers: %w", err)
	}
	counts := res.(SniperCounts)
	deps.Logger.Info("snipers recovered", "unfinished", counts.Dormant, "finished", counts.Finished, "reading_inputs_from", inputs.Start())
	readCtx, stopReading := context.WithCancel(context.Background())
	s.stopReading = stopReading
	go func() {
		defer close(s.readDone)
		_ = inputs.Run(readCtx, func(d jetstream.Delivery) { as.Root.Send(sup, input{d}) })
	}()
	s.sweepDone = make(chan struct{})
	go s.sweep(readCtx)
	s.timersDone = make(chan struct{})
	go func() {
		defer close(s.timersDone)
		deps.timers.run(runCtx)
	}()
	return s, nil
}

// sweep asks the supervisor, every PassivateAfter, to passivate the
// snipers that got no input since the previous sweep: one timer for the
// whole system, none per auction.
func (s *System) sweep(ctx context.Context) {
	defer close(s.sweepDone)
	every := s.deps.PassivateAfter
	if every == 0 {
		every = DefaultPassivateAfter
	}
	if every < 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.as.Root.Send(s.supervisor, sweep{})
		}
	}
}

// Counts asks the supervisor how many auctions it knows, by kind.
func (s *System) Counts(ctx context.Context) (SniperCounts, error) {
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	res, err := s.as.Root.RequestFuture(s.supervisor, countSnipers{}, timeout).Result()
	if err != nil {
		return SniperCounts{}, err
	}
	return res.(SniperCounts), nil
}

// InputBacklog is how many inputs the snipers were handed and have not
// decided yet.
func (s *System) InputBacklog() int { return s.inputs.Pending() }

// Stop stops reading inputs, lets the snipers decide what they were
// handed until ctx ends (the app gives DefaultDrainGrace), writes the
// input checkpoint and stops the actors. Inputs not decided stay in the
// log, above the checkpoint, for the next start. Calling it again does
// nothing.
func (s *System) Stop(ctx context.Context) {
	s.stopOnce.Do(func() {
		s.stopReading()
		<-s.readDone
		<-s.sweepDone
		if err := s.inputs.WaitIdle(ctx); err != nil {
			s.deps.Logger.Warn("some inputs were not decided in time; the next start decides them", "inputs", s.inputs.Pending())
		}
		s.cancel()
		<-s.timersDone
		// The checkpoint is written even when the drain ran out of time.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := s.inputs.SaveCheckpoint(ctx); err != nil {
			s.deps.Logger.Warn("cannot write the input checkpoint; the next start reads more of the log again", "error", err)
		}
		cancel()
		s.stopActors()
	})
}

// Timers is how many snipers wait for a timer (last-second bids).
func (s *System) Timers() int { return s.deps.timers.Len() }

func (s *System) stopActors() {
	// ActorSystem.Shutdown stops no actors: poison the root supervisor,
	// whose children stop after the message they are handling.
	if err := s.as.Root.PoisonFuture(s.supervisor).Wait(); err != nil {
		s.deps.Logger.Warn("supervisor did not stop in time", "error", err)
	}
	s.as.Shutdown()
}
