package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"sniper/actors"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/notify"
	"sniper/xmppclient"
)

// active is what only the active instance runs: the actors, which decide,
// and the XMPP session with its bridges. A standby has none of it; it keeps
// the projection, the API and the page.
type active struct {
	system   *actors.System
	chat     *xmppclient.Conn
	inbound  *actors.Inbound
	outbound *actors.Outbound
	chatStop context.CancelFunc
	chatDone chan struct{}
	notifier *notify.Notifier
}

// DefaultInstance names an instance after its host and its data directory,
// which sets it apart from the other instances of a host and keeps its
// name across restarts (so that it takes its own lease back at once).
func DefaultInstance(dataDir string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "sniper"
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(abs))
	return host + "-" + hex.EncodeToString(sum[:4])
}

// lead is one term as the active instance: claim every unfinished auction,
// start the actors and the XMPP session, run until the term ends, stop
// them. A failure to start is retried while the term lasts, except for a
// fatal XMPP error (a wrong password), which stops the app.
func (a *App) lead(ctx context.Context, term jetstream.Term, rec *jetstream.Recovery) {
	began := time.Now()
	var parts *active
	for attempt := 1; ; attempt++ {
		var err error
		parts, err = a.startActive(ctx, term, rec)
		if err == nil {
			break
		}
		rec = nil // read again on the next attempt
		var fatal *fatalError
		if errors.As(err, &fatal) {
			a.reportFirstTerm(err)
			a.failed(err)
			<-ctx.Done()
			return
		}
		if ctx.Err() != nil {
			return
		}
		a.logger.Error("cannot start deciding as the active instance; retrying", "attempt", attempt, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	a.parts.Store(parts)
	a.status.Poke()
	a.logger.Info("active: deciding and connected to the auction house", "took", time.Since(began).Round(time.Millisecond))
	a.reportFirstTerm(nil)
	leaders := make(chan struct{})
	go func() {
		defer close(leaders)
		a.keepLeadersAway(ctx)
	}()
	<-ctx.Done()
	<-leaders
	a.parts.Store(nil)
	a.status.Poke()
	parts.stop(a)
}

// keepLeadersAway moves the raft leaders (the log's, and the JetStream
// meta group's, which creating a reader needs) off this instance's own
// embedded server while it is active, now and every 10 s (leadership moves
// with elections): when this machine dies, the log keeps its leaders and
// the takeover waits for the lease only (jetstream.Log.StepDownFrom).
// With an external NATS the sniper's death takes no server down, and there
// is nothing to do.
func (a *App) keepLeadersAway(ctx context.Context) {
	if a.server == nil || a.cfg.Replicas < 2 {
		return
	}
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		moved, err := a.log.StepDownFrom(ctx, a.server.Name())
		if meta, merr := a.server.StepDownMeta(ctx); merr != nil {
			err = errors.Join(err, merr)
		} else if meta {
			moved = append(moved, "the JetStream meta group")
		}
		switch {
		case err != nil && ctx.Err() == nil:
			a.logger.Debug("cannot move the log's leaders off this server", "error", err)
		case len(moved) > 0:
			a.logger.Info("moved the log's leaders off this instance's server, so that its death costs no election", "streams", moved)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// fatalError is a start failure that retrying cannot mend.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// reportFirstTerm tells Start how the first term began, once.
func (a *App) reportFirstTerm(err error) {
	select {
	case a.firstTerm <- err:
	default:
	}
}

// startActive claims the auctions and starts the active parts. rec is the
// recovery read at start-up for the first term (nil: read it now).
func (a *App) startActive(ctx context.Context, term jetstream.Term, rec *jetstream.Recovery) (_ *active, err error) {
	if rec == nil {
		r, err := a.log.Recover(ctx)
		if err != nil {
			return nil, err
		}
		rec = &r
	}
	claimed, err := a.log.ClaimAll(ctx, rec.Decisions, term.Instance, term.Revision)
	if err != nil {
		return nil, err
	}
	written := 0
	for _, d := range claimed {
		if d.Type == messages.TypeClaim && d.By == term.Instance {
			written++
		}
	}
	a.logger.Info("claimed the unfinished auctions another instance decided last", "claims", written, "auctions", len(claimed))
	deps := a.deps
	deps.Recovered = &jetstream.Recovery{Decisions: claimed, Through: rec.Through}
	parts := &active{}
	defer func() {
		if err != nil {
			parts.stop(a)
		}
	}()
	// The notifier before the actors: on its first start it begins at the
	// end of the log, which must be before this term's first decision.
	parts.notifier, err = notify.Start(ctx, a.log, notify.Config{
		URL: a.cfg.NotifyURL, Secret: a.cfg.NotifySecret, On: a.cfg.NotifyOn,
		MinBackoff: a.cfg.NotifyMinBackoff, MaxBackoff: a.cfg.NotifyMaxBackoff,
		CheckpointEvery: a.cfg.CheckpointEvery, Grace: a.cfg.OutboundGrace, Logger: a.logger, Observer: a.metrics,
	})
	if err != nil {
		return nil, err
	}
	parts.system, err = actors.StartSystem(ctx, deps)
	if err != nil {
		return nil, err
	}
	deps.Recovered = nil // the bridges need it not
	if a.cfg.XMPP != nil {
		if err := a.startXMPP(ctx, deps, parts); err != nil {
			return nil, err
		}
	}
	return parts, nil
}

// startXMPP connects the bridges to the auction house. It waits for the
// first session (or a fatal error such as a wrong password) for a few
// seconds, so a misconfiguration stops `sniper run` at once; an auction
// house that is merely down is retried in the background.
func (a *App) startXMPP(ctx context.Context, deps actors.Deps, parts *active) error {
	xcfg := *a.cfg.XMPP
	sniperJID, err := jid.Parse(xcfg.JID)
	if err != nil {
		return &fatalError{fmt.Errorf("xmpp jid %q: %w", xcfg.JID, err)}
	}
	if sniperJID.Resourcepart() == "" {
		return &fatalError{fmt.Errorf("xmpp jid %q needs a resource (e.g. %s/Auction)", xcfg.JID, xcfg.JID)}
	}
	domain := a.cfg.AuctionDomain
	if domain == "" {
		domain = sniperJID.Domainpart()
	}
	id := actors.Identity{Sniper: sniperJID, AuctionDomain: domain}
	parts.inbound = actors.NewInbound(deps, id, a.metrics)
	first := make(chan struct{})
	var once sync.Once
	everUp := false
	dialFailed := make(chan error, 1)
	xcfg.OnDialFailed = func(err error) {
		select {
		case dialFailed <- err:
		default:
		}
	}
	xcfg.Logger = a.logger.With("component", "xmpp")
	xcfg.OnStateChange = func(up bool) {
		a.xmppUp.Store(up)
		a.status.Poke()
		a.metrics.XMPPState(up, up && everUp)
		if up {
			everUp = true
			once.Do(func() { close(first) })
		}
	}
	parts.chat = xmppclient.New(xcfg, parts.inbound.Deliver)
	parts.outbound, err = actors.StartOutbound(ctx, deps, id, parts.chat, a.metrics)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(context.Background())
	parts.chatStop, parts.chatDone = stop, make(chan struct{})
	runErr := make(chan error, 1)
	go func() {
		defer close(parts.chatDone)
		defer a.xmppUp.Store(false)
		if err := parts.chat.Run(runCtx); err != nil {
			runErr <- err
			a.failed(fmt.Errorf("xmpp: %w", err))
		}
	}()
	select {
	case <-first:
		a.logger.Info("connected to the auction house", "jid", sniperJID.String(), "addr", xcfg.Addr, "auction_domain", domain)
	case err := <-runErr:
		return &fatalError{fmt.Errorf("xmpp: %w", err)}
	case err := <-dialFailed:
		// Down, not misconfigured: no reason to hold up the rest.
		a.logger.Warn("auction house not reachable yet; retrying in the background", "addr", xcfg.Addr, "error", err)
	case <-time.After(5 * time.Second):
		a.logger.Warn("auction house not reachable yet; retrying in the background", "addr", xcfg.Addr)
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// stop ends the active parts in dependency order.
//
// Every follower stops reading before it stops working: what it already
// handed out is finished (within a grace period), its checkpoint is
// written, and the rest is read again by the next active instance.
//
// The notifier first: nothing else waits on it, and a notification not
// accepted by then (the attempt in flight gets OutboundGrace) is sent
// again, with the same Idempotency-Key, by the next active instance.
//
// The outbound bridge first, while the session can still send what it
// holds. Then the XMPP session: ending the stream stops the auction house
// from handing the sniper more (later messages bounce at the server, or
// wait in its offline storage), and the session's reader hands what it
// already received to the inbound bridge, which stores it: a message the
// sniper accepted is not dropped on the floor. The bridge may be holding
// the reader while it retries a write to a log that is down. At the end of
// a term (the lease lost, which a NATS outage causes) it keeps trying in
// the background for as long as the process lives (a.lingering), since an
// input is a fact any instance may store; only when the process stops does
// it give up past InboundGrace. Then the snipers, which decide what they
// were handed.
func (p *active) stop(a *App) {
	if p.notifier != nil {
		p.notifier.Stop()
	}
	if p.outbound != nil {
		p.outbound.Stop(a.cfg.OutboundGrace)
	}
	if p.chatStop != nil {
		p.chatStop()
		grace := time.NewTimer(a.cfg.InboundGrace)
		select {
		case <-p.chatDone:
			p.inbound.Stop()
		case <-grace.C:
			p.lingerOrGiveUp(a)
		}
		grace.Stop()
	}
	if p.system != nil {
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.DecideGrace)
		p.system.Stop(ctx)
		cancel()
	}
}

// lingerOrGiveUp deals with a session whose reader still waits for the
// log to take a message, past the grace period: at shutdown it gives the
// message up; at the end of a term it leaves the reader trying, owned by
// a.lingering, until it stores the message or the process stops.
func (p *active) lingerOrGiveUp(a *App) {
	giveUp := func() {
		a.logger.Warn("auction events still waiting for the log at shutdown; giving them up", "after", a.cfg.InboundGrace)
		p.inbound.Stop()
		<-p.chatDone
	}
	select {
	case <-a.stopping:
		giveUp()
		return
	default:
	}
	a.logger.Warn("auction events the session received still wait for the log; storing them in the background")
	a.lingering.Add(1)
	go func() {
		defer a.lingering.Done()
		select {
		case <-p.chatDone:
			p.inbound.Stop()
		case <-a.stopping:
			giveUp()
		}
	}()
}
