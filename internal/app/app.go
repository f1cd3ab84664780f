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

	"sniper/actors"
	"sniper/api"
	"sniper/jetstream"
	"sniper/metrics"
	"sniper/notify"
	"sniper/projection"
	"sniper/web"
	"sniper/xmppclient"
)

// Config is everything `sniper run` can be told.
type Config struct {
	DataDir    string
	NATSURL    string // empty: run the embedded server
	NATSListen string
	// NATSAuth is how the sniper logs in to an external NATS. For the
	// embedded server, its User and Password are the server's own user
	// (and its routes'), which every client must then use.
	NATSAuth jetstream.ClientAuth
	// NATSReaderPassword, with a NATSAuth user, opens the embedded server to
	// the read-only user jetstream.ReaderUser.
	NATSReaderPassword string
	// NATSName names the embedded server (and, by default, the instance).
	NATSName string
	// NATSCluster, when set, makes the embedded server a node of a
	// JetStream cluster of embedded servers.
	NATSCluster *jetstream.ClusterConfig
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

	// Instance names this instance among those sharing the log
	// (DefaultInstance(DataDir) when empty).
	Instance string
	// LeaseTTL is how long the active instance's lease outlives its last
	// renewal (0: jetstream.DefaultLeaseTTL): how long a standby waits for
	// a dead active instance before it takes over.
	LeaseTTL time.Duration
	// InboundGrace bounds how long stopping waits for the auction events
	// the XMPP session already received to be stored; OutboundGrace, for
	// the requests the outbound bridge holds to be sent (0: 3 s each);
	// DecideGrace, for the snipers to decide the inputs they hold (0:
	// actors.DefaultDrainGrace).
	InboundGrace, OutboundGrace, DecideGrace time.Duration

	// NotifyURL receives a JSON POST for each final state of every sniper
	// without a notify_url of its own; NotifySecret signs them; NotifyOn
	// is notify.OnFinal ("" too) or notify.OnAll (see package notify).
	NotifyURL, NotifySecret, NotifyOn string
	// NotifyMinBackoff and NotifyMaxBackoff bound the wait between
	// attempts (0: the notify package's defaults).
	NotifyMinBackoff, NotifyMaxBackoff time.Duration
}

// App is a running sniper.
type App struct {
	cfg    Config
	logger *slog.Logger

	server *jetstream.Server // nil with an external NATS
	nc     *nats.Conn
	log    *jetstream.Log
	view   *projection.View
	deps   actors.Deps

	metrics *metrics.Metrics
	fatal   chan error
	// started stops what Start started, in the reverse order.
	started stack

	election  *jetstream.Election
	firstTerm chan error
	// parts is what runs while this instance is active (nil: standby).
	parts atomic.Pointer[active]
	// lingering counts the XMPP sessions of ended terms whose received
	// messages still wait for the log; stopping closes stopping first.
	lingering sync.WaitGroup
	stopping  chan struct{}
	xmppUp    atomic.Bool

	httpLn net.Listener

	writes *writeHealth
	status *statusWatch

	stopOnce sync.Once
}

// defaultGrace is how long stopping waits for what the bridges hold.
const defaultGrace = 3 * time.Second

