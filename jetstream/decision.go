package jetstream

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sniper/messages"
)

// Decision is everything one input produced, committed as one message.
type Decision struct {
	Item string
	// Fence is the sequence of the auction's last decision, the one the
	// decider started from (0 if the auction has none yet). The commit
	// fails with ErrConflict if it is no longer the last.
	Fence uint64
	Event messages.DecisionEvent
}

// Commit writes the decision and returns its sequence.
//
// A decision is one message under sniper.<item>.dec.<type>, so it is
// atomic by itself: no batch (nats-server stages every atomic batch of an
// R1 file stream in a fresh on-disk store, ~3 ms against ~0.2 ms for a
// publish; docs/benchmarks.md). The fence is
// Nats-Expected-Last-Subject-Sequence on the wildcard of the auction's
// decision subjects (Nats-Expected-Last-Subject-Sequence-Subject,
// nats-server >= 2.11): a second writer for the same auction is refused,
// while inputs, which live under other subjects of the auction, keep
// arriving without conflict. The message id <item>/<input_seq> makes a
// retry of the same decision a no-op.
func (l *Log) Commit(ctx context.Context, d Decision) (uint64, error) {
	fail := func(kind, err error) error {
		if kind == nil {
			return fmt.Errorf("commit decision on %s for input %d: %w", d.Item, d.Event.InputSeq, err)
		}
		return fmt.Errorf("commit decision on %s for input %d: %w: %w", d.Item, d.Event.InputSeq, kind, err)
	}
	data, err := json.Marshal(d.Event)
	if err != nil {
		return 0, fail(nil, err)
	}
	m := nats.NewMsg(messages.DecisionSubject(d.Item, d.Event.Type))
	m.Data = data
	id := d.Item + "/" + strconv.FormatUint(d.Event.InputSeq, 10)
	if d.Event.Followup {
		// It answers no input of its own: one per fence.
		id = d.Item + "/after/" + strconv.FormatUint(d.Fence, 10)
	}
	m.Header.Set(jetstream.MsgIDHeader, id)
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(d.Fence, 10))
	m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, messages.DecisionFilter(d.Item))
	ack, err := l.js.PublishMsg(ctx, m)
	switch {
	case err != nil && isWrongLastSequence(err):
		return 0, fail(ErrConflict, err)
	case err != nil && isFull(err):
		return 0, fail(ErrFull, err)
	case err != nil:
		return 0, fail(nil, err)
	case ack.Duplicate:
		// Stored before under the same id: this input was decided
		// already, by us before a crash or by another writer.
		return 0, fail(ErrConflict, fmt.Errorf("decision stored already (message id seen at %d)", ack.Sequence))
	}
	return ack.Sequence, nil
}

// StoredDecision is an auction's decision and where it sits in the log.
type StoredDecision struct {
	Seq uint64
	messages.DecisionEvent
}

// LastDecision returns one auction's most recent decision, or ErrNotFound.
func (l *Log) LastDecision(ctx context.Context, item string) (StoredDecision, error) {
	raw, err := l.lastOn(ctx, messages.DecisionFilter(item))
	if err != nil {
		return StoredDecision{}, fmt.Errorf("last decision on %s: %w", item, err)
	}
	return decodeDecision(Delivery{Seq: raw.Sequence, Subject: raw.Subject, Data: raw.Data})
}

// Recovery is the last decision of every auction, as the log stood when it
// was read: every decision after Through is newer than those in it (so a
// reader that follows the decisions from Through+1 misses none and sees
// none twice).
type Recovery struct {
	Decisions []StoredDecision
	Through   uint64
}

// Recover reads the last decision of every auction: one message per
// auction and decision type, not the history.
func (l *Log) Recover(ctx context.Context) (Recovery, error) {
	last := map[string]StoredDecision{}
	var through uint64
	err := l.lastPerSubject(ctx, []string{messages.DecisionFilter("*")}, func(raw Delivery) error {
		d, err := decodeDecision(raw)
		if err != nil {
			return err
		}
		// Delivered in log order, so the last is the highest: any decision
		// above it, when the reader was made, would have been delivered.
		through = max(through, d.Seq)
		// An auction has up to one last message per decision type.
		if prev, ok := last[d.Item]; !ok || d.Seq > prev.Seq {
			last[d.Item] = d
		}
		return nil
	})
	if err != nil {
		return Recovery{}, fmt.Errorf("read decisions: %w", err)
	}
	return Recovery{Decisions: slices.Collect(maps.Values(last)), Through: through}, nil
}

// Decisions returns the last decision of every auction (Recover without
// its sequence).
func (l *Log) Decisions(ctx context.Context) ([]StoredDecision, error) {
	r, err := l.Recover(ctx)
	return r.Decisions, err
}

