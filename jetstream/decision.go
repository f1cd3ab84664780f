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

// Decision is everything one input produced: the sniper's new state and its
// requests to the auction house. It is committed as one atomic batch.
type Decision struct {
	Item string
	// Fence is the sequence of the snapshot the decider started from (0 if
	// the auction has none yet). The commit fails with ErrConflict if the
	// auction's last snapshot is no longer that one.
	Fence    uint64
	InputSeq uint64
	Snapshot messages.SnapshotEvent
	Outputs  []messages.Outgoing
}

// Commit writes the decision as one atomic batch, the snapshot first, and
// returns the new snapshot's sequence. Either all of it is in the log or
// none of it is.
//
// The fence sits on the auction's snapshot subject only: inputs keep
// arriving under the same auction while it decides, and fencing on the
// whole auction would refuse every decision made during a burst. Message
// ids are <item>/<input_seq>/<n>, so a retried batch cannot land twice.
func (l *Log) Commit(ctx context.Context, d Decision) (uint64, error) {
	msgs := make([]*nats.Msg, 0, 1+len(d.Outputs))
	snapSubject := messages.Subject(d.Item, messages.KindState, messages.TypeSnapshot)
	all := append([]messages.Outgoing{{Subject: snapSubject, Payload: d.Snapshot}}, d.Outputs...)
	for i, out := range all {
		data, err := json.Marshal(out.Payload)
		if err != nil {
			return 0, fmt.Errorf("encode %s: %w", out.Subject, err)
		}
		// nats.NewMsg, not a literal: PublishMsgBatch writes headers and
		// panics on a nil Header.
		m := nats.NewMsg(out.Subject)
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, d.Item+"/"+strconv.FormatUint(d.InputSeq, 10)+"/"+strconv.Itoa(i))
		if i == 0 {
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(d.Fence, 10))
		}
		msgs = append(msgs, m)
	}
	seq, err := l.publishDecision(ctx, msgs)
	if err != nil {
		if isConflict(err) {
			return 0, fmt.Errorf("commit decision on %s for input %d: %w: %v", d.Item, d.InputSeq, ErrConflict, err)
		}
		if isFull(err) {
			return 0, fmt.Errorf("commit decision on %s for input %d: %w: %w", d.Item, d.InputSeq, ErrFull, err)
		}
		return 0, fmt.Errorf("commit decision on %s for input %d: %w", d.Item, d.InputSeq, err)
	}
	return seq, nil
}

// publishDecision stores a decision's messages and returns the snapshot's
// sequence. A decision of one message (no outputs: most prices, the close)
// is a plain fenced publish, atomic by itself; only one with outputs pays
// for an atomic batch, which nats-server stages in a fresh on-disk store
// per batch on an R1 file stream: measured at ~3 ms against ~0.1 ms for a
// publish (docs/benchmarks.md).
func (l *Log) publishDecision(ctx context.Context, msgs []*nats.Msg) (uint64, error) {
	if len(msgs) == 1 {
		ack, err := l.js.PublishMsg(ctx, msgs[0])
		if err != nil {
			return 0, err
		}
		if ack.Duplicate {
			// Stored before under the same id: this decision was already
			// made, by us before a crash or by another writer. Same
			// answer as the batch's 10201.
			return 0, errDuplicateDecision
		}
		return ack.Sequence, nil
	}
	ack, err := jetstreamext.PublishMsgBatch(ctx, l.js, msgs)
	if err != nil {
		return 0, err
	}
	// The batch ack carries the last message's sequence; the snapshot is
	// the first of the batch.
	return ack.Sequence - uint64(len(msgs)-1), nil
}

// isConflict recognises the server's answers that mean "someone else wrote
// this auction's snapshot first": a stale fence (10071, 10164) or a batch
// whose message ids are already stored (10201).
var errDuplicateDecision = errors.New("decision already stored (duplicate message id)")

func isConflict(err error) bool {
	if errors.Is(err, errDuplicateDecision) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10071, 10164, 10201:
			return true
		}
	}
	return false
}

// StoredSnapshot is an auction's last snapshot and where it sits.
type StoredSnapshot struct {
	Seq uint64
	messages.SnapshotEvent
}

// LastSnapshot returns one auction's most recent snapshot, or ErrNotFound.
func (l *Log) LastSnapshot(ctx context.Context, item string) (StoredSnapshot, error) {
	subject := messages.Subject(item, messages.KindState, messages.TypeSnapshot)
	raw, err := l.stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return StoredSnapshot{}, fmt.Errorf("snapshot of %s: %w", item, ErrNotFound)
		}
		return StoredSnapshot{}, fmt.Errorf("snapshot of %s: %w", item, err)
	}
	return decodeSnapshot(raw)
}

// Snapshots returns the last snapshot of every auction: recovery reads one
// message per auction, not the whole history.
func (l *Log) Snapshots(ctx context.Context) ([]StoredSnapshot, error) {
	return l.SnapshotsUpTo(ctx, 0)
}

// SnapshotsUpTo is Snapshots as the log stood at sequence seq (0: now), so
// a reader can follow on from seq+1 without a gap or an overlap.
func (l *Log) SnapshotsUpTo(ctx context.Context, seq uint64) ([]StoredSnapshot, error) {
	var out []StoredSnapshot
	for raw, err := range l.lastPerSubject(ctx, messages.Subject("*", messages.KindState, messages.TypeSnapshot), seq) {
		if err != nil {
			return nil, fmt.Errorf("read snapshots: %w", err)
		}
		s, err := decodeSnapshot(raw)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// StartedItems lists every auction that has a start command, with it.
func (l *Log) StartedItems(ctx context.Context) ([]messages.StartCommand, error) {
	var out []messages.StartCommand
	for raw, err := range l.lastPerSubject(ctx, messages.Subject("*", messages.KindCmd, messages.TypeStart), 0) {
		if err != nil {
			return nil, fmt.Errorf("read start commands: %w", err)
		}
		var c messages.StartCommand
		if err := json.Unmarshal(raw.Data, &c); err != nil {
			return nil, fmt.Errorf("decode start command %d: %w", raw.Sequence, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// maxLastPerRequest is how many subjects one multi-last direct get may
// match: nats-server (maxAllowedResponses) answers more with "413 Too Many
// Results", which jetstreamext reports as ErrBatchUnsupported.
const maxLastPerRequest = 1024

// lastPerSubject yields the last message, up to seq (0: now), of each
// subject matching filter, ending quietly when there is none.
//
// One request with the wildcard filter would stop working at the 1025th
// auction, so the matching subjects are listed first and asked for in
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

func decodeSnapshot(raw *jetstream.RawStreamMsg) (StoredSnapshot, error) {
	var s messages.SnapshotEvent
	if err := json.Unmarshal(raw.Data, &s); err != nil {
		return StoredSnapshot{}, fmt.Errorf("decode snapshot %d on %s: %w", raw.Sequence, raw.Subject, err)
	}
	return StoredSnapshot{Seq: raw.Sequence, SnapshotEvent: s}, nil
}
