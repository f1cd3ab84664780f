package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"sniper/messages"
)

// Follower settings.
const (
	// DefaultCheckpointEvery is how often a follower writes its checkpoint
	// when it has moved: what a restart reads again at most.
	DefaultCheckpointEvery = time.Second
	// followCheckEvery is how often a follower compares its position with
	// the log's, to replace a reader that stopped following (see watch).
	followCheckEvery = 5 * time.Second
	// followOpTimeout bounds one read of the log by the follower itself
	// (its checkpoint, the log's last sequence).
	followOpTimeout = 5 * time.Second
)

// FollowSpec says what a follower reads and where it starts.
type FollowSpec struct {
	// Name names the follower in logs and, with Checkpointed, its
	// checkpoint's subject: sniper.@<Name>.checkpoint.
	Name string
	// Filters are the subjects to read, wildcards allowed.
	Filters []string
	// Checkpointed keeps a checkpoint in the log: the follower starts
	// after the stored one and writes a new one, every CheckpointEvery,
	// below which every delivery is Done.
	Checkpointed bool
	// From is the first sequence to read when there is no checkpoint
	// (0: the start of the stream).
	From uint64
	// CheckpointEvery is how often a moved checkpoint is written
	// (0: DefaultCheckpointEvery).
	CheckpointEvery time.Duration
	Logger          *slog.Logger
}

// Delivery is one message handed out by a follower.
type Delivery struct {
	Seq     uint64
	Subject string
	Time    time.Time
	Data    []byte
	// Pending is how many messages on the follower's subjects the log
	// held after this one when it was delivered: 0 means caught up.
	Pending uint64
}

// Follower reads the messages on some subjects in log order with one
// ordered consumer, whatever the number of auctions: no acks, no durable
// consumer state on the server. Its cursor is in the log itself: the
// caller says when it is Done with each delivery, and the follower keeps
// a checkpoint (a low-water mark: every delivery at or below it is done)
// as a message of its own subject, rolled up so only the latest stays.
// After a crash it reads again from the checkpoint; the caller skips what
// its own state says it handled already (a sniper's decision records the
// input it answers).
type Follower struct {
	log    *Log
	spec   FollowSpec
	logger *slog.Logger
	start  uint64 // first sequence read

	mu        sync.Mutex
	pending   []uint64            // delivered, not done, in ascending order
	done      map[uint64]struct{} // done, but behind an older pending one
	delivered uint64              // the last sequence handed out
	saved     uint64              // the checkpoint last written
	idle      chan struct{}       // closed when nothing is pending; nil until asked for
}

// CheckpointSubject is where the follower named name keeps its
// checkpoint. '@' cannot occur in an item id, so no auction's history
// (sniper.<item>.>) holds it.
func CheckpointSubject(name string) string {
	return messages.SubjectPrefix + ".@" + name + ".checkpoint"
}

// checkpointEvent is the payload of a checkpoint.
type checkpointEvent struct {
	Type     string `json:"type"` // "checkpoint"
	Follower string `json:"follower"`
	Seq      uint64 `json:"seq"`
}

// Follower prepares a follower: with a checkpoint, it reads where the
// stored one says.
func (l *Log) Follower(ctx context.Context, spec FollowSpec) (*Follower, error) {
	if spec.Logger == nil {
		spec.Logger = slog.Default()
	}
	if spec.CheckpointEvery == 0 {
		spec.CheckpointEvery = DefaultCheckpointEvery
	}
	f := &Follower{log: l, spec: spec, logger: spec.Logger.With("follower", spec.Name), done: map[uint64]struct{}{}}
	from := max(spec.From, 1)
	if spec.Checkpointed {
		raw, err := l.lastOn(ctx, CheckpointSubject(spec.Name))
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return nil, fmt.Errorf("follower %s: read checkpoint: %w", spec.Name, err)
		default:
			var c checkpointEvent
			if err := json.Unmarshal(raw.Data, &c); err != nil {
				return nil, fmt.Errorf("follower %s: decode checkpoint %d: %w", spec.Name, raw.Sequence, err)
			}
			from = c.Seq + 1
			f.saved = c.Seq
		}
	}
	f.start, f.delivered = from, from-1
	return f, nil
}

// Start is the first sequence the follower reads.
func (f *Follower) Start() uint64 { return f.start }

// Done tells the follower the caller is finished with the delivery at
// seq: the checkpoint may move past it.
func (f *Follower) Done(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pending) == 0 || f.pending[0] != seq {
		f.done[seq] = struct{}{}
		return
	}
	f.pending = f.pending[1:]
	for len(f.pending) > 0 {
		if _, ok := f.done[f.pending[0]]; !ok {
			break
		}
		delete(f.done, f.pending[0])
		f.pending = f.pending[1:]
	}
	if len(f.pending) == 0 && f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
}

// WaitIdle waits until every delivery so far is done, or ctx ends.
func (f *Follower) WaitIdle(ctx context.Context) error {
	f.mu.Lock()
	if len(f.pending) == 0 {
		f.mu.Unlock()
		return nil
	}
	if f.idle == nil {
		f.idle = make(chan struct{})
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Checkpoint is the low-water mark: every delivery at or below it is done.
func (f *Follower) Checkpoint() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checkpoint()
}

func (f *Follower) checkpoint() uint64 {
	if len(f.pending) > 0 {
		return f.pending[0] - 1
	}
	return f.delivered
}

// Pending is how many deliveries are not done yet.
func (f *Follower) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending) - len(f.done)
}

// Delivered is the sequence of the last delivery.
func (f *Follower) Delivered() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delivered
}