// lastPerSubject calls visit, in log order, with the last message of each
// subject matching filters, as the log stands when it starts. It reads
// them with one ordered consumer delivering the last message per subject,
// the way a KV watcher loads its keys: one stream of messages, whatever
// the number of subjects (a multi-last direct get answers at most 1,024
// subjects per request, and listing the subjects first costs as much
// again: 4.5 s at 100,000 auctions against about 1 s).
func (l *Log) lastPerSubject(ctx context.Context, filters []string, visit func(Delivery) error) error {
	cons, err := l.stream.OrderedConsumer(ctx, readerConfig(jetstream.OrderedConsumerConfig{
		FilterSubjects: filters,
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	}))
	if err != nil {
		return err
	}
	defer l.deleteReader(ctx, cons, nil)
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return err
	}
	// Nothing to read: the reader says so as it is made (asking the log
	// for the last message on the filters instead would have the server
	// walk every matching subject).
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		it.Stop()
		return nil
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return err
		}
		meta, err := msg.Metadata()
		if err != nil {
			return err
		}
		if err := visit(Delivery{Seq: meta.Sequence.Stream, Subject: msg.Subject(), Time: meta.Timestamp, Data: msg.Data(), Pending: meta.NumPending}); err != nil {
			return err
		}
		if meta.NumPending == 0 {
			return nil
		}
	}
}

func decodeDecision(d Delivery) (StoredDecision, error) {
	var e messages.DecisionEvent
	if err := json.Unmarshal(d.Data, &e); err != nil {
		return StoredDecision{}, fmt.Errorf("decode decision %d on %s: %w", d.Seq, d.Subject, err)
	}
	return StoredDecision{Seq: d.Seq, DecisionEvent: e}, nil
}

// ClaimAll writes a claim (messages.NewClaim) on every auction of last that
// is not finished and whose last decision another instance wrote (By),
// fenced on that decision, and returns the auctions'
// decisions with the claims in place of those they replaced. An instance
// that becomes active does this before it decides anything: once an
// auction's claim is stored, a decision from the instance it replaced, which
// still starts from the decision before, is refused by the fence, even if
// that instance does not know yet that it lost the lease.
//
// An auction whose last decision is by this instance already needs none:
// nobody decided it since, so a restart of the same instance claims
// nothing (and takes no longer), while a takeover claims every unfinished
// auction, the other instance's claims and decisions being the last.
//
// A claim refused by its fence means that a decision arrived after last was
// read (the replaced instance's, in the moment before the claim): the
// auction's last decision is read again and claimed. The message id
// <item>/claim/<term> makes a retry within the term a no-op.
func (l *Log) ClaimAll(ctx context.Context, last []StoredDecision, by string, term uint64) ([]StoredDecision, error) {
	out := make([]StoredDecision, 0, len(last))
	type pending struct {
		from StoredDecision
		ack  jetstream.PubAckFuture
	}
	var inFlight []pending
	publish := func(d StoredDecision) error {
		claim := messages.NewClaim(d.DecisionEvent, by)
		data, err := json.Marshal(claim)
		if err != nil {
			return fmt.Errorf("claim %s: %w", d.Item, err)
		}
		m := nats.NewMsg(messages.DecisionSubject(d.Item, claim.Type))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, d.Item+"/claim/"+strconv.FormatUint(term, 10))
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(d.Seq, 10))
		m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, messages.DecisionFilter(d.Item))
		f, err := l.js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("claim %s: %w", d.Item, err)
		}
		inFlight = append(inFlight, pending{from: d, ack: f})
		return nil
	}
	// settle waits for every claim in flight; those refused by their fence
	// are read again and returned for another round.
	settle := func() ([]StoredDecision, error) {
		var again []StoredDecision
		for _, p := range inFlight {
			select {
			case ack := <-p.ack.Ok():
				if !ack.Duplicate {
					out = append(out, StoredDecision{Seq: ack.Sequence, DecisionEvent: messages.NewClaim(p.from.DecisionEvent, by)})
					continue
				}
				// Stored before in this term: read back what is there.
				d, err := l.LastDecision(ctx, p.from.Item)
				if err != nil {
					return nil, fmt.Errorf("claim %s: %w", p.from.Item, err)
				}
				out = append(out, d)
			case err := <-p.ack.Err():
				if !isWrongLastSequence(err) {
					return nil, fmt.Errorf("claim %s: %w", p.from.Item, err)
				}
				d, err := l.LastDecision(ctx, p.from.Item)
				if err != nil {
					return nil, fmt.Errorf("claim %s: %w", p.from.Item, err)
				}
				again = append(again, d)
			case <-ctx.Done():
				return nil, fmt.Errorf("claim %s: %w", p.from.Item, ctx.Err())
			}
		}
		inFlight = inFlight[:0]
		return again, nil
	}
	todo := last
	for round := 0; len(todo) > 0; round++ {
		if round == 5 {
			return nil, fmt.Errorf("claim: %d auctions still decided by another writer after %d rounds: %w", len(todo), round, ErrConflict)
		}
		var next []StoredDecision
		for _, d := range todo {
			if d.State.Final() || d.By == by {
				out = append(out, d)
				continue
			}
			if err := publish(d); err != nil {
				return nil, err
			}
			if len(inFlight) == claimWindow {
				again, err := settle()
				if err != nil {
					return nil, err
				}
				next = append(next, again...)
			}
		}
		again, err := settle()
		if err != nil {
			return nil, err
		}
		todo = append(next, again...)
	}
	return out, nil
}

// claimWindow bounds the claims in flight: enough to keep the server busy,
// few enough not to trip nats.go's async publish limit (4,000).
const claimWindow = 1024
