package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sniper/messages"
)

// StreamName is the one stream holding every fact of the sniper.
const StreamName = "SNIPER"

// Sentinel errors, for errors.Is.
var (
	// ErrConflict means another writer decided for the same auction first
	// (the snapshot fence moved): reload the snapshot and decide again.
	ErrConflict = errors.New("concurrent decision for the same auction")
	// ErrNotFound means the log holds nothing for the request.
	ErrNotFound = errors.New("not found in the log")
	// ErrExists means an append fenced on "first of its subject" found one.
	ErrExists = errors.New("already in the log")
	// ErrFull means the stream refused a write because it reached a limit
	// (MaxMsgs, MaxBytes, the server's storage): nothing was written.
	ErrFull = errors.New("the event log is full")
	// ErrUnavailable means there is no connection to the log right now.
	ErrUnavailable = errors.New("the event log is unavailable")
)

// StreamConfig is what the operator may choose about the stream.
type StreamConfig struct {
	// Replicas is 1 for the embedded server, 3 on a cluster.
	Replicas int
	// DuplicateWindow bounds how long Nats-Msg-Id de-duplication lasts.
	DuplicateWindow time.Duration
	// MaxBytes caps the store (0: unlimited).
	MaxBytes int64
	// AckWait is the consumers' redelivery delay (0: DefaultAckWait).
	AckWait time.Duration
}

// Log is the sniper's view of the SNIPER stream.
type Log struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  jetstream.Stream
	ackWait time.Duration
}

// Open creates or updates the SNIPER stream and returns the log on it.
func Open(ctx context.Context, nc *nats.Conn, cfg StreamConfig) (*Log, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream context: %w", err)
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.DuplicateWindow == 0 {
		cfg.DuplicateWindow = 2 * time.Minute
	}
	sc := jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Auction sniper event log: commands, auction events, decisions and states",
		Subjects:    []string{messages.SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
		MaxBytes:    cfg.MaxBytes,
		// Direct gets serve the per-auction snapshot reads in one round trip.
		AllowDirect:        true,
		AllowAtomicPublish: true,
		Discard:            jetstream.DiscardNew,
	}
	if cfg.MaxBytes == 0 {
		sc.MaxBytes = -1
	}
	stream, err := js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w", StreamName, err)
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = DefaultAckWait
	}
	return &Log{nc: nc, js: js, stream: stream, ackWait: cfg.AckWait}, nil
}

// JetStream exposes the underlying context for consumers.
func (l *Log) JetStream() jetstream.JetStream { return l.js }

// Stream exposes the underlying stream handle.
func (l *Log) Stream() jetstream.Stream { return l.stream }

// AppendOption refines an Append.
type AppendOption func(*appendOpts)

type appendOpts struct {
	msgID      string
	firstOfSub bool
}

// WithMsgID de-duplicates retries of the same append within the window.
func WithMsgID(id string) AppendOption { return func(o *appendOpts) { o.msgID = id } }

// FirstOfSubject fails the append with ErrExists when the subject already
// holds a message: how "start" stays once-only even across instances.
func FirstOfSubject() AppendOption { return func(o *appendOpts) { o.firstOfSub = true } }

// Append writes one JSON payload to subject and returns its sequence.
func (l *Log) Append(ctx context.Context, subject string, payload any, opts ...AppendOption) (uint64, error) {
	var o appendOpts
	for _, opt := range opts {
		opt(&o)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", subject, err)
	}
	var pubOpts []jetstream.PublishOpt
	if o.msgID != "" {
		pubOpts = append(pubOpts, jetstream.WithMsgID(o.msgID))
	}
	if o.firstOfSub {
		pubOpts = append(pubOpts, jetstream.WithExpectLastSequencePerSubject(0))
	}
	ack, err := l.js.Publish(ctx, subject, data, pubOpts...)
	for attempt := 1; err != nil && o.firstOfSub && isWrongLastSequence(err); attempt++ {
		// On a replicated stream 10164 also means "another write to this
		// subject is in flight", which may yet fail: only a stored message
		// makes this one a duplicate.
		exists, herr := l.Has(ctx, subject)
		if herr != nil {
			return 0, fmt.Errorf("append %s: %w", subject, herr)
		}
		if exists {
			return 0, fmt.Errorf("append %s: %w", subject, ErrExists)
		}
		if attempt == 3 {
			break
		}
		ack, err = l.js.Publish(ctx, subject, data, pubOpts...)
	}
	if err != nil {
		if isFull(err) {
			return 0, fmt.Errorf("append %s: %w: %w", subject, ErrFull, err)
		}
		return 0, fmt.Errorf("append %s: %w", subject, err)
	}
	return ack.Sequence, nil
}

