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

// groupActor decides for every member of one snipe group: the members'
// inputs are routed to it instead of to sniper actors of their own, so
// that the group's policy (auction.DecideGroup: at most Win slots, only a
// slot holder bids) sees every member's state at once, one input at a
// time. It writes each member's decision to that member's own subjects,
// fenced on the member's last decision like a sniper's, so the history,
// the view, the outbound bridge and a takeover treat members as any
// sniper. One input can change several members (a slot handed on); their
// decisions are committed one after the other, and since the group's
// state is nothing but its members' last decisions, a crash between two
// of them is repaired by settling the group again (auction.Settle) before
// the next input: the missing decision is made then.
type groupActor struct {
	deps    Deps
	name    string
	log     *slog.Logger
	members map[string]*groupMember
	order   []string // join order
	stale   bool     // a commit failed: reload every member first

	queue    []jetstream.Delivery
	retryAt  *time.Timer
	failures int
}

type groupMember struct {
	snap  messages.DecisionEvent
	fence uint64
}

func newGroupProps(deps Deps, name string, members []jetstream.StoredDecision) *actor.Props {
	incarnations := 0
	return actor.PropsFromProducer(func() actor.Actor {
		g := &groupActor{deps: deps, name: name, log: deps.Logger.With("group", name), members: map[string]*groupMember{}}
		for _, d := range members {
			g.members[d.Item] = &groupMember{snap: d.DecisionEvent, fence: d.Seq}
			g.order = append(g.order, d.Item)
		}
		if incarnations > 0 {
			g.stale = true // restarted after a panic: the log is the truth
		}
		incarnations++
		return g
	})
}

func (g *groupActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		// Repair what a crash between two commits left undone.
		g.queue = append(g.queue, jetstream.Delivery{})
		g.process(ctx)
	case *actor.Stopping:
		if g.retryAt != nil {
			g.retryAt.Stop()
		}
	case input:
		g.queue = append(g.queue, m.Delivery)
		if g.retryAt == nil {
			g.process(ctx)
		}
	case retry:
		g.retryAt = nil
		g.process(ctx)
	}
}

// process handles the queue in order; an input that cannot be decided
// now stays at its head and is tried again in a second.
func (g *groupActor) process(ctx actor.Context) {
	for len(g.queue) > 0 {
		in := g.queue[0]
		if !g.handleSafely(in) {
			if g.retryAt == nil {
				root, self := ctx.ActorSystem().Root, ctx.Self()
				g.retryAt = time.AfterFunc(g.deps.retryDelay(), func() { root.Send(self, retry{}) })
			}
			return
		}
		g.queue = g.queue[1:]
		if in.Seq != 0 {
			g.deps.inputDone(in.Seq)
		}
	}
}

func (g *groupActor) handleSafely(in jetstream.Delivery) (settled bool) {
	defer func() {
		if r := recover(); r != nil {
			g.log.Error("group failed while deciding; retrying from its members' last decisions", "seq", in.Seq, "panic", r)
			g.stale = true
			settled = false
		}
	}()
	return g.handle(in)
}

