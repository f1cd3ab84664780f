package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sniper/messages"
)

// StreamName is the one stream holding every fact of the sniper.
const StreamName = "SNIPER"

// StreamConfig is what the operator may choose about the stream.
type StreamConfig struct {
	// Replicas is 1 for the embedded server, 3 on a cluster.
	Replicas int
	// DuplicateWindow bounds how long Nats-Msg-Id de-duplication lasts.
	DuplicateWindow time.Duration
	// MaxBytes caps the store (0: unlimited).
	MaxBytes int64
	// Logger hears about a wait for a JetStream cluster still forming
	// (nil: nothing is said).
	Logger *slog.Logger
}

// Log is the sniper's view of the SNIPER stream.
type Log struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
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
		// Direct gets serve the per-auction decision reads in one round trip.
		AllowDirect: true,
		// Followers keep their checkpoint as the one message of its
		// subject (see Follow).
		AllowRollup: true,
		Discard:     jetstream.DiscardNew,
	}
	if cfg.MaxBytes == 0 {
		sc.MaxBytes = -1
	}
	var stream jetstream.Stream
	err = createPatiently(ctx, "stream "+StreamName, cfg.Logger, func(ctx context.Context) error {
		var err error
		stream, err = js.CreateOrUpdateStream(ctx, sc)
		return err
	})
	if err != nil {
		if old, ierr := js.Stream(ctx, StreamName); ierr == nil {
			if info := old.CachedInfo(); info != nil && info.Config.Replicas != cfg.Replicas {
				return nil, fmt.Errorf("stream %s has %d replicas and --replicas asks for %d, which the cluster cannot make (%w): give it enough nodes, or set --replicas %d", StreamName, info.Config.Replicas, cfg.Replicas, err, info.Config.Replicas)
			}
		}
		return nil, fmt.Errorf("create or update stream %s with %d replicas (--replicas): %w", StreamName, cfg.Replicas, err)
	}
	return &Log{nc: nc, js: js, stream: stream}, nil
}

// createAttempt bounds one attempt to create a stream or bucket.
const createAttempt = 5 * time.Second

