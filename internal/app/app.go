// Package app wires the sniper together: the log (embedded or external
// NATS), the actors, the projection and the HTTP server. cmd/sniper adds
// only flags and signals; tests run the same wiring in-process.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"mellium.im/xmpp/jid"

	"sniper/actors"
	"sniper/api"
	"sniper/jetstream"
	"sniper/metrics"
	"sniper/projection"
	"sniper/web"
	"sniper/xmppclient"
)

// Config is everything `sniper run` can be told.
type Config struct {
	DataDir    string
	NATSURL    string // empty: run the embedded server
	NATSListen string
	// Fsync is the embedded store's flush interval; 0 flushes every write.
	Fsync    time.Duration
	HTTPAddr string
	// HTTPToken, when set, is required by every request but the health
	// probes (bearer header, or the cookie the login form sets). Serving
	// beyond loopback without one is refused.
	HTTPToken string
	Replicas  int
	// UndeliverableFor bounds the retries of a request the auction's
	// server bounces (0: actors.DefaultUndeliverableFor).
	UndeliverableFor time.Duration
	// CheckpointEvery is how often the log's followers write their
	// checkpoints: what a restart reads again at most (0:
	// jetstream.DefaultCheckpointEvery).
	CheckpointEvery time.Duration
	// PassivateAfter is how long an idle sniper keeps its actor (0:
	// actors.DefaultPassivateAfter).
	PassivateAfter time.Duration
	// XMPP is the sniper's account at the auction house; nil runs without
	// one (commands are logged and decided, nothing reaches an auction).
	XMPP *xmppclient.Config
	// OpenItems lists the auctions of the built-in auction house, for the
	// page; nil with a real one.
	OpenItems func() []string
	// AuctionDomain is where auction-<item> JIDs live; empty means the
	// domain of the XMPP JID.
	AuctionDomain string
	Logger        *slog.Logger
	// Fault is a test hook called at the actors' fault points.
	Fault actors.FaultHook
}

// App is a running sniper.
type App struct {
	cfg    Config
	logger *slog.Logger

	server *jetstream.Server // nil with an external NATS
	nc     *nats.Conn
	log    *jetstream.Log
	system *actors.System
	view   *projection.View

	metrics  *metrics.Metrics
	chat     *xmppclient.Conn
	inbound  *actors.Inbound
	outbound *actors.Outbound
	xmppUp   atomic.Bool
	chatStop context.CancelFunc
	chatDone chan struct{}
	fatal    chan error

	httpSrv  *http.Server
	httpLn   net.Listener
	httpDone chan error

	writes    *writeHealth
	status    *statusWatch
	watchStop context.CancelFunc
	watchDone chan struct{}

	stopOnce sync.Once
}

// Shutdown grace periods: how long shutdown waits for the auction events
// the XMPP session already received to be stored, and for the requests the
// outbound bridge holds to be sent.
const (
	inboundGrace  = 3 * time.Second
	outboundGrace = 3 * time.Second
)

// Start brings the sniper up; on error everything started is stopped.
func Start(ctx context.Context, cfg Config) (_ *App, err error) {
	a := &App{cfg: cfg, logger: cfg.Logger, metrics: metrics.New(), fatal: make(chan error, 1), status: newStatusWatch()}
	if a.logger == nil {
		a.logger = slog.Default()
	}
	a.writes = &writeHealth{logger: a.logger, poke: a.status.Poke}
	if err := checkExposure(cfg.HTTPAddr, cfg.HTTPToken); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.shutdown()
		}
	}()
	if cfg.NATSURL == "" {
		a.server, err = jetstream.StartEmbedded(ctx, jetstream.EmbeddedConfig{
			DataDir: cfg.DataDir, Listen: cfg.NATSListen, SyncInterval: cfg.Fsync, Logger: a.logger,
		})
		if err != nil {
			return nil, err
		}
		a.nc, err = a.server.Connect("sniper")
	} else {
		a.nc, err = jetstream.Connect(ctx, cfg.NATSURL, "sniper", a.logger)
	}
	if err != nil {
		return nil, err
	}
	a.log, err = jetstream.Open(ctx, a.nc, jetstream.StreamConfig{Replicas: cfg.Replicas})
	if err != nil {
		return nil, err
	}
	// The last decision of every auction, read once for the view and the
	// actors: at 100,000 auctions that is 300,000 messages.
	began := time.Now()
	rec, err := a.log.Recover(ctx)
	if err != nil {
		return nil, err
	}
	a.logger.Info("read the last decision of every auction", "auctions", len(rec.Decisions), "through", rec.Through, "took", time.Since(began).Round(time.Millisecond))
	a.view, err = projection.Start(ctx, a.log, a.logger, &rec)
	if err != nil {
		return nil, err
	}
	a.metrics.Register(metrics.NewStateCollector(a.view, backlogs{a}, a.log))
	deps := actors.Deps{Log: a.log, Logger: a.logger, Fault: cfg.Fault, Metrics: a.metrics, Writes: a.writes, UndeliverableFor: cfg.UndeliverableFor, CheckpointEvery: cfg.CheckpointEvery, PassivateAfter: cfg.PassivateAfter, Recovered: &rec}
	a.system, err = actors.StartSystem(ctx, deps)
	if err != nil {
		return nil, err
	}
	deps.Recovered = nil // the bridges need it not
	if cfg.XMPP != nil {
		if err := a.startXMPP(ctx, deps); err != nil {
			return nil, err
		}
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	a.watchStop, a.watchDone = stopWatch, make(chan struct{})
	go a.watchStatus(watchCtx, a.watchDone)
	if err := a.serveHTTP(); err != nil {
		return nil, err
	}
	return a, nil
}

