package actors

import (
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"sniper/auction"
	"sniper/jetstream"
	"sniper/messages"
)

// recovered hands the supervisor every auction's last decision at start;
// it answers with its SniperCounts once it has taken them.
type recovered struct{ decisions []jetstream.StoredDecision }

// supervisor is the root of the sniper actors. It routes every input of
// the log (from the one input follower) to the sniper of its auction, in
// log order, spawning the sniper on the auction's start command or, for an
// auction recovered from the log, on its first input after the restart: an
// auction nobody talks to costs its last decision in a map, no actor. It
// restarts a child that panics outside a decision; that child rebuilds
// itself from the log.
type supervisor struct {
	deps Deps
	live map[string]*actor.PID
	// dormant holds the last decision of every unfinished auction that
	// has no actor: recovered at start and not talked to since, or
	// passivated after a quiet sweep.
	dormant  map[string]jetstream.StoredDecision
	finished map[string]bool
	// active holds the live auctions that got an input since the last
	// sweep; passivating those asked to go (and then stopping), with the
	// inputs that came for them meanwhile.
	active      map[string]bool
	passivating map[string]*passivation
	// Snipe groups: a member's inputs go to its group's actor, never to
	// a sniper of its own. groupOf knows every member (finished ones too:
	// a won item counts against the group); dormantGroups holds the
	// members' last decisions until the group's first input.
	groupOf       map[string]string
	groups        map[string]*actor.PID
	dormantGroups map[string][]jetstream.StoredDecision
}

// passivation is an idle sniper on its way out.
type passivation struct {
	pid     *actor.PID
	last    *jetstream.StoredDecision // set once it said yes
	pending []input                   // inputs that came meanwhile, in order
}

// sweep asks the supervisor to passivate the snipers that got no input
// since the previous sweep.
type sweep struct{}

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
	return actor.PropsFromProducer(func() actor.Actor {
		return &supervisor{deps: deps, live: map[string]*actor.PID{}, dormant: map[string]jetstream.StoredDecision{}, finished: map[string]bool{},
			active: map[string]bool{}, passivating: map[string]*passivation{},
			groupOf: map[string]string{}, groups: map[string]*actor.PID{}, dormantGroups: map[string][]jetstream.StoredDecision{}}
	}, actor.WithSupervisor(actor.NewOneForOneStrategy(10, time.Minute, decider)))
}

func (s *supervisor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case recovered:
		for _, d := range m.decisions {
			if d.Group != "" {
				s.groupOf[d.Item] = d.Group
				s.dormantGroups[d.Group] = append(s.dormantGroups[d.Group], d)
				continue
			}
			if d.State.Final() {
				s.finished[d.Item] = true
			} else {
				s.dormant[d.Item] = d
			}
		}
		// A group with members still going starts now, not on its next
		// input: settling may owe a member a decision (a crash between
		// two of the group's commits).
		for group, members := range s.dormantGroups {
			for _, d := range members {
				if !d.State.Final() {
					s.spawnGroup(ctx, group)
					break
				}
			}
		}
		ctx.Respond(s.counts())
	case input:
		s.route(ctx, m)
	case sniperFinished:
		if pid, ok := s.live[m.item]; ok {
			delete(s.live, m.item)
			s.finished[m.item] = true
			// Poison, not Stop: inputs routed to it before this message
			// are still in its mailbox, and it settles them first.
			ctx.Poison(pid)
		}
		if p, ok := s.passivating[m.item]; ok {
			// Asked to go just as it finished: it goes as finished.
			delete(s.passivating, m.item)
			s.finished[m.item] = true
			ctx.Poison(p.pid)
			for _, in := range p.pending {
				s.deps.inputDone(in.Seq)
			}
		}
	case countSnipers:
		ctx.Respond(s.counts())
	case sweep:
		for item, pid := range s.live {
			if !s.active[item] {
				delete(s.live, item)
				s.passivating[item] = &passivation{pid: pid}
				ctx.Send(pid, passivate{})
			}
		}
		clear(s.active)
	case passivated:
		p := s.passivating[m.item]
		switch {
		case p == nil:
		case m.ok:
			p.last = &m.last
			ctx.Stop(p.pid) // its name is free once Terminated arrives
		default:
			// Busy after all: it is live again, with what came meanwhile.
			delete(s.passivating, m.item)
			s.live[m.item] = p.pid
			s.active[m.item] = true
			for _, in := range p.pending {
				ctx.Send(p.pid, in)
			}
		}
	case *actor.Terminated:
		item := strings.TrimPrefix(m.Who.Id, ctx.Self().Id+"/")
		p := s.passivating[item]
		if p == nil || p.last == nil || !p.pid.Equal(m.Who) {
			return
		}
		delete(s.passivating, item)
		s.dormant[item] = *p.last
		for _, in := range p.pending {
			s.route(ctx, in)
		}
	}
}

