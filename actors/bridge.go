package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nuid"
	"mellium.im/xmpp/jid"

	"sniper/internal/clip"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/xmppclient"
)

// Chat is the XMPP session the bridges use: xmppclient.Conn in production.
type Chat interface {
	Send(ctx context.Context, to jid.JID, body string) error
	// Up is closed while the session is live: a sender whose Send failed
	// for want of a session waits on it rather than polling.
	Up() <-chan struct{}
}

// BridgeObserver learns what the bridges do, for metrics; nil is allowed.
type BridgeObserver interface {
	BidSent(item string)
	Dropped(from string)
	Malformed(item string)
}

// Identity says who the sniper is on XMPP and where the auctions live.
type Identity struct {
	// Sniper is the sniper's configured JID (full, with its resource).
	Sniper jid.JID
	// AuctionDomain is the domain of the auction JIDs auction-<item>@domain.
	AuctionDomain string
}

// AuctionJID is the auction house's address for item.
func (id Identity) AuctionJID(item string) (jid.JID, error) {
	return jid.New("auction-"+item, id.AuctionDomain, "Auction")
}

// IsSniper reports whether an auction's Bidder field names this sniper: its
// full JID or its bare one.
func (id Identity) IsSniper(bidder string) bool {
	b, err := jid.Parse(strings.TrimSpace(bidder))
	if err != nil {
		return false
	}
	return b.Equal(id.Sniper) || (b.Resourcepart() == "" && b.Equal(id.Sniper.Bare()))
}

// ItemOf returns the item whose auction sent a message, or false when the
// sender is not an auction of the configured domain: nobody else may move
// a sniper.
func (id Identity) ItemOf(from jid.JID) (string, bool) {
	if !strings.EqualFold(from.Domainpart(), id.AuctionDomain) {
		return "", false
	}
	item, ok := strings.CutPrefix(from.Localpart(), "auction-")
	if !ok || messages.ValidItem(item) != nil {
		return "", false
	}
	return item, true
}

// Inbound turns chat messages from the auction house into inputs on the
// log. Its Deliver blocks until the input is stored, for as long as the
// log refuses it: XMPP has no acknowledgement to fall back on, so the
// bridge holds the session's reader rather than drop an auction event.
// Deliver is called by the XMPP session's one delivery goroutine, one
// message at a time, in order.
type Inbound struct {
	deps     Deps
	id       Identity
	observer BridgeObserver
	ctx      context.Context // cancelled by Stop: ends retries
	cancel   context.CancelFunc
	joined   map[string]bool // items known to have a sniper; Deliver's own
}

// NewInbound makes the inbound bridge.
func NewInbound(deps Deps, id Identity, observer BridgeObserver) *Inbound {
	in := &Inbound{deps: deps, id: id, observer: observer, joined: map[string]bool{}}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	return in
}

// Stop makes a Deliver waiting for the log give up (the auction house's
// next message carries the current price anyway). Calling it again does
// nothing.
func (in *Inbound) Stop() { in.cancel() }

// Deliver stores one chat message as an input (or drops it, if it is not
// from an auction the sniper joined), and returns once it is in the log or
// the bridge is stopped. It is the XMPP session's message handler.
func (in *Inbound) Deliver(from jid.JID, body string) {
	item, ok := in.id.ItemOf(from)
	if !ok {
		in.deps.Logger.Warn("dropped a message from a sender that is not an auction", "from", from.String(), "body", clip.String(body, 200))
		if in.observer != nil {
			in.observer.Dropped(from.String())
		}
		return
	}
	if !in.isJoined(item) {
		if in.ctx.Err() == nil {
			in.deps.Logger.Warn("dropped a message from an auction the sniper never joined", "item", item, "from", from.String(), "body", clip.String(body, 200))
			if in.observer != nil {
				in.observer.Dropped(from.String())
			}
		}
		return
	}
	subject, payload := in.translate(item, body)
	in.store(item, subject, payload)
}

