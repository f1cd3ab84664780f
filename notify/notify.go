// Package notify tells a receiver over HTTP when a sniper's state
// changes: a JSON POST per final state (Won, Lost, Failed, Stopped), or per
// state change, retried until the receiver accepts it (a 2xx).
//
// The cursor is in the log: a checkpointed jetstream.Follower named
// "notify" reads every decision (sniper.*.dec.*), and a decision is Done
// only once its notification was accepted (or there was nothing to send),
// so a restart reads again from the checkpoint, and skips what the last
// out.notified record in the log says was accepted since. Delivery is at
// least once: a notification accepted just before a crash (between the
// receiver's 2xx and its out.notified record), or whose answer was lost,
// comes again with the same Idempotency-Key (the decision's sequence in
// the log), by which the receiver recognises it.
//
// Notifications go one at a time, in log order: a receiver sees an
// auction's states in the order they happened, and one that is down costs
// one request per backoff, not one per auction. The price is that one
// failing receiver (a per-sniper URL that is down) holds up the
// notifications of every other auction behind it; the backlog shows in
// the metrics (sniper_follower_undone_messages{follower="notify"}) and
// each held event in its auction's history (out.notify_failed).
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"sniper/auction"
	"sniper/internal/clip"
	"sniper/jetstream"
	"sniper/messages"
)

// FollowerName names the notifier's follower: its checkpoint is
// sniper.@notify.checkpoint.
const FollowerName = "notify"

// What to notify (Config.On).
const (
	OnFinal = "final" // Won, Lost, Failed, Stopped
	OnAll   = "all"   // every change of state
)

// Header names.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderSignature      = "X-Sniper-Signature"
)

// Defaults.
const (
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	// DefaultTimeout bounds one attempt (the default client's timeout).
	DefaultTimeout = 10 * time.Second
	// DefaultGrace is how long Stop lets an attempt in flight finish.
	DefaultGrace = 3 * time.Second
)

// Observer counts notifications (the metrics implement it).
type Observer interface {
	// NotificationSent records a notification its receiver accepted.
	NotificationSent()
	// NotificationFailed records one failed attempt.
	NotificationFailed()
}

// Config says where and what to notify.
type Config struct {
	// URL receives every sniper's notifications but those of a sniper
	// started with a notify_url of its own; empty: only those.
	URL string
	// Secret, when set, signs each body: X-Sniper-Signature is
	// "sha256=" and the hex HMAC-SHA256 of the body under Secret.
	Secret string
	// On is OnFinal (the default) or OnAll.
	On string
	// Client sends the requests (nil: a client with DefaultTimeout that
	// follows no redirect).
	Client *http.Client
	// MinBackoff and MaxBackoff bound the wait between attempts, doubled
	// after each failure (0: DefaultMinBackoff, DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// CheckpointEvery is how often the cursor is written (0: the
	// follower's default).
	CheckpointEvery time.Duration
	// Grace bounds how long Stop waits for an attempt in flight (0:
	// DefaultGrace).
	Grace    time.Duration
	Logger   *slog.Logger
	Observer Observer
}

// CheckOn validates Config.On ("" is OnFinal).
func CheckOn(on string) error {
	switch on {
	case "", OnFinal, OnAll:
		return nil
	}
	return fmt.Errorf("notify on must be %q or %q, got %q", OnFinal, OnAll, on)
}

// Payload is the body of a notification.
type Payload struct {
	Item      string        `json:"item"`
	State     auction.State `json:"state"`
	From      auction.State `json:"from"`
	LastPrice int64         `json:"last_price"`
	LastBid   int64         `json:"last_bid"`
	StopPrice int64         `json:"stop_price"`
	Reason    string        `json:"reason"`
	// Seq is the decision's sequence in the log, also the
	// Idempotency-Key.
	Seq uint64 `json:"seq"`
	// Time is when the decision was stored.
	Time time.Time `json:"time"`
}

// Sign is the X-Sniper-Signature of body under secret.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify reports whether signature is body's under secret, in constant
// time: what a receiver does.
func Verify(secret string, body []byte, signature string) bool {
	return hmac.Equal([]byte(signature), []byte(Sign(secret, body)))
}