// route hands one input to its auction's sniper. An input no sniper will
// decide (a finished auction's, one for an auction never started, one on
// a subject that names no auction) is settled at once.
func (s *supervisor) route(ctx actor.Context, in input) {
	item, kind, typ, err := messages.ParseSubject(in.Subject)
	if err == nil {
		err = messages.ValidItem(item)
	}
	if err != nil {
		s.deps.Logger.Warn("ignoring an input on a bad subject", "subject", in.Subject, "seq", in.Seq, "error", err)
		s.deps.inputDone(in.Seq)
		return
	}
	if group, ok := s.groupOf[item]; ok {
		s.toGroup(ctx, group, in)
		return
	}
	if pid, ok := s.live[item]; ok {
		s.active[item] = true
		ctx.Send(pid, in)
		return
	}
	if p, ok := s.passivating[item]; ok {
		p.pending = append(p.pending, in)
		return
	}
	if s.finished[item] {
		s.deps.inputDone(in.Seq)
		return
	}
	last, known := s.dormant[item]
	if !known && (kind != messages.KindCmd || typ != messages.TypeStart) {
		s.deps.Logger.Debug("ignoring an input for an auction that was never started", "item", item, "seq", in.Seq)
		s.deps.inputDone(in.Seq)
		return
	}
	if !known {
		if decoded, err := messages.DecodeInput(in.Subject, in.Data); err == nil && groupOfStart(decoded) != "" {
			group := groupOfStart(decoded)
			s.groupOf[item] = group
			s.toGroup(ctx, group, in)
			return
		}
	}
	var from *jetstream.StoredDecision
	if known {
		from = &last
		delete(s.dormant, item)
	}
	pid, err := ctx.SpawnNamed(newSniperProps(s.deps, item, from), item)
	if err != nil {
		// The name is taken only by a sniper that finished and is still
		// stopping: nothing more to decide.
		s.deps.Logger.Error("cannot spawn sniper", "item", item, "error", err)
		s.deps.inputDone(in.Seq)
		return
	}
	s.live[item] = pid
	s.active[item] = true
	ctx.Send(pid, in)
}

// toGroup hands in to the actor of its member's group, spawned on the
// group's first input with the members recovered from the log.
func (s *supervisor) toGroup(ctx actor.Context, group string, in input) {
	pid, ok := s.groups[group]
	if !ok {
		if pid = s.spawnGroup(ctx, group); pid == nil {
			s.deps.inputDone(in.Seq)
			return
		}
	}
	ctx.Send(pid, in)
}

// spawnGroup starts a group's actor with its recovered members; nil if
// it cannot.
func (s *supervisor) spawnGroup(ctx actor.Context, group string) *actor.PID {
	// '@' cannot be in an item id: no sniper has this name.
	pid, err := ctx.SpawnNamed(newGroupProps(s.deps, group, s.dormantGroups[group]), "@"+group)
	if err != nil {
		s.deps.Logger.Error("cannot spawn a snipe group", "group", group, "error", err)
		return nil
	}
	delete(s.dormantGroups, group)
	s.groups[group] = pid
	return pid
}

func (s *supervisor) counts() SniperCounts {
	return SniperCounts{Live: len(s.live) + len(s.passivating), Dormant: len(s.dormant), Finished: len(s.finished)}
}

// countSnipers asks the supervisor for SniperCounts.
type countSnipers struct{}

// SniperCounts is how many auctions the supervisor knows, by kind.
type SniperCounts struct {
	Live     int // with an actor
	Dormant  int // unfinished, no input since the start of the process
	Finished int
}

// groupOfStart is the group a start command joins ("": none, or not a
// start).
func groupOfStart(in auction.Input) string {
	start, _ := in.(auction.Start)
	return start.Group
}
