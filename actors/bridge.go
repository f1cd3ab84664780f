package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"mellium.im/xmpp/jid"

	"sniper/messages"
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
func (in *Inbound) Stop() {
	in.cancel()
	_ = in.as.Root.StopFuture(in.pid).Wait()
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
func (in *Inbound) store(item, subject string, payload any) {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(in.ctx, 5*time.Second)
		seq, err := in.deps.Log.Append(ctx, subject, payload)
		cancel()
		if err == nil {
			in.deps.Logger.Debug("auction event stored", "item", item, "subject", subject, "seq", seq)
			in.deps.fault(FaultAfterInboundWrite, item)
			return
		}
		if attempt == 1 || attempt%20 == 0 {
			in.deps.Logger.Error("cannot store auction event; retrying", "item", item, "subject", subject, "attempt", attempt, "error", err)
		}
		select {
		case <-in.ctx.Done():
			in.deps.Logger.Error("auction event not stored: shutting down", "item", item, "subject", subject)
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
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
	it, err := cons.Messages()
	if err != nil {
		o.log.Error("cannot follow outbound requests", "error", err)
		return
	}
	defer it.Stop()
	go func() { <-ctx.Done(); it.Stop() }()
	failing := false
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, natsjs.ErrMsgIteratorClosed) {
				o.log.Error("outbound feed stopped", "error", err)
			}
			return
		}
		item, body, err := o.render(msg)
		if err != nil {
			o.log.Error("unsendable outbound request dropped", "subject", msg.Subject(), "error", err)
			_ = msg.Term()
			continue
		}
		to, err := o.id.AuctionJID(item)
		if err != nil {
			o.log.Error("no auction address for item", "item", item, "error", err)
			_ = msg.Term()
			continue
		}
		// The session's own lifetime bounds the write (see xmppclient); a
		// per-send deadline here would race mellium's writer.
		if err := o.chat.Send(ctx, to, body); err != nil {
			if !failing {
				o.log.Warn("cannot send to the auction house; will retry", "item", item, "error", err)
				failing = true
			}
			_ = msg.NakWithDelay(500 * time.Millisecond)
			continue
		}
		if failing {
			o.log.Info("sending to the auction house again", "item", item)
			failing = false
		}
		o.log.Debug("sent", "item", item, "body", body)
		if o.observer != nil && strings.HasSuffix(msg.Subject(), "."+messages.TypeBid) {
			o.observer.BidSent(item)
		}
		o.deps.fault(FaultAfterSend, item)
		_ = msg.Ack()
	}
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