// Notifier follows the decisions and delivers their notifications.
type Notifier struct {
	cfg      Config
	log      *jetstream.Log
	logger   *slog.Logger
	follower *jetstream.Follower
	// notifiedThrough is the decision of the last notified record when
	// the notifier started: deliveries go in log order, so every decision
	// up to it was dealt with, whatever the checkpoint says.
	notifiedThrough uint64

	mu    sync.Mutex
	queue []job
	wake  chan struct{} // a job was queued
	urls  map[string]string

	stopReading context.CancelFunc
	readDone    chan struct{}
	stopping    chan struct{} // closed by Stop: no new attempt, no more waiting
	workCtx     context.Context
	stopWork    context.CancelFunc
	workDone    chan struct{}
	stopOnce    sync.Once
}

type job struct {
	seq  uint64
	time time.Time
	dec  messages.DecisionEvent
}

// Start starts following the decisions from the notifier's checkpoint.
// Without one (the first start), it begins at the end of the log: turning
// notifications on does not notify the past.
func Start(ctx context.Context, log *jetstream.Log, cfg Config) (*Notifier, error) {
	if err := CheckOn(cfg.On); err != nil {
		return nil, err
	}
	if cfg.On == "" {
		cfg.On = OnFinal
	}
	if cfg.Client == nil {
		// A redirect is not followed: net/http would turn the POST into
		// a GET, whose 2xx would count as delivered. A 3xx is a failure,
		// visible as such, until the URL is corrected.
		cfg.Client = &http.Client{Timeout: DefaultTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	logger := cfg.Logger.With("component", "notify")
	last, err := log.LastSeq(ctx)
	if err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	f, err := log.Follower(ctx, jetstream.FollowSpec{
		Name:            FollowerName,
		Filters:         []string{messages.DecisionFilter("*")},
		Checkpointed:    true,
		From:            last + 1, // without a checkpoint only
		CheckpointEvery: cfg.CheckpointEvery,
		Logger:          logger,
	})
	if err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	through, err := lastNotified(ctx, log)
	if err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	// The first start writes its starting point at once: a crash before
	// the first periodic checkpoint must not move it to a later end. A log
	// that refuses the write (full) must not keep the instance from
	// deciding: the follower writes it again every CheckpointEvery.
	if err := f.SaveCheckpoint(ctx); err != nil {
		logger.Warn("cannot write the notifier's first checkpoint yet; retrying with the next", "error", err)
	}
	n := &Notifier{cfg: cfg, log: log, logger: logger, follower: f, notifiedThrough: through, wake: make(chan struct{}, 1), urls: map[string]string{},
		readDone: make(chan struct{}), stopping: make(chan struct{}), workDone: make(chan struct{})}
	readCtx, stopReading := context.WithCancel(context.Background())
	n.stopReading = stopReading
	n.workCtx, n.stopWork = context.WithCancel(context.Background())
	go func() {
		defer close(n.readDone)
		_ = f.Run(readCtx, n.dispatch)
	}()
	go func() {
		defer close(n.workDone)
		n.work()
	}()
	logger.Info("notifier following the decisions", "from", f.Start(), "on", cfg.On, "url", cfg.URL != "", "signed", cfg.Secret != "")
	return n, nil
}

// lastNotified is the event_seq of the last notified record in the log (0:
// none): one read of the last message on sniper.*.out.notified at start.
// The checkpoint lags the deliveries by up to CheckpointEvery; this keeps
// a restart from sending again what was accepted in that time.
func lastNotified(ctx context.Context, log *jetstream.Log) (uint64, error) {
	rec, err := log.Last(ctx, messages.Subject("*", messages.KindOut, messages.TypeNotified))
	switch {
	case errors.Is(err, jetstream.ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read the last notification: %w", err)
	}
	var ev messages.NotifiedEvent
	if err := json.Unmarshal(rec.Data, &ev); err != nil {
		return 0, fmt.Errorf("decode the notified record %d: %w", rec.Seq, err)
	}
	return ev.EventSeq, nil
}

// Stop stops reading, lets an attempt in flight finish (up to the grace
// period) and writes the checkpoint; what was not delivered comes again
// after the next start. Calling it again does nothing.
func (n *Notifier) Stop() {
	n.stopOnce.Do(func() {
		n.stopReading()
		<-n.readDone
		close(n.stopping)
		t := time.NewTimer(n.cfg.Grace)
		select {
		case <-n.workDone:
		case <-t.C:
			n.stopWork()
			<-n.workDone
		}
		t.Stop()
		n.stopWork()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.follower.SaveCheckpoint(ctx); err != nil {
			n.logger.Warn("cannot write the notify checkpoint; the next start reads more of the log again", "error", err)
		}
		if held := n.follower.Pending(); held > 0 {
			n.logger.Info("notifications not delivered yet; they go out after the next start", "pending", held)
		}
	})
}

// Backlog is how many decisions the notifier was handed and has not
// finished with: waiting, or being retried.
func (n *Notifier) Backlog() int { return n.follower.Pending() }

// From is the first sequence the notifier read at its start.
func (n *Notifier) From() uint64 { return n.follower.Start() }

// Checkpoint is the notifier's cursor: every decision at or below it is
// notified or needed no notification.
func (n *Notifier) Checkpoint() uint64 { return n.follower.Checkpoint() }

// dispatch runs on the follower's goroutine: a decision that needs no
// notification is done at once, the others are queued for the worker.
func (n *Notifier) dispatch(d jetstream.Delivery) {
	var dec messages.DecisionEvent
	if err := json.Unmarshal(d.Data, &dec); err != nil {
		n.logger.Warn("undecodable decision; not notified", "seq", d.Seq, "subject", d.Subject, "error", err)
		n.follower.Done(d.Seq)
		return
	}
	if d.Seq <= n.notifiedThrough || !n.wanted(dec) {
		n.follower.Done(d.Seq)
		return
	}
	n.mu.Lock()
	n.queue = append(n.queue, job{seq: d.Seq, time: d.Time, dec: dec})
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// wanted says whether a decision is notified at all: a change of state
// (never a claim, which repeats the state), and with OnFinal only to Won,
// Lost, Failed or Stopped.
func (n *Notifier) wanted(dec messages.DecisionEvent) bool {
	if dec.Type == messages.TypeClaim || dec.From == dec.State {
		return false
	}
	return n.cfg.On == OnAll || dec.State.Terminal()
}

// work delivers the queued notifications one at a time, in log order.
func (n *Notifier) work() {
	for {
		n.mu.Lock()
		var j job
		ok := len(n.queue) > 0
		if ok {
			j = n.queue[0]
			n.queue = n.queue[1:]
		}
		n.mu.Unlock()
		if !ok {
			select {
			case <-n.stopping:
				return
			case <-n.wake:
				continue
			}
		}
		if !n.deliver(j) {
			return // stopping
		}
		n.follower.Done(j.seq)
	}
}

// deliver sends one notification until its receiver accepts it, and
// records it in the auction's history; false: stopped first.
func (n *Notifier) deliver(j job) bool {
	item := j.dec.Item
	body, err := json.Marshal(Payload{
		Item: item, State: j.dec.State, From: j.dec.From, LastPrice: j.dec.LastPrice, LastBid: j.dec.LastBid,
		StopPrice: j.dec.StopPrice, Reason: j.dec.Reason, Seq: j.seq, Time: j.time.UTC(),
	})
	if err != nil {
		n.logger.Error("cannot encode a notification; skipped", "item", item, "seq", j.seq, "error", err)
		return true
	}
	delay := n.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		if n.isStopping() {
			return false
		}
		url, err := n.urlOf(item)
		if err == nil && url == "" {
			return true // nowhere to send it
		}
		if err == nil {
			err = n.post(url, j.seq, body)
		}
		if err == nil {
			n.logger.Info("notified", "item", item, "state", string(j.dec.State), "seq", j.seq, "attempts", attempt)
			if n.cfg.Observer != nil {
				n.cfg.Observer.NotificationSent()
			}
			return n.record(messages.Subject(item, messages.KindOut, messages.TypeNotified),
				messages.NotifiedEvent{Type: messages.TypeNotified, Item: item, EventSeq: j.seq, Attempts: attempt},
				fmt.Sprintf("%s/notified/%d", item, j.seq), true)
		}
		if n.isStopping() {
			return false // the attempt was cut short, not failed
		}
		if n.cfg.Observer != nil {
			n.cfg.Observer.NotificationFailed()
		}
		if attempt == 1 {
			n.logger.Warn("notification failed; retrying until it is accepted", "item", item, "seq", j.seq, "error", err)
			n.record(messages.Subject(item, messages.KindOut, messages.TypeNotifyFailed),
				messages.NotifyFailedEvent{Type: messages.TypeNotifyFailed, Item: item, EventSeq: j.seq, Reason: clip.String(err.Error(), 300)},
				fmt.Sprintf("%s/notify_failed/%d", item, j.seq), false)
		} else if attempt%10 == 0 {
			n.logger.Warn("notification still failing", "item", item, "seq", j.seq, "attempts", attempt, "error", err)
		}
		if !n.sleep(delay) {
			return false
		}
		delay = min(2*delay, n.cfg.MaxBackoff)
	}
}

// post makes one attempt.
func (n *Notifier) post(url string, seq uint64, body []byte) error {
	req, err := http.NewRequestWithContext(n.workCtx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sniper-notify")
	req.Header.Set(HeaderIdempotencyKey, strconv.FormatUint(seq, 10))
	if n.cfg.Secret != "" {
		req.Header.Set(HeaderSignature, Sign(n.cfg.Secret, body))
	}
	res, err := n.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fmt.Errorf("POST %s: %s", clip.String(url, 200), res.Status)
	}
	return nil
}

// urlOf is where item's notifications go: the notify_url of its start
// command, else the global URL ("" for nowhere). Read once per item.
func (n *Notifier) urlOf(item string) (string, error) {
	n.mu.Lock()
	url, ok := n.urls[item]
	n.mu.Unlock()
	if ok {
		return url, nil
	}
	ctx, cancel := context.WithTimeout(n.workCtx, 5*time.Second)
	defer cancel()
	url = n.cfg.URL
	rec, err := n.log.Last(ctx, messages.Subject(item, messages.KindCmd, messages.TypeStart))
	switch {
	case errors.Is(err, jetstream.ErrNotFound):
	case err != nil:
		return "", fmt.Errorf("read the start of %s: %w", item, err)
	default:
		var start messages.StartCommand
		if err := json.Unmarshal(rec.Data, &start); err != nil {
			n.logger.Warn("undecodable start command; using the global notify URL", "item", item, "seq", rec.Seq, "error", err)
		} else if start.NotifyURL != "" {
			url = start.NotifyURL
		}
	}
	n.mu.Lock()
	n.urls[item] = url
	n.mu.Unlock()
	return url, nil
}

// record appends a notified or notify_failed record. A notified record
// that the log does not take is retried until it does or the notifier
// stops (false: the notification is then sent again after the restart);
// a failure record is written once, at most.
func (n *Notifier) record(subject string, payload any, msgID string, must bool) bool {
	delay := n.cfg.MinBackoff
	for {
		ctx, cancel := context.WithTimeout(n.workCtx, 5*time.Second)
		_, err := n.log.Append(ctx, subject, payload, jetstream.WithMsgID(msgID))
		cancel()
		if err == nil {
			return true
		}
		if !must {
			n.logger.Warn("cannot record the failed notification in the history", "subject", subject, "error", err)
			return true
		}
		n.logger.Warn("cannot record the notification in the history; retrying", "subject", subject, "error", err)
		if !n.sleep(delay) {
			return false
		}
		delay = min(2*delay, n.cfg.MaxBackoff)
	}
}

func (n *Notifier) isStopping() bool {
	select {
	case <-n.stopping:
		return true
	default:
		return false
	}
}

// sleep waits d; false if the notifier stops first.
func (n *Notifier) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-n.stopping:
		return false
	}
}