// createPatiently runs create until it succeeds, fails for good, or ctx
// ends, each attempt bounded by createAttempt. Two things are worth
// waiting for. On a cluster just starting, JetStream answers nothing, or
// "temporarily unavailable", or finds "no suitable peers" until the meta
// leader is elected and knows enough peers. And instances started
// together create the same stream at once, and nats-server may leave one
// of the identical requests unanswered (seen: one of three, every time,
// waited for its whole deadline): a second attempt finds the stream made.
func createPatiently(ctx context.Context, what string, logger *slog.Logger, create func(context.Context) error) error {
	began := time.Now()
	lastSaid := began
	for {
		attempt, cancel := context.WithTimeout(ctx, createAttempt)
		err := create(attempt)
		cancel()
		if err == nil || ctx.Err() != nil || !clusterNotReady(err) {
			return err
		}
		if logger != nil && time.Since(lastSaid) >= 5*time.Second {
			logger.Info("waiting for the JetStream cluster: its meta leader is not elected yet, or it has too few peers", "creating", what, "waited", time.Since(began).Round(time.Second), "error", err)
			lastSaid = time.Now()
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// clusterNotReady recognises the answers of a JetStream cluster that is
// still forming.
func clusterNotReady(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return true
	}
	code, _, ok := apiCode(err)
	return ok && (code == codeClusterNotAvailable || code == codeNoResources || code == codeClusterNoPeers)
}

// LastSeq is the sequence of the stream's last message (0: empty).
func (l *Log) LastSeq(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	return info.State.LastSeq, nil
}

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

// AppendOptions says what opts ask of an append: the message id (WithMsgID,
// "" for none) and whether it must be the first on its subject
// (FirstOfSubject). It is for other implementations of Append, such as an
// in-memory log in a test, which cannot read the options' fields.
func AppendOptions(opts ...AppendOption) (msgID string, firstOfSubject bool) {
	var o appendOpts
	for _, opt := range opts {
		opt(&o)
	}
	return o.msgID, o.firstOfSub
}

// Append writes one JSON payload to subject and returns its sequence.
func (l *Log) Append(ctx context.Context, subject string, payload any, opts ...AppendOption) (uint64, error) {
	msgID, firstOfSub := AppendOptions(opts...)
	data, err := json.Marshal(payload)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", subject, err)
	}
	var pubOpts []jetstream.PublishOpt
	if msgID != "" {
		pubOpts = append(pubOpts, jetstream.WithMsgID(msgID))
	}
	if firstOfSub {
		pubOpts = append(pubOpts, jetstream.WithExpectLastSequencePerSubject(0))
	}
	ack, err := l.js.Publish(ctx, subject, data, pubOpts...)
	for attempt := 1; err != nil && firstOfSub && isWrongLastSequence(err); attempt++ {
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

// LastSeqOn returns the sequence of the stream's last message on filter,
// which may hold wildcards, and 0 if there is none. It is one direct get
// (any replica answers), for a reader checking that it keeps up.
func (l *Log) LastSeqOn(ctx context.Context, filter string) (uint64, error) {
	raw, err := l.lastOn(ctx, filter)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return raw.Sequence, nil
}

// lastOn returns the stream's last message on filter, which may hold
// wildcards (nats.go's GetLastMsgForSubject puts the subject in the API
// subject, where a wildcard is not allowed), or ErrNotFound. It asks with
// a direct get, which any replica answers; on a replicated stream just
// created, or while replicas catch up, nobody may answer direct gets yet,
// and the stream leader is asked instead.
func (l *Log) lastOn(ctx context.Context, filter string) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(struct {
		LastBySubj string `json:"last_by_subj"`
	}{filter})
	if err != nil {
		return nil, err
	}
	res, err := l.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+StreamName, req)
	if errors.Is(err, nats.ErrNoResponders) {
		return l.lastOnLeader(ctx, filter, req)
	}
	if err != nil {
		return nil, fmt.Errorf("last message on %s: %w", filter, err)
	}
	if status := res.Header.Get("Status"); status == "404" {
		return nil, fmt.Errorf("last message on %s: %w", filter, ErrNotFound)
	} else if status != "" {
		return nil, fmt.Errorf("last message on %s: status %s %s", filter, status, res.Header.Get("Description"))
	}
	seq, err := strconv.ParseUint(res.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("last message on %s: bad sequence header: %w", filter, err)
	}
	raw := &jetstream.RawStreamMsg{Subject: res.Header.Get(jetstream.SubjectHeader), Sequence: seq, Header: res.Header, Data: res.Data}
	if ts, err := time.Parse(time.RFC3339Nano, res.Header.Get("Nats-Time-Stamp")); err == nil {
		raw.Time = ts
	}
	return raw, nil
}

// lastOnLeader is lastOn through the stream leader's message API.
func (l *Log) lastOnLeader(ctx context.Context, filter string, req []byte) (*jetstream.RawStreamMsg, error) {
	res, err := l.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+StreamName, req)
	if err != nil {
		return nil, fmt.Errorf("last message on %s: %w", filter, err)
	}
	var body struct {
		Message *struct {
			Subject string    `json:"subject"`
			Seq     uint64    `json:"seq"`
			Data    []byte    `json:"data"`
			Time    time.Time `json:"time"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(res.Data, &body); err != nil {
		return nil, fmt.Errorf("last message on %s: %w", filter, err)
	}
	switch {
	case body.Error != nil && body.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, fmt.Errorf("last message on %s: %w", filter, ErrNotFound)
	case body.Error != nil:
		return nil, fmt.Errorf("last message on %s: %w", filter, body.Error)
	case body.Message == nil:
		return nil, fmt.Errorf("last message on %s: empty answer", filter)
	}
	m := body.Message
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Seq, Data: m.Data, Time: m.Time}, nil
}

// readerInactiveThreshold is how long the server keeps an ordered
// consumer nobody pulls from, instead of nats.go's 5 minutes: a live one
// pulls at least every PullExpiry (10 s), and one left behind (its process
// died) must not count against the stream for long.
const readerInactiveThreshold = 30 * time.Second

// readerConfig is an ordered consumer of ours: a short inactive threshold.
func readerConfig(cfg jetstream.OrderedConsumerConfig) jetstream.OrderedConsumerConfig {
	cfg.InactiveThreshold = readerInactiveThreshold
	return cfg
}

// deleteReader removes an ordered consumer that is done with (nats.go's
// Stop leaves it on the server until its inactive threshold), so that the
// stream's consumers stay one per follower.
//
// It runs as its reader's caller returns, often because ctx ended: the
// delete is bounded by its own timeout, not by ctx's cancellation.
func (l *Log) deleteReader(ctx context.Context, cons jetstream.Consumer, logger *slog.Logger) {
	info := cons.CachedInfo()
	if info == nil || l.Available() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := l.stream.DeleteConsumer(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) && logger != nil {
		logger.Debug("cannot delete a finished reader; the server drops it when it goes inactive", "consumer", info.Name, "error", err)
	}
}

// Last returns the stream's last message on subject (no wildcards needed,
// though they are allowed), or an error wrapping ErrNotFound: one direct
// get, which any replica answers.
func (l *Log) Last(ctx context.Context, subject string) (Record, error) {
	raw, err := l.lastOn(ctx, subject)
	if err != nil {
		return Record{}, err
	}
	return Record{Seq: raw.Sequence, Subject: raw.Subject, Time: raw.Time, Data: raw.Data}, nil
}