// startXMPP connects the bridges to the auction house. It waits for the
// first session (or a fatal error such as a wrong password) for a few
// seconds, so a misconfiguration stops `sniper run` at once; an auction
// house that is merely down is retried in the background.
func (a *App) startXMPP(ctx context.Context, deps actors.Deps) error {
	xcfg := *a.cfg.XMPP
	sniperJID, err := jid.Parse(xcfg.JID)
	if err != nil {
		return fmt.Errorf("xmpp jid %q: %w", xcfg.JID, err)
	}
	if sniperJID.Resourcepart() == "" {
		return fmt.Errorf("xmpp jid %q needs a resource (e.g. %s/Auction)", xcfg.JID, xcfg.JID)
	}
	domain := a.cfg.AuctionDomain
	if domain == "" {
		domain = sniperJID.Domainpart()
	}
	id := actors.Identity{Sniper: sniperJID, AuctionDomain: domain}
	a.inbound = actors.NewInbound(deps, id, a.metrics)
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
	a.chat = xmppclient.New(xcfg, a.inbound.Deliver)
	a.outbound, err = actors.StartOutbound(ctx, deps, id, a.chat, a.metrics)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(context.Background())
	a.chatStop, a.chatDone = stop, make(chan struct{})
	runErr := make(chan error, 1)
	go func() {
		defer close(a.chatDone)
		if err := a.chat.Run(runCtx); err != nil {
			runErr <- err
			a.fatal <- fmt.Errorf("xmpp: %w", err)
		}
	}()
	select {
	case <-first:
		a.logger.Info("connected to the auction house", "jid", sniperJID.String(), "addr", xcfg.Addr, "auction_domain", domain)
	case err := <-runErr:
		return fmt.Errorf("xmpp: %w", err)
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

// Fatal delivers an error that stops the app from working (e.g. the XMPP
// server refused its password); the caller should stop it.
func (a *App) Fatal() <-chan error { return a.fatal }

// XMPPConnected reports whether the session to the auction house is up.
func (a *App) XMPPConnected() bool { return a.xmppUp.Load() }

func (a *App) serveHTTP() error {
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http listen on %s: %w", a.cfg.HTTPAddr, err)
	}
	apiSrv := &api.Server{Log: a.log, View: a.view, Logger: a.logger, Status: a.apiStatus, StatusChanged: a.status.Changed, OpenItems: a.cfg.OpenItems}
	// Long-lived requests (the live event stream) end when shutdown
	// starts, instead of holding it up until its deadline.
	baseCtx, cancelRequests := context.WithCancel(context.Background())
	a.httpSrv = &http.Server{
		Handler:           a.routes(apiSrv),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
	}
	a.httpSrv.RegisterOnShutdown(cancelRequests)
	a.httpLn = ln
	a.httpDone = make(chan error, 1)
	go func() { a.httpDone <- a.httpSrv.Serve(ln) }()
	a.logger.Info("http api listening", "url", "http://"+ln.Addr().String())
	return nil
}

func (a *App) routes(apiSrv *api.Server) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/api/", apiSrv.Handler())
	mux.Handle("GET /metrics", a.metrics.Handler())
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /readyz", a.readyz)
	// Profiles, for `go tool pprof` and make bench; behind the token like
	// everything but the probes.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.Handle("/", web.Handler())
	if a.cfg.HTTPToken != "" {
		return requireToken(a.cfg.HTTPToken, mux)
	}
	return mux
}

