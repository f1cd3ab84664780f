package actors

import (
	"errors"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// SpawnSniper asks the supervisor for a sniper on Item; it answers with
// *actor.PID once the sniper exists (new or already running).
type SpawnSniper struct{ Item string }

// supervisor is the root of the sniper actors: it spawns one child per
// auction, named by item, and restarts a child that panics. A restarted
// child rebuilds itself from its last snapshot in the log.
type supervisor struct{ deps Deps }

// SupervisorProps builds the supervisor. A child that fails more than 10
// times a minute is stopped, not restarted forever; its inputs stay in the
// log and a restart of the process tries again.
func SupervisorProps(deps Deps) *actor.Props {
	decider := func(reason any) actor.Directive {
		// The sniper logged the failure with its item; this line is the
		// supervisor's decision.
		deps.Logger.Debug("restarting a failed sniper", "reason", reason)
		return actor.RestartDirective
	}
	return actor.PropsFromProducer(func() actor.Actor { return &supervisor{deps: deps} },
		actor.WithSupervisor(actor.NewOneForOneStrategy(10, time.Minute, decider)))
}

func (s *supervisor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case SpawnSniper:
		pid, err := ctx.SpawnNamed(newSniperProps(s.deps, m.Item), m.Item)
		if err != nil && !errors.Is(err, actor.ErrNameExists) {
			s.deps.Logger.Error("cannot spawn sniper", "item", m.Item, "error", err)
		}
		if ctx.Sender() != nil {
			ctx.Respond(pid)
		}
	}
}