// isJoined reports whether item has a start command in the log: only the
// auctions a user joined may write to it. The answer is cached once yes;
// an auction only talks after the sniper's JOIN, which follows the start.
func (in *Inbound) isJoined(item string) bool {
	if in.joined[item] {
		return true
	}
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(in.ctx, 5*time.Second)
		ok, err := in.deps.Log.Has(ctx, messages.Subject(item, messages.KindCmd, messages.TypeStart))
		cancel()
		if err == nil {
			in.joined[item] = ok
			return ok
		}
		if attempt == 1 {
			in.deps.Logger.Error("cannot check the auction in the log; retrying", "item", item, "error", err)
		}
		select {
		case <-in.ctx.Done():
			return false
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// translate decodes a SOL message into the input it stands for.
func (in *Inbound) translate(item, body string) (string, any) {
	ev, err := messages.DecodeAuctionEvent(body)
	if err != nil {
		in.deps.Logger.Error(fmt.Sprintf("Could not translate message %q because %q", body, err.Error()), "item", item)
		if in.observer != nil {
			in.observer.Malformed(item)
		}
		return messages.Subject(item, messages.KindIn, messages.TypeMalformed), messages.NewMalformed(item, body, err.Error())
	}
	if ev.Kind == "CLOSE" {
		return messages.Subject(item, messages.KindIn, messages.TypeClose), messages.NewClose(item)
	}
	price := messages.NewPrice(item, ev.CurrentPrice, ev.Increment, ev.Bidder, in.id.IsSniper(ev.Bidder))
	price.CloseTime = ev.CloseTime
	return messages.Subject(item, messages.KindIn, messages.TypePrice), price
}

// store appends with retries until the log takes it or the bridge stops.
// Every attempt carries the same message id: an append whose ack was lost
// (the server restarted, the client was reconnecting and had buffered it)
// but which was stored is not stored twice by the retry.
func (in *Inbound) store(item, subject string, payload any) {
	id := item + "/in/" + nuid.Next()
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		// While the client reconnects a publish would only be buffered, a
		// copy per attempt: wait for the connection instead.
		err := in.deps.Log.Available()
		var seq uint64
		if err == nil {
			// Short: an append whose answer was lost with a server is
			// retried (the message id keeps it once) rather than waited on.
			ctx, cancel := context.WithTimeout(in.ctx, commitTimeout)
			seq, err = in.deps.Log.Append(ctx, subject, payload, jetstream.WithMsgID(id))
			cancel()
			if err != nil && in.ctx.Err() == nil {
				in.deps.writeFailed(err)
			}
		}
		if err == nil {
			in.deps.writeSucceeded()
			if attempt > 1 {
				in.deps.Logger.Info("auction event stored after retrying", "item", item, "subject", subject, "seq", seq, "attempts", attempt)
			} else {
				in.deps.Logger.Debug("auction event stored", "item", item, "subject", subject, "seq", seq)
			}
			in.deps.fault(FaultAfterInboundWrite, item)
			return
		}
		if attempt == 1 || attempt%20 == 0 {
			msg := "cannot store auction event; retrying"
			if errors.Is(err, jetstream.ErrFull) {
				msg = "the event log is full: cannot store auction event; retrying until space is freed"
			}
			in.deps.Logger.Error(msg, "item", item, "subject", subject, "attempt", attempt, "error", err)
		}
		// Waiting for the connection costs nothing: look often. A log that
		// refuses writes is asked less and less often.
		wait := 100 * time.Millisecond
		if !errors.Is(err, jetstream.ErrUnavailable) {
			wait = delay
			delay = min(2*delay, 2*time.Second)
		}
		select {
		case <-in.ctx.Done():
			in.deps.Logger.Error("auction event not stored: shutting down", "item", item, "subject", subject)
			return
		case <-time.After(wait):
		}
	}
}

// OutboundFollowerName names the outbound bridge's follower of the
// decisions that send something, and its checkpoint in the log.
const OutboundFollowerName = "outbound"

// maxSendsInFlight bounds how many auctions' requests are on their way to
// the XMPP server at once.
const maxSendsInFlight = 64

// Outbound sends the requests of the sniper's decisions (JOIN, BID) to the
// auction house. Each auction's requests go out in log order (a JOIN
// before its BIDs); different auctions do not wait on each other: each
// auction with requests to send has a worker, which ends when its queue is
// empty. What was sent is read from the log once, at start, and kept in
// memory.
type Outbound struct {
	deps     Deps
	id       Identity
	chat     Chat
	observer BridgeObserver
	log      *slog.Logger
	follower *jetstream.Follower
	sem      chan struct{}

	mu     sync.Mutex
	sent   map[string]uint64               // per item: the last decision whose requests are settled
	queues map[string][]jetstream.Delivery // per item with a worker: decisions not sent yet

	stopReading context.CancelFunc
	readDone    chan struct{}
	workCtx     context.Context // ends the workers' retries
	stopWork    context.CancelFunc
	workers     sync.WaitGroup
	stopOnce    sync.Once
}

// StartOutbound reads what was sent and starts following the decisions
// from the bridge's checkpoint.
func StartOutbound(ctx context.Context, deps Deps, id Identity, chat Chat, observer BridgeObserver) (*Outbound, error) {
	logger := deps.Logger.With("component", "xmpp-out")
	sent, err := deps.Log.SentUpTo(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbound bridge: %w", err)
	}
	f, err := deps.Log.Follower(ctx, jetstream.FollowSpec{
		Name: OutboundFollowerName,
		Filters: []string{
			messages.DecisionSubject("*", messages.TypeJoin),
			messages.DecisionSubject("*", messages.TypeBid),
			messages.DecisionSubject("*", messages.TypeClaim),
		},
		Checkpointed:    true,
		CheckpointEvery: deps.CheckpointEvery,
		Logger:          logger,
	})
	if err != nil {
		return nil, fmt.Errorf("outbound bridge: %w", err)
	}
	o := &Outbound{deps: deps, id: id, chat: chat, observer: observer, log: logger, follower: f,
		sem: make(chan struct{}, maxSendsInFlight), sent: sent, queues: map[string][]jetstream.Delivery{}, readDone: make(chan struct{})}
	readCtx, stopReading := context.WithCancel(context.Background())
	o.stopReading = stopReading
	o.workCtx, o.stopWork = context.WithCancel(context.Background())
	go func() {
		defer close(o.readDone)
		_ = f.Run(readCtx, o.dispatch)
	}()
	return o, nil
}

// Stop stops reading decisions and lets the workers send what they hold
// for up to grace; what is not sent by then stays above the checkpoint
// and goes out after the next start. Calling it again does nothing.
func (o *Outbound) Stop(grace time.Duration) {
	o.stopOnce.Do(func() {
		o.stopReading()
		<-o.readDone
		done := make(chan struct{})
		go func() {
			o.workers.Wait()
			close(done)
		}()
		t := time.NewTimer(grace)
		select {
		case <-done:
		case <-t.C:
			o.log.Warn("requests still unsent at shutdown; they go out after the next start", "pending", o.follower.Pending())
			o.stopWork()
			<-done
		}
		t.Stop()
		o.stopWork()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := o.follower.SaveCheckpoint(ctx); err != nil {
			o.log.Warn("cannot write the outbound checkpoint; the next start reads more of the log again", "error", err)
		}
	})
}

// Backlog is how many decisions the bridge was handed and has not
// finished sending.
func (o *Outbound) Backlog() int { return o.follower.Pending() }

// dispatch queues a decision for its auction's worker, starting one if
// the auction has none. It runs on the follower's goroutine.
func (o *Outbound) dispatch(d jetstream.Delivery) {
	item, _, _, err := messages.ParseSubject(d.Subject)
	if err != nil {
		o.log.Error("decision on a bad subject ignored", "subject", d.Subject, "error", err)
		o.follower.Done(d.Seq)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if d.Seq <= o.sent[item] {
		o.follower.Done(d.Seq) // sent before a restart
		return
	}
	q, running := o.queues[item]
	o.queues[item] = append(q, d)
	if !running {
		o.workers.Add(1)
		go o.work(item)
	}
}

// work sends one auction's queued decisions in order until none is left.
func (o *Outbound) work(item string) {
	defer o.workers.Done()
	for {
		o.mu.Lock()
		q := o.queues[item]
		if len(q) == 0 {
			delete(o.queues, item)
			o.mu.Unlock()
			return
		}
		d := q[0]
		o.mu.Unlock()
		if !o.deliver(item, d) {
			return // stopping: the rest stays above the checkpoint
		}
		o.mu.Lock()
		o.queues[item] = o.queues[item][1:]
		o.sent[item] = max(o.sent[item], d.Seq)
		o.mu.Unlock()
		o.follower.Done(d.Seq)
	}
}

// deliver sends one decision's requests, retrying what fails, and records
// in the log that they went out; false means the bridge is stopping.
func (o *Outbound) deliver(item string, d jetstream.Delivery) bool {
	var dec messages.DecisionEvent
	if err := json.Unmarshal(d.Data, &dec); err != nil {
		o.log.Error("unreadable decision not sent", "item", item, "seq", d.Seq, "error", err)
		return true
	}
	bodies := make([]string, 0, len(dec.Send))
	for _, r := range dec.Send {
		body, err := r.Body()
		if err != nil {
			o.log.Error("unsendable request dropped", "item", item, "seq", d.Seq, "error", err)
			continue
		}
		bodies = append(bodies, body)
	}
	to, err := o.id.AuctionJID(item)
	if err != nil {
		o.log.Error("no auction address; request dropped", "item", item, "error", err)
		return true
	}
	failing := false
	for _, body := range bodies {
		for {
			err := o.send(to, body)
			if err == nil {
				break
			}
			if errors.Is(err, xmppclient.ErrUndelivered) && time.Since(d.Time) >= o.undeliverableFor() {
				o.giveUp(item, d, body, err)
				return true
			}
			if !failing {
				o.log.Warn("cannot send to the auction house; will retry", "item", item, "error", err)
				failing = true
			}
			if errors.Is(err, xmppclient.ErrNotConnected) {
				// No session: every auction's worker would fail the same
				// way. Wait for one.
				select {
				case <-o.workCtx.Done():
					return false
				case <-o.chat.Up():
				}
				// Up may still be set by a session that died under the send.
			}
			t := time.NewTimer(500 * time.Millisecond)
			select {
			case <-o.workCtx.Done():
				t.Stop()
				return false
			case <-t.C:
			}
		}
		o.log.Debug("sent", "item", item, "body", body)
		o.deps.fault(FaultAfterSend, item)
		if o.observer != nil && dec.Type == messages.TypeBid {
			o.observer.BidSent(item)
		}
	}
	if failing {
		o.log.Info("sending to the auction house again", "item", item)
	}
	o.record(item, d.Seq, strings.Join(bodies, "\n"))
	return true
}

// send is one XMPP send, within the bound on sends in flight.
func (o *Outbound) send(to jid.JID, body string) error {
	select {
	case o.sem <- struct{}{}:
	case <-o.workCtx.Done():
		return o.workCtx.Err()
	}
	defer func() { <-o.sem }()
	// The session's own limits bound the write and its confirmation (see
	// xmppclient).
	return o.chat.Send(o.workCtx, to, body)
}

// record appends out.sent: the bridge's durable memory of what went out.
// It, not the follower's checkpoint, is what keeps a restart from
// resending: only a crash between the XMPP send and this write resends a
// request. When the log does not take it, the request is not sent again
// (that would repeat it for as long as the log refuses writes).
func (o *Outbound) record(item string, seq uint64, body string) {
	rec := messages.SentEvent{Type: messages.TypeSent, Item: item, OutSeq: seq, Body: body}
	ctx, cancel := context.WithTimeout(o.workCtx, 5*time.Second)
	defer cancel()
	subject := messages.Subject(item, messages.KindOut, messages.TypeSent)
	if _, err := o.deps.Log.Append(ctx, subject, rec, jetstream.WithMsgID(item+"/sent/"+strconv.FormatUint(seq, 10))); err != nil {
		o.deps.writeFailed(err)
		o.log.Error("sent, but the log did not take the record of it; not resending", "item", item, "seq", seq, "error", err)
		return
	}
	o.deps.writeSucceeded()
}

// DefaultUndeliverableFor is how long the bridge retries a request the
// XMPP server bounces (the auction's account is offline: an auction house
// restarting) before it gives up on it.
const DefaultUndeliverableFor = 30 * time.Second

func (o *Outbound) undeliverableFor() time.Duration {
	if o.deps.UndeliverableFor > 0 {
		return o.deps.UndeliverableFor
	}
	return DefaultUndeliverableFor
}

// giveUp records in the log why a bounced request was abandoned, for the
// auction's history.
func (o *Outbound) giveUp(item string, d jetstream.Delivery, body string, cause error) {
	o.log.Error("the auction house does not take this request; giving up on it", "item", item, "body", body,
		"decided", d.Time, "error", cause)
	rec := messages.UndeliveredEvent{Type: messages.TypeUndelivered, Item: item, OutSeq: d.Seq, Body: body, Reason: cause.Error()}
	ctx, cancel := context.WithTimeout(o.workCtx, 5*time.Second)
	defer cancel()
	subject := messages.Subject(item, messages.KindOut, messages.TypeUndelivered)
	id := item + "/undelivered/" + strconv.FormatUint(d.Seq, 10)
	if _, err := o.deps.Log.Append(ctx, subject, rec, jetstream.WithMsgID(id)); err != nil {
		o.log.Warn("cannot record the undelivered request", "item", item, "error", err)
	}
}
