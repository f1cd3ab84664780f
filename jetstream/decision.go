package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

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
	m.Header.Set(jetstream.MsgIDHeader, d.Item+"/"+strconv.FormatUint(d.Event.InputSeq, 10))
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
	return decodeDecision(raw)
}

// Decisions returns the last decision of every auction: recovery reads one
// message per auction and subject, not the history.
func (l *Log) Decisions(ctx context.Context) ([]StoredDecision, error) {
	return l.DecisionsUpTo(ctx, 0)
}

// DecisionsUpTo is Decisions as the log stood at sequence seq (0: now), so
// that a reader can follow on from seq+1 without a gap or an overlap.
func (l *Log) DecisionsUpTo(ctx context.Context, seq uint64) ([]StoredDecision, error) {
	last := map[string]StoredDecision{}
	for raw, err := range l.lastPerSubject(ctx, messages.DecisionFilter("*"), seq) {
		if err != nil {
			return nil, fmt.Errorf("read decisions: %w", err)
		}
		d, err := decodeDecision(raw)
		if err != nil {
			return nil, err
		}
		// An auction has up to one last message per decision type.
		if prev, ok := last[d.Item]; !ok || d.Seq > prev.Seq {
			last[d.Item] = d
		}
	}
	return slices.Collect(maps.Values(last)), nil
}

// maxLastPerRequest is how many subjects one multi-last direct get may
// match: nats-server (maxAllowedResponses) answers more with "413 Too Many
// Results", which jetstreamext reports as ErrBatchUnsupported.
const maxLastPerRequest = 1024

// lastPerSubject yields the last message, up to seq (0: now), of each
// subject matching filter, ending quietly when there is none.
//
// One request with the wildcard filter would stop working at the 1025th
// subject, so the matching subjects are listed first and asked for in
// chunks, all as of the same sequence: the result is one cut of the log.
func (l *Log) lastPerSubject(ctx context.Context, filter string, seq uint64) iter.Seq2[*jetstream.RawStreamMsg, error] {
	return func(yield func(*jetstream.RawStreamMsg, error) bool) {
		upTo := seq
		if upTo == 0 {
			// Fix the cut before listing subjects, so that every subject
			// with a message up to it is in the list.
			info, err := l.stream.Info(ctx)
			if err != nil {
				yield(nil, err)
				return
			}
			if upTo = info.State.LastSeq; upTo == 0 {
				return
			}
		}
		info, err := l.stream.Info(ctx, jetstream.WithSubjectFilter(filter))
		if err != nil {
			yield(nil, err)
			return
		}
		// A cut past the end is the log as it stands (nats-server answers
		// an up_to_seq beyond its last sequence with no messages at all).
		upTo = min(upTo, info.State.LastSeq)
		subjects := slices.Sorted(maps.Keys(info.State.Subjects))
		for chunk := range slices.Chunk(subjects, maxLastPerRequest) {
			msgs, err := jetstreamext.GetLastMsgsFor(ctx, l.js, StreamName, chunk, jetstreamext.GetLastMsgsUpToSeq(upTo))
			if err != nil {
				yield(nil, err)
				return
			}
			for raw, err := range msgs {
				if errors.Is(err, jetstreamext.ErrNoMessages) {
					break // none of this chunk's subjects existed at upTo
				}
				if !yield(raw, err) || err != nil {
					return
				}
			}
		}
	}
}

func decodeDecision(raw *jetstream.RawStreamMsg) (StoredDecision, error) {
	var d messages.DecisionEvent
	if err := json.Unmarshal(raw.Data, &d); err != nil {
		return StoredDecision{}, fmt.Errorf("decode decision %d on %s: %w", raw.Sequence, raw.Subject, err)
	}
	return StoredDecision{Seq: raw.Sequence, DecisionEvent: d}, nil
}