// apiStatus is Readiness for the API, which knows nothing of Check.
func (a *App) apiStatus(ctx context.Context) (bool, any) {
	return a.Readiness(ctx)
}

// HTTPURL is the base URL of the API, with the port actually bound.
func (a *App) HTTPURL() string { return "http://" + a.httpLn.Addr().String() }

// NATSURL is the address the `nats` CLI can inspect the log at.
func (a *App) NATSURL() string {
	if a.server != nil {
		return a.server.ClientURL()
	}
	return a.cfg.NATSURL
}

// Log is the app's event log.
func (a *App) Log() *jetstream.Log { return a.log }

// backlogs reports the followers' backlogs for metrics; the system and the
// bridge start after the collector is registered.
type backlogs struct{ a *App }

func (b backlogs) Backlogs() map[string]int {
	out := map[string]int{}
	if b.a.system != nil {
		out[actors.InputFollowerName] = b.a.InputBacklog()
	}
	if b.a.outbound != nil {
		out[actors.OutboundFollowerName] = b.a.OutboundBacklog()
	}
	return out
}

// InputBacklog is how many inputs the snipers were handed and have not
// decided yet (held while the log refuses their decisions, say).
func (a *App) InputBacklog() int { return a.system.InputBacklog() }

// OutboundBacklog is how many decisions the outbound bridge was handed and
// has not finished sending; 0 without XMPP.
func (a *App) OutboundBacklog() int {
	if a.outbound == nil {
		return 0
	}
	return a.outbound.Backlog()
}

// Stop shuts down in dependency order: no new requests, no new inputs,
// in-flight decisions finished, then the log. ctx bounds the HTTP drain.
func (a *App) Stop(ctx context.Context) {
	a.stopOnce.Do(func() {
		if a.httpSrv != nil {
			if err := a.httpSrv.Shutdown(ctx); err != nil {
				a.logger.Warn("http shutdown cut short", "error", err)
				_ = a.httpSrv.Close()
			}
			if err := <-a.httpDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.logger.Warn("http server", "error", err)
			}
		}
		a.shutdown()
		a.logger.Info("sniper stopped")
	})
}

func (a *App) shutdown() {
	// Every follower stops reading before it stops working: what it
	// already handed out is finished (within a grace period), its
	// checkpoint is written, and the rest is read again after a restart.
	//
	// The outbound bridge first, while the session can still send what it
	// holds. Then the XMPP session: ending the stream stops the auction
	// house from handing the sniper more (later messages bounce at the
	// server), and the session's reader hands what it already received to
	// the inbound bridge, which stores it: a message the sniper accepted
	// is not dropped on the floor. The bridge may be holding the reader
	// while it retries a write to a log that is down: past a grace period
	// it gives up, and the session ends. Then the snipers, which decide
	// what they were handed.
	if a.outbound != nil {
		a.outbound.Stop(outboundGrace)
	}
	if a.chatStop != nil {
		a.chatStop()
		grace := time.NewTimer(inboundGrace)
		select {
		case <-a.chatDone:
		case <-grace.C:
			a.logger.Warn("auction events still waiting for the log at shutdown; giving them up", "after", inboundGrace)
			a.inbound.Stop()
			<-a.chatDone
		}
		grace.Stop()
	}
	if a.inbound != nil {
		a.inbound.Stop()
	}
	if a.system != nil {
		a.system.Stop()
	}
	if a.view != nil {
		a.view.Stop()
	}
	if a.watchStop != nil {
		a.watchStop()
		<-a.watchDone
	}
	if a.nc != nil && !a.nc.IsClosed() {
		// Drain flushes what is still buffered (acks above all) before
		// closing; the closed handler says when it is done.
		closed := make(chan struct{})
		a.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if err := a.nc.Drain(); err != nil {
			a.nc.Close()
		}
		<-closed
	}
	if a.server != nil {
		a.server.Shutdown()
	}
}