// Available returns nil when the connection to the log is up, and an
// error wrapping ErrUnavailable otherwise. A publish while the client is
// reconnecting is buffered and would wait out its whole timeout: callers
// that answer a person check this first and fail fast.
func (l *Log) Available() error {
	if st := l.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("%w: not connected to NATS (%s)", ErrUnavailable, st)
	}
	return nil
}

// Has reports whether subject holds at least one message.
func (l *Log) Has(ctx context.Context, subject string) (bool, error) {
	_, err := l.stream.GetLastMsgForSubject(ctx, subject)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	}
	return false, fmt.Errorf("look up %s: %w", subject, err)
}

// Record is one stored message, as the history shows it.
type Record struct {
	Seq     uint64
	Subject string
	Time    time.Time
	Data    json.RawMessage
}

// History returns every message of one auction in log order.
func (l *Log) History(ctx context.Context, item string) ([]Record, error) {
	return l.read(ctx, messages.ItemFilter(item), 0)
}

// HistoryUpTo returns an auction's messages up to and including seq.
func (l *Log) HistoryUpTo(ctx context.Context, item string, seq uint64) ([]Record, error) {
	return l.read(ctx, messages.ItemFilter(item), seq)
}

// read drains an ordered consumer over filter; upTo > 0 stops there.
// Stream info tells up front whether there is anything to read, so an
// empty history costs no consumer.
func (l *Log) read(ctx context.Context, filter string, upTo uint64) ([]Record, error) {
	info, err := l.stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("stream info for %s: %w", filter, err)
	}
	if len(info.State.Subjects) == 0 {
		return nil, nil
	}
	cons, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filter, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filter, err)
	}
	defer it.Stop()
	var out []Record
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", filter, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", filter, err)
		}
		if upTo > 0 && meta.Sequence.Stream > upTo {
			return out, nil
		}
		out = append(out, Record{Seq: meta.Sequence.Stream, Subject: msg.Subject(), Time: meta.Timestamp, Data: msg.Data()})
		if meta.NumPending == 0 {
			return out, nil
		}
	}
}

// isFull recognises a write refused for lack of space: a stream limit with
// DiscardNew (10077 "maximum messages/bytes exceeded") or the server's or
// account's storage (10047).
func isFull(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch {
		case apiErr.ErrorCode == 10047:
			return true
		case apiErr.ErrorCode == 10077 && strings.Contains(apiErr.Description, "exceeded"):
			return true
		}
	}
	return false
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10071, 10164:
			return true
		}
	}
	return false
}

// LastSeqOn returns the sequence of the stream's last message on filter,
// which may hold wildcards, and 0 if there is none. It is one direct get
// (any replica answers), for a reader checking that it keeps up.
func (l *Log) LastSeqOn(ctx context.Context, filter string) (uint64, error) {
	req, err := json.Marshal(struct {
		LastBySubj string `json:"last_by_subj"`
	}{filter})
	if err != nil {
		return 0, err
	}
	res, err := l.js.Conn().RequestWithContext(ctx, "$JS.API.DIRECT.GET."+StreamName, req)
	if err != nil {
		return 0, fmt.Errorf("last message on %s: %w", filter, err)
	}
	if status := res.Header.Get("Status"); status == "404" {
		return 0, nil
	} else if status != "" {
		return 0, fmt.Errorf("last message on %s: status %s %s", filter, status, res.Header.Get("Description"))
	}
	seq, err := strconv.ParseUint(res.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("last message on %s: bad sequence header: %w", filter, err)
	}
	return seq, nil
}