// Start brings the sniper up; on error everything started is stopped.
func Start(ctx context.Context, cfg Config) (_ *App, err error) {
	if cfg.InboundGrace == 0 {
		cfg.InboundGrace = defaultGrace
	}
	if cfg.OutboundGrace == 0 {
		cfg.OutboundGrace = defaultGrace
	}
	if cfg.DecideGrace == 0 {
		cfg.DecideGrace = actors.DefaultDrainGrace
	}
	a := &App{cfg: cfg, logger: cfg.Logger, stopping: make(chan struct{}), metrics: metrics.New(), fatal: make(chan error, 1), status: newStatusWatch()}
	if a.logger == nil {
		a.logger = slog.Default()
	}
	a.started.logger = a.logger
	a.writes = &writeHealth{logger: a.logger, poke: a.status.Poke}
	if err := checkExposure(cfg.HTTPAddr, cfg.HTTPToken); err != nil {
		return nil, err
	}
	if err := checkNATSExposure(cfg); err != nil {
		return nil, err
	}
	if err := checkNotify(cfg); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.started.stop(context.Background())
		}
	}()
	if cfg.NATSURL == "" {
		a.server, err = jetstream.StartEmbedded(ctx, jetstream.EmbeddedConfig{
			DataDir: cfg.DataDir, Listen: cfg.NATSListen, SyncInterval: cfg.Fsync, Logger: a.logger,
			ServerName: cfg.NATSName, Cluster: cfg.NATSCluster,
			Auth: jetstream.ServerAuth{User: cfg.NATSAuth.User, Password: cfg.NATSAuth.Password, ReaderPassword: cfg.NATSReaderPassword},
		})
		if err != nil {
			return nil, err
		}
		a.started.onStop("embedded NATS server", func(context.Context) { a.server.Shutdown() })
		a.nc, err = a.server.Connect("sniper")
	} else {
		a.nc, err = jetstream.Connect(ctx, cfg.NATSURL, "sniper", cfg.NATSAuth, a.logger)
	}
	if err != nil {
		return nil, err
	}
	a.started.onStop("NATS connection", a.drainNATS)
	a.log, err = jetstream.Open(ctx, a.nc, jetstream.StreamConfig{Replicas: cfg.Replicas, Logger: a.logger})
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
	a.started.onStop("view", func(context.Context) { a.view.Stop() })
	a.metrics.Register(metrics.NewStateCollector(a.view, backlogs{a}, a.log))
	a.deps = actors.Deps{Log: a.log, Logger: a.logger, Fault: cfg.Fault, Metrics: a.metrics, Writes: a.writes, UndeliverableFor: cfg.UndeliverableFor, CheckpointEvery: cfg.CheckpointEvery, PassivateAfter: cfg.PassivateAfter}
	if err := a.campaign(ctx, &rec); err != nil {
		return nil, err
	}
	a.started.run("status watch", a.watchStatus, a.failed)
	if err := a.serveHTTP(); err != nil {
		return nil, err
	}
	return a, nil
}

// campaign starts the election among the instances sharing the log and
// waits, for a few seconds at most, to learn whether this one is active
// (and its actors and XMPP session started, so that a misconfiguration
// stops `sniper run` at once) or standby. rec is the recovery read at
// start-up, for the first term.
func (a *App) campaign(ctx context.Context, rec *jetstream.Recovery) error {
	instance := a.cfg.Instance
	if instance == "" && a.cfg.NATSCluster != nil && a.cfg.NATSName != "" {
		instance = a.cfg.NATSName
	}
	if instance == "" {
		instance = DefaultInstance(a.cfg.DataDir)
	}
	a.cfg.Instance = instance
	a.deps.Instance = instance
	standby := make(chan struct{})
	var standbyOnce sync.Once
	var err error
	a.election, err = a.log.NewElection(ctx, jetstream.ElectionConfig{
		Instance: instance, TTL: a.cfg.LeaseTTL, Replicas: a.cfg.Replicas, Logger: a.logger,
		OnChange: func() {
			a.status.Poke()
			st := a.election.Status()
			a.metrics.InstanceActive(st.Active)
			if !st.Active && (st.Err != nil || (st.Holder != "" && st.Holder != instance)) {
				standbyOnce.Do(func() { close(standby) })
			}
		},
	})
	if err != nil {
		return err
	}
	a.firstTerm = make(chan error, 1)
	first := rec
	// Stopping: the stop signal first (a term ending now is the app's
	// stop, not a lost lease), then the election, whose term ends and
	// stops the active parts in their own order (active.stop) before the
	// lease is resigned, so that a standby takes over at once instead of
	// after the lease's TTL; then the XMPP sessions of ended terms still
	// storing what they received.
	a.started.onStop("XMPP sessions of ended terms", func(context.Context) { a.lingering.Wait() })
	a.started.run("election", func(ctx context.Context) error {
		return a.election.Run(ctx, func(ctx context.Context, term jetstream.Term) {
			// The recovery read at start-up serves a term won at once; one
			// won after a while as standby reads the log again.
			select {
			case <-standby:
				first = nil
			default:
			}
			a.lead(ctx, term, first)
			first = nil
		})
	}, a.failed)
	a.started.onStop("stop signal", func(context.Context) { close(a.stopping) })
	wait := time.NewTimer(10 * time.Second)
	defer wait.Stop()
	select {
	case err := <-a.firstTerm:
		return err
	case <-standby:
		st := a.election.Status()
		if st.Err != nil {
			a.logger.Warn("standby: the lease cannot be reached yet", "instance", instance, "error", st.Err)
		} else {
			a.logger.Info("standby: another instance is active; this one keeps the view and takes over if it dies", "instance", instance, "active", st.Holder)
		}
	case <-wait.C:
		a.logger.Warn("still starting as the active instance; going on in the background", "instance", instance)
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
	apiSrv := &api.Server{Log: a.log, View: a.view, Logger: a.logger, Status: a.Readiness, StatusChanged: a.status.Changed, OpenItems: a.cfg.OpenItems}
	// Long-lived requests (the live event stream) end when shutdown
	// starts, instead of holding it up until its deadline.
	baseCtx, cancelRequests := context.WithCancel(context.Background())
	srv := &http.Server{
		Handler:           a.routes(apiSrv),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
	}
	srv.RegisterOnShutdown(cancelRequests)
	a.httpLn = ln
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.failed(fmt.Errorf("http server: %w", err))
		}
	}()
	// As net/http means it: Shutdown waits for the requests in flight
	// until ctx ends, then Close cuts the rest.
	a.started.onStop("http server", func(ctx context.Context) {
		if err := srv.Shutdown(ctx); err != nil {
			a.logger.Warn("http shutdown cut short", "error", err)
			_ = srv.Close()
		}
		<-served
	})
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