// SaveCheckpoint writes the checkpoint if it moved since the last write.
func (f *Follower) SaveCheckpoint(ctx context.Context) error {
	if !f.spec.Checkpointed {
		return nil
	}
	f.mu.Lock()
	seq, saved := f.checkpoint(), f.saved
	f.mu.Unlock()
	if seq <= saved {
		return nil
	}
	data, err := json.Marshal(checkpointEvent{Type: "checkpoint", Follower: f.spec.Name, Seq: seq})
	if err != nil {
		return err
	}
	m := nats.NewMsg(CheckpointSubject(f.spec.Name))
	m.Data = data
	// Only the latest checkpoint is worth keeping.
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	if _, err := f.log.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("follower %s: write checkpoint %d: %w", f.spec.Name, seq, err)
	}
	f.mu.Lock()
	f.saved = max(f.saved, seq)
	f.mu.Unlock()
	return nil
}

// Run hands every message on the follower's subjects to handle, in log
// order, until ctx ends; handle runs on Run's goroutine and must not block
// for long (hand the work on and call Done when it is finished). With a
// checkpoint, Run writes it every CheckpointEvery while it runs; the
// caller writes the last one (SaveCheckpoint) once it has finished what
// was delivered.
//
// The reader is an ordered consumer, which nats.go recreates after a
// disconnection, a server restart or a gap. A reader that stops all the
// same (seen on a cluster when the server holding it crashed: its
// recreation can hang while the dead server still counts as a peer) is
// replaced: every followCheckEvery the follower compares its position with
// the log's last message on its subjects.
func (f *Follower) Run(ctx context.Context, handle func(Delivery)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if f.spec.Checkpointed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.keepCheckpoint(ctx)
		}()
	}
	delay := 100 * time.Millisecond
	for ctx.Err() == nil {
		readCtx, cancel := context.WithCancel(ctx)
		err := f.read(readCtx, cancel, handle)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			f.logger.Error("reading the log failed; reading again", "from", f.Delivered()+1, "error", err, "retry_in", delay)
		} else {
			f.logger.Warn("the reader stopped following the log; replacing it", "from", f.Delivered()+1)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		delay = min(2*delay, 5*time.Second)
	}
	return nil
}

// read follows the log from the message after the last delivery until
// ctx ends (nil) or the reader fails; its watchdog calls restart.
func (f *Follower) read(ctx context.Context, restart context.CancelFunc, handle func(Delivery)) error {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: f.spec.Filters,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    f.Delivered() + 1,
		// The name says whose it is in `nats consumer report`:
		// <name>_<nuid>_<n>. Unique per reader: nats.go numbers each
		// ordered consumer from 1, and a stopped one stays on the server
		// for its InactiveThreshold (5 min), so a reader named <name>_1
		// again (a replaced reader, a follower of the same name started
		// again) would update it and fail (10012: start sequence can not
		// be updated), or attach to it.
		NamePrefix: f.spec.Name + "_" + nuid.Next(),
	}
	createCtx, cancelCreate := context.WithTimeout(ctx, followOpTimeout)
	cons, err := f.log.stream.OrderedConsumer(createCtx, readerConfig(cfg))
	cancelCreate()
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	defer f.log.deleteReader(ctx, cons, f.logger)
	watched := make(chan struct{})
	defer func() { <-watched }()
	go func() {
		defer close(watched)
		f.watch(ctx, restart, cons)
	}()
	it, err := cons.Messages(jetstream.PullExpiry(10*time.Second), jetstream.PullHeartbeat(2*time.Second))
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	defer it.Stop()
	defer context.AfterFunc(ctx, it.Stop)()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("message metadata: %w", err)
		}
		seq := meta.Sequence.Stream
		f.mu.Lock()
		fresh := seq > f.delivered
		if fresh {
			f.delivered = seq
			f.pending = append(f.pending, seq)
		}
		f.mu.Unlock()
		if fresh {
			handle(Delivery{Seq: seq, Subject: msg.Subject(), Time: meta.Timestamp, Data: msg.Data(), Pending: meta.NumPending})
		}
	}
}

// watch cancels the read (restart) when the reader has had messages
// pending without the position moving for two checks in a row, or could
// not be asked for three: a reader that is merely slow (a loaded machine)
// moves, a stuck one does not. It asks the reader itself (consumer info),
// not the log's last message on the filters, which the server finds by
// walking every matching subject (at 100,000 auctions, most of the idle
// CPU). The checks are rare and patient because under heavy load the
// server takes seconds to answer them, and replacing a reader that is
// merely slow adds to that load (seen: a spiral of replacements at
// 100,000 auctions with checks every second).
func (f *Follower) watch(ctx context.Context, restart context.CancelFunc, cons jetstream.Consumer) {
	t := time.NewTicker(followCheckEvery)
	defer t.Stop()
	at := f.Delivered() // the position at the previous check
	still := 0          // checks in a row that found the position still with messages pending
	mute := 0           // checks in a row the reader did not answer
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := f.Delivered()
		infoCtx, cancel := context.WithTimeout(ctx, followCheckEvery)
		info, err := cons.Info(infoCtx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && f.log.Available() == nil:
			mute++ // connected, and the reader does not answer
		case err == nil && info.NumPending > 0 && now == at:
			still++
			mute = 0
		default:
			still, mute = 0, 0
		}
		at = now
		if still >= 2 || mute >= 3 {
			restart()
			return
		}
	}
}

func (f *Follower) keepCheckpoint(ctx context.Context) {
	t := time.NewTicker(f.spec.CheckpointEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		opCtx, cancel := context.WithTimeout(ctx, followOpTimeout)
		err := f.SaveCheckpoint(opCtx)
		cancel()
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			f.logger.Warn("cannot write the checkpoint; a restart reads more of the log again", "error", err)
			failing = true
		case err == nil && failing:
			f.logger.Info("checkpoint written again", "seq", f.Checkpoint())
			failing = false
		}
	}
}
