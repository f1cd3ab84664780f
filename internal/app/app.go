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
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"sniper/actors"
	"sniper/api"
	"sniper/jetstream"
	"sniper/projection"
	"sniper/web"
)

// Config is everything `sniper run` can be told.
type Config struct {
	DataDir    string
	NATSURL    string // empty: run the embedded server
	NATSListen string
	// Fsync is the embedded store's flush interval; 0 flushes every write.
	Fsync    time.Duration
	HTTPAddr string
	Replicas int
	Logger   *slog.Logger
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

	httpSrv  *http.Server
	httpLn   net.Listener
	httpDone chan error

	stopOnce sync.Once
}

// Start brings the sniper up; on error everything started is stopped.
func Start(ctx context.Context, cfg Config) (_ *App, err error) {
	a := &App{cfg: cfg, logger: cfg.Logger}
	if a.logger == nil {
		a.logger = slog.Default()
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
	a.view, err = projection.Start(ctx, a.log, a.logger)
	if err != nil {
		return nil, err
	}
	a.system, err = actors.StartSystem(ctx, actors.Deps{Log: a.log, Logger: a.logger, Fault: cfg.Fault})
	if err != nil {
		return nil, err
	}
	if err := a.serveHTTP(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *App) serveHTTP() error {
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http listen on %s: %w", a.cfg.HTTPAddr, err)
	}
	apiSrv := &api.Server{Log: a.log, View: a.view, Logger: a.logger}
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
	mux.Handle("/", web.Handler())
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
	if a.system != nil {
		a.system.Stop()
	}
	if a.view != nil {
		a.view.Stop()
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