// backlogs reports the followers' backlogs for metrics: none on a
// standby, which does not follow the inputs nor send.
type backlogs struct{ a *App }

func (b backlogs) Backlogs() map[string]int {
	out := map[string]int{}
	if p := b.a.parts.Load(); p != nil {
		out[actors.InputFollowerName] = p.system.InputBacklog()
		if p.outbound != nil {
			out[actors.OutboundFollowerName] = p.outbound.Backlog()
		}
		if p.notifier != nil {
			out[notify.FollowerName] = p.notifier.Backlog()
		}
	}
	return out
}

// InputBacklog is how many inputs the snipers were handed and have not
// decided yet (held while the log refuses their decisions, say); 0 on a
// standby.
func (a *App) InputBacklog() int {
	if p := a.parts.Load(); p != nil {
		return p.system.InputBacklog()
	}
	return 0
}

// OutboundBacklog is how many decisions the outbound bridge was handed and
// has not finished sending; 0 without XMPP or on a standby.
func (a *App) OutboundBacklog() int {
	if p := a.parts.Load(); p != nil && p.outbound != nil {
		return p.outbound.Backlog()
	}
	return 0
}

// NotifyBacklog is how many decisions the notifier was handed and has not
// finished with (waiting, or retried); 0 on a standby.
func (a *App) NotifyBacklog() int {
	if p := a.parts.Load(); p != nil && p.notifier != nil {
		return p.notifier.Backlog()
	}
	return 0
}

// checkNotify validates the notification settings.
func checkNotify(cfg Config) error {
	if err := notify.CheckOn(cfg.NotifyOn); err != nil {
		return err
	}
	if cfg.NotifyURL != "" {
		if err := api.ValidNotifyURL(cfg.NotifyURL); err != nil {
			return fmt.Errorf("notify url: %w", err)
		}
	}
	return nil
}

// Active reports whether this instance holds the lease and decides.
func (a *App) Active() bool { return a.parts.Load() != nil }

// Instance is this instance's name in the election.
func (a *App) Instance() string { return a.cfg.Instance }

// Stop shuts down in the reverse order of Start: no new requests (ctx
// bounds the HTTP drain), no new inputs, the decisions in flight
// finished, the lease resigned, then the log.
func (a *App) Stop(ctx context.Context) {
	a.stopOnce.Do(func() {
		a.started.stop(ctx)
		a.logger.Info("sniper stopped")
	})
}

// failed reports an error that stops the app from working on Fatal.
func (a *App) failed(err error) {
	select {
	case a.fatal <- err:
	default: // one is enough to stop
	}
}

// drainNATS flushes what is still buffered (acks above all) before
// closing; the closed handler says when it is done.
func (a *App) drainNATS(context.Context) {
	if a.nc.IsClosed() {
		return
	}
	closed := make(chan struct{})
	a.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := a.nc.Drain(); err != nil {
		a.nc.Close()
	}
	<-closed
}