// handle settles the group, then decides in (Seq 0: settle only).
func (g *groupActor) handle(in jetstream.Delivery) bool {
	opCtx, cancel := context.WithTimeout(g.deps.ctx(), commitTimeout)
	defer cancel()
	if g.stale {
		if err := g.reload(opCtx); err != nil {
			g.failed(in.Seq, fmt.Errorf("reload the members' last decisions: %w", err))
			return false
		}
		g.stale = false
	}
	_, changes := auction.Settle(g.group())
	if err := g.commit(opCtx, changes, "", 0); err != nil {
		g.failed(in.Seq, err)
		return false
	}
	if in.Seq == 0 {
		return true
	}
	item, _, _, _ := messages.ParseSubject(in.Subject)
	if m, ok := g.members[item]; ok && (in.Seq <= m.snap.InputSeq || m.snap.State.Final()) {
		return true // decided before, or nothing more to decide
	}
	input, err := messages.DecodeInput(in.Subject, in.Data)
	if err != nil {
		g.log.Warn("undecodable input ignored", "seq", in.Seq, "subject", in.Subject, "error", err)
		return true
	}
	g.deps.fault(FaultBeforeDecide, item)
	_, known := g.members[item]
	after, changes := auction.DecideGroup(g.group(), item, input)
	if _, isMember := after.Member(item); !isMember {
		return true // an input for an item that never joined
	}
	if !known {
		g.order = append(g.order, item)
		g.members[item] = &groupMember{snap: messages.DecisionEvent{Snapshot: auction.Snapshot{Item: item}}}
	}
	// The input's own member always gets a decision: it records that
	// the input was decided, even when nothing changed.
	if len(changes) == 0 || changes[0].Snapshot.Item != item {
		m, _ := after.Member(item)
		changes = append([]auction.Change{{Snapshot: m}}, changes...)
	}
	if err := g.commit(opCtx, changes, item, in.Seq); err != nil {
		g.failed(in.Seq, err)
		return false
	}
	if g.failures > 0 {
		g.log.Info("group decisions committed again", "seq", in.Seq, "failed_attempts", g.failures)
		g.failures = 0
	}
	g.deps.fault(FaultAfterCommit, item)
	return true
}

// group is the core's view of the members, in join order.
func (g *groupActor) group() auction.Group {
	snaps := make([]auction.Snapshot, 0, len(g.order))
	for _, item := range g.order {
		s := g.members[item].snap.Snapshot
		s.Item = item
		snaps = append(snaps, s)
	}
	return auction.GroupOf(g.name, snaps)
}

// commit writes each change as its member's decision, in order: the
// input's member (item) answers inputSeq, the others keep theirs.
func (g *groupActor) commit(ctx context.Context, changes []auction.Change, item string, inputSeq uint64) error {
	for i, c := range changes {
		if i > 0 {
			g.deps.fault(FaultBetweenGroupCommits, c.Snapshot.Item)
		}
		m := g.members[c.Snapshot.Item]
		seq := m.snap.InputSeq
		if c.Snapshot.Item == item {
			seq = inputSeq
		}
		next, err := messages.NewDecision(c.Snapshot, seq, c.Outputs)
		if err != nil {
			return err
		}
		next.By = g.deps.Instance
		next.Followup = c.Snapshot.Item != item
		next.From = m.snap.State
		at, err := g.deps.Log.Commit(ctx, jetstream.Decision{Item: c.Snapshot.Item, Fence: m.fence, Event: next})
		if err != nil {
			g.stale = true
			return fmt.Errorf("commit the decision of %s: %w", c.Snapshot.Item, err)
		}
		g.deps.writeSucceeded()
		before := m.snap.Snapshot
		m.snap, m.fence = next, at
		if g.deps.timers != nil {
			g.deps.timers.follow(c.Snapshot.Item, next.Snapshot)
		}
		if before.State != next.State {
			g.log.Info("sniper state changed", "item", c.Snapshot.Item, "from", string(before.State), "to", string(next.State),
				"slot", next.Slot, "last_price", next.LastPrice, "last_bid", next.LastBid)
		}
	}
	return nil
}

func (g *groupActor) reload(ctx context.Context) error {
	for _, item := range g.order {
		stored, err := g.deps.Log.LastDecision(ctx, item)
		switch {
		case errors.Is(err, jetstream.ErrNotFound):
			g.members[item] = &groupMember{snap: messages.DecisionEvent{Snapshot: auction.Snapshot{Item: item}}}
		case err != nil:
			return err
		default:
			g.members[item] = &groupMember{snap: stored.DecisionEvent, fence: stored.Seq}
		}
	}
	return nil
}

func (g *groupActor) failed(seq uint64, err error) {
	if !errors.Is(err, jetstream.ErrConflict) {
		g.deps.writeFailed(err)
	}
	g.failures++
	if g.failures == 1 || g.failures%30 == 0 {
		g.log.Error("group decision not committed; the input is held and retried", "seq", seq, "attempts", g.failures, "error", err)
	}
}
