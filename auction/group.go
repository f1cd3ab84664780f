package auction

// Group is a snipe group: bid on several equal items, win at most Win of
// them. Its state is its members' snapshots, in the order they joined;
// nothing else, so that the group's state after a crash is what its
// members' last decisions say.
//
// The policy keeps two promises. At most Win members hold a slot at any
// time, and only a member holding a slot bids: so at most Win bids stand
// at once, and at most Win items are won. When a member holding a slot
// has no bid standing any more (it is outbid beyond its stop price, or
// loses, stops or fails) it gives the slot back, and the slot goes to the
// waiting member whose next bid is the cheapest (the earliest to join on a
// tie). Once Win members have won, the others are stopped.
type Group struct {
	Name    string
	Win     int
	Members []Snapshot
}

// Change is a member whose snapshot a group decision changed, with what
// it sends: the shell commits it as that member's decision.
type Change struct {
	Snapshot Snapshot
	Outputs  []Output
}

// GroupOf is the group its members' snapshots make (in join order).
func GroupOf(name string, members []Snapshot) Group {
	g := Group{Name: name, Members: members}
	for _, m := range members {
		if m.GroupWin > 0 {
			g.Win = m.GroupWin
			break
		}
	}
	return g
}

// Member returns the snapshot of item and whether it is a member.
func (g Group) Member(item string) (Snapshot, bool) {
	if i := g.index(item); i >= 0 {
		return g.Members[i], true
	}
	return Snapshot{}, false
}

func (g Group) index(item string) int {
	for i, m := range g.Members {
		if m.Item == item {
			return i
		}
	}
	return -1
}

// Slots is how many members hold a slot (a won item keeps its slot).
func (g Group) Slots() int {
	n := 0
	for _, m := range g.Members {
		if m.Slot {
			n++
		}
	}
	return n
}

// Wins is how many members have won.
func (g Group) Wins() int {
	n := 0
	for _, m := range g.Members {
		if m.State == Won {
			n++
		}
	}
	return n
}

// DecideGroup applies in to the member item (a Start of a new item makes
// it a member) and then settles the group: the changed members, the one
// the input was for first. Like Decide it never fails: an input for an
// item that is not a member, other than its Start, changes nothing.
func DecideGroup(g Group, item string, in Input) (Group, []Change) {
	g.Members = append([]Snapshot(nil), g.Members...)
	i := g.index(item)
	if i < 0 {
		start, ok := in.(Start)
		if !ok {
			return g, nil
		}
		if g.Win == 0 && start.Win > 0 {
			g.Win = start.Win
		}
		g.Members = append(g.Members, Snapshot{Item: item})
		i = len(g.Members) - 1
	}
	before := g.Members[i]
	if start, ok := in.(Start); ok {
		start.Group, start.Win = g.Name, g.Win
		in = start
	}
	after, outs := Decide(before, in)
	g.Members[i] = after
	var changes []Change
	if after != before || len(outs) > 0 {
		changes = append(changes, Change{Snapshot: after, Outputs: outs})
	}
	g, settled := Settle(g)
	return g, merge(changes, settled)
}

// Settle hands out the free slots, or stops the rest once Win members
// have won. It is what the group owes its members given their snapshots
// alone, so a shell that crashed between committing a member's decision
// and the decisions that followed from it calls Settle again on start.
func Settle(g Group) (Group, []Change) {
	g.Members = append([]Snapshot(nil), g.Members...)
	var changes []Change
	if g.Win <= 0 {
		return g, nil // no slots: nobody bids (the API refuses such a group)
	}
	if g.Wins() >= g.Win {
		for i, m := range g.Members {
			if m.State.Terminal() || !m.Started() {
				continue
			}
			after, outs := Decide(m, Stop{})
			g.Members[i] = after
			changes = append(changes, Change{Snapshot: after, Outputs: outs})
		}
		return g, changes
	}
	for g.Slots() < g.Win {
		next := -1
		for i, m := range g.Members {
			if m.Slot || m.State != Waiting {
				continue
			}
			if next < 0 || nextBid(m) < nextBid(g.Members[next]) {
				next = i
			}
		}
		if next < 0 {
			break
		}
		m := g.Members[next]
		m.Slot = true
		after, outs := answer(m)
		after.Slot = after.Slot && after.State != Losing
		g.Members[next] = after
		changes = append(changes, Change{Snapshot: after, Outputs: outs})
	}
	return g, changes
}

// nextBid is what a waiting member would bid now.
func nextBid(m Snapshot) int64 {
	bid, _ := add(m.LastPrice, m.Increment)
	return bid
}

// merge keeps one change per member, the latest, in first-change order.
func merge(a, b []Change) []Change {
	out := append([]Change(nil), a...)
	for _, c := range b {
		found := false
		for i := range out {
			if out[i].Snapshot.Item == c.Snapshot.Item {
				out[i].Snapshot = c.Snapshot
				out[i].Outputs = append(out[i].Outputs, c.Outputs...)
				found = true
			}
		}
		if !found {
			out = append(out, c)
		}
	}
	return out
}
