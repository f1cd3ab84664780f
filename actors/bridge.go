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

	"github.com/asynkron/protoactor-go/actor"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"mellium.im/xmpp/jid"

	"sniper/jetstream"
	"sniper/messages"
	"sniper/xmppclient"
)

// Chat is the XMPP session the bridges use: xmppclient.Conn in production.
type Chat interface {
	Send(ctx context.Context, to jid.JID, body string) error
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
// log. Its Deliver blocks until the input is stored: XMPP has no
// acknowledgement to fall back on, so the bridge holds the session's
// reader rather than drop an auction event while the log is unavailable.
type Inbound struct {
	deps     Deps
	id       Identity
	observer BridgeObserver
	as       *actor.ActorSystem
	pid      *actor.PID
	ctx      context.Context // cancelled by Stop: ends retries
	cancel   context.CancelFunc
	joined   map[string]bool // items known to have a sniper; owned by the actor
	stopOnce sync.Once
}

type chatIn struct {
	from jid.JID
	body string
}

// NewInbound spawns the inbound bridge actor.
func NewInbound(as *actor.ActorSystem, deps Deps, id Identity, observer BridgeObserver) (*Inbound, error) {
	in := &Inbound{deps: deps, id: id, observer: observer, as: as, joined: map[string]bool{}}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	pid, err := as.Root.SpawnNamed(actor.PropsFromFunc(in.receive), "xmpp-in")
	if err != nil {
		return nil, fmt.Errorf("spawn inbound bridge: %w", err)
	}
	in.pid = pid
	return in, nil
}

// Deliver hands one chat message to the bridge and waits until it is in
// the log (or ignored). It is the XMPP session's message handler.
func (in *Inbound) Deliver(from jid.JID, body string) {
	_, err := in.as.Root.RequestFuture(in.pid, chatIn{from: from, body: body}, time.Minute).Result()
	if err != nil {
		in.deps.Logger.Error("inbound message not stored", "from", from.String(), "error", err)
	}
}

// Stop stops the bridge; a message still waiting for the log is given up
// (the auction house's next message carries the current price anyway).
// Calling it again does nothing.
func (in *Inbound) Stop() {
	in.stopOnce.Do(func() {
		in.cancel()
		_ = in.as.Root.StopFuture(in.pid).Wait()
	})
}

func (in *Inbound) receive(ctx actor.Context) {
	m, ok := ctx.Message().(chatIn)
	if !ok {
		return
	}
	item, ok := in.id.ItemOf(m.from)
	if !ok {
		in.deps.Logger.Warn("dropped a message from a sender that is not an auction", "from", m.from.String(), "body", truncate(m.body, 200))
		if in.observer != nil {
			in.observer.Dropped(m.from.String())
		}
		ctx.Respond(true)
		return
	}
	if !in.isJoined(item) {
		in.deps.Logger.Warn("dropped a message from an auction the sniper never joined", "item", item, "from", m.from.String(), "body", truncate(m.body, 200))
		if in.observer != nil {
			in.observer.Dropped(m.from.String())
		}
		ctx.Respond(true)
		return
	}
	subject, payload := in.translate(item, m.body)
	in.store(item, subject, payload)
	ctx.Respond(true)
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
	return messages.Subject(item, messages.KindIn, messages.TypePrice),
		messages.NewPrice(item, ev.CurrentPrice, ev.Increment, ev.Bidder, in.id.IsSniper(ev.Bidder))
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
			ctx, cancel := context.WithTimeout(in.ctx, 5*time.Second)
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

// Outbound sends the sniper's JOIN and BID requests from the log to the
// auction house, in log order, acking each only once it is on the wire.
type Outbound struct {
	deps     Deps
	id       Identity
	chat     Chat
	observer BridgeObserver

	cancel context.CancelFunc
	wg     sync.WaitGroup
	log    *slog.Logger
}

// StartOutbound starts following the outbound requests.
func StartOutbound(ctx context.Context, deps Deps, id Identity, chat Chat, observer BridgeObserver) (*Outbound, error) {
	cons, err := deps.Log.OutboundConsumer(ctx)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	o := &Outbound{deps: deps, id: id, chat: chat, observer: observer, cancel: cancel, log: deps.Logger.With("component", "xmpp-out")}
	o.wg.Add(1)
	go o.run(runCtx, cons)
	return o, nil
}

// Stop stops sending; a request not yet acked is sent again next time.
func (o *Outbound) Stop() {
	o.cancel()
	o.wg.Wait()
}

func (o *Outbound) run(ctx context.Context, cons natsjs.Consumer) {
	defer o.wg.Done()
	failing := false
	// Stopping quiesces the feed: requests already delivered are still
	// sent (or given back) and acked; the rest wait in the log.
	follow(context.Background(), ctx, o.deps.Log, o.log, "outbound feed", cons, o.deps.Log.OutboundConsumer, func(msg natsjs.Msg) bool {
		item, body, err := o.render(msg)
		if err != nil {
			o.log.Error("unsendable outbound request dropped", "subject", msg.Subject(), "error", err)
			_ = msg.Term()
			return true
		}
		// Not ctx: once Stop has cancelled it, the feed still finishes the
		// requests already delivered to it (see follow), which needs a
		// context that works; send's own timeouts bound it.
		sent, err := o.send(context.WithoutCancel(ctx), msg, item, body)
		if sent && err == nil {
			o.deps.writeSucceeded() // the record of it is in the log
		}
		if err != nil && sent {
			// On the wire, but the log did not take the record (full,
			// unreachable): resending would repeat the request every
			// retry for as long as the log refuses writes. The ack is
			// what is left to keep it from going again.
			o.deps.writeFailed(err)
			o.log.Error("sent, but the log did not take the record of it; acking so as not to resend", "item", item, "error", err)
			err = nil
		}
		if err != nil && errors.Is(err, xmppclient.ErrUndelivered) && o.giveUp(msg, item, body, err) {
			err = nil
		}
		if err != nil {
			if !failing {
				o.log.Warn("cannot send to the auction house; will retry", "item", item, "error", err)
				failing = true
			}
			_ = msg.NakWithDelay(500 * time.Millisecond)
			return true
		}
		if failing {
			o.log.Info("sending to the auction house again", "item", item)
			failing = false
		}
		if sent && o.observer != nil && strings.HasSuffix(msg.Subject(), "."+messages.TypeBid) {
			o.observer.BidSent(item)
		}
		_ = msg.Ack()
		return true
	})
}

// send writes one request to the auction house unless the log says it
// already went out, then records that it did. The record, not the
// consumer's ack, is what keeps resends after a crash to the send window:
// JetStream flushes consumer acks to disk asynchronously (batched every
// 100 ms), so a crash can forget the acks of requests sent well before it,
// while the record is a stream write, synced like every other. Only a
// crash between the XMPP write and the record resends a message.
func (o *Outbound) send(ctx context.Context, msg natsjs.Msg, item, body string) (sent bool, err error) {
	meta, err := msg.Metadata()
	if err != nil {
		return false, err
	}
	seq := meta.Sequence.Stream
	sentSubject := messages.Subject(item, messages.KindOut, messages.TypeSent)
	lookup, cancel := context.WithTimeout(ctx, 5*time.Second)
	last, err := o.deps.Log.LastSentSeq(lookup, sentSubject)
	cancel()
	if err != nil {
		return false, err
	}
	if last >= seq {
		o.log.Debug("already sent, not resending", "item", item, "seq", seq)
		return false, nil
	}
	to, err := o.id.AuctionJID(item)
	if err != nil {
		return false, fmt.Errorf("auction address for %s: %w", item, err)
	}
	// The session's own lifetime bounds the write (see xmppclient); a
	// per-send deadline here would race mellium's writer.
	if err := o.chat.Send(ctx, to, body); err != nil {
		return false, err
	}
	o.log.Debug("sent", "item", item, "body", body)
	o.deps.fault(FaultAfterSend, item)
	rec := messages.SentEvent{Type: messages.TypeSent, Item: item, OutSeq: seq, Body: body}
	appendCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := o.deps.Log.Append(appendCtx, sentSubject, rec, jetstream.WithMsgID(item+"/sent/"+strconv.FormatUint(seq, 10))); err != nil {
		return true, fmt.Errorf("record that %s was sent: %w", msg.Subject(), err)
	}
	return true, nil
}

// DefaultUndeliverableFor is how long the bridge retries a request the
// XMPP server bounces (the auction's account is offline: an auction house
// restarting) before it gives up on it. Requests go out one at a time, in
// log order, so one auction that never comes back must not hold every
// other auction's bids for longer than this.
const DefaultUndeliverableFor = 30 * time.Second

// giveUp reports whether a bounced request is old enough to abandon, and
// if so records why in the log, for the auction's history.
func (o *Outbound) giveUp(msg natsjs.Msg, item, body string, cause error) bool {
	meta, err := msg.Metadata()
	limit := o.deps.UndeliverableFor
	if limit == 0 {
		limit = DefaultUndeliverableFor
	}
	if err != nil || time.Since(meta.Timestamp) < limit {
		return false
	}
	o.log.Error("the auction house does not take this request; giving up on it", "item", item, "body", body,
		"decided", meta.Timestamp, "error", cause)
	rec := messages.UndeliveredEvent{Type: messages.TypeUndelivered, Item: item, OutSeq: meta.Sequence.Stream, Body: body, Reason: cause.Error()}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	subject := messages.Subject(item, messages.KindOut, messages.TypeUndelivered)
	id := item + "/undelivered/" + strconv.FormatUint(meta.Sequence.Stream, 10)
	if _, err := o.deps.Log.Append(ctx, subject, rec, jetstream.WithMsgID(id)); err != nil {
		o.log.Warn("cannot record the undelivered request", "item", item, "error", err)
	}
	return true
}

func (o *Outbound) render(msg natsjs.Msg) (item, body string, err error) {
	item, kind, typ, err := messages.ParseSubject(msg.Subject())
	if err != nil || kind != messages.KindOut {
		return "", "", fmt.Errorf("not an outbound request: %s", msg.Subject())
	}
	switch typ {
	case messages.TypeJoin:
		return item, messages.EncodeJoin(), nil
	case messages.TypeBid:
		var b messages.BidRequest
		if err := json.Unmarshal(msg.Data(), &b); err != nil {
			return "", "", fmt.Errorf("decode bid: %w", err)
		}
		if b.Price <= 0 {
			return "", "", fmt.Errorf("bid price %d is not positive", b.Price)
		}
		return item, messages.EncodeBid(b.Price), nil
	}
	return "", "", fmt.Errorf("unknown outbound request type %q", typ)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
