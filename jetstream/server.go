// Package jetstream is the sniper's port to its durable log: it runs an
// embedded nats-server or connects to an external one, keeps the SNIPER
// stream configured, and offers the few operations the actors and the API
// need (append, commit a decision atomically, read snapshots and history).
package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures the in-process nats-server of `sniper run`.
type EmbeddedConfig struct {
	// DataDir holds the JetStream store.
	DataDir string
	// Listen is the client listener (host:port) kept open so the `nats`
	// CLI can inspect the log; port 0 picks a free port. The sniper itself
	// talks to the server in-process.
	Listen string
	// SyncInterval is how often the store is flushed to disk; 0 means
	// fsync after every write (see docs/reliability.md for the trade-off).
	SyncInterval time.Duration
	// ServerName names the server in the `nats` CLI's reports and in its
	// cluster ("sniper" when empty).
	ServerName string
	// Auth, when enabled, makes every client and route log in.
	Auth ServerAuth
	// Cluster, when set, makes the server a node of a JetStream cluster of
	// embedded servers.
	Cluster *ClusterConfig
	Logger  *slog.Logger
}

// ClusterConfig is an embedded server's place in its cluster.
type ClusterConfig struct {
	// Name is the cluster's name, the same on every node.
	Name string
	// Listen is this node's route listener, host:port.
	Listen string
	// Routes are every node's route URL (nats://host:port), this one's
	// included (a server skips a route to itself).
	Routes []string
}

// Server is a running embedded nats-server with JetStream.
type Server struct {
	ns     *server.Server
	logger *slog.Logger
	auth   ServerAuth
	// systemPassword logs the system user in (StepDownMeta); "" unless
	// clustered.
	systemPassword string
}

// StartEmbedded starts a nats-server with JetStream storing under
// cfg.DataDir and waits until it accepts clients.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	name := cfg.ServerName
	if name == "" {
		name = "sniper"
	}
	opts := &server.Options{
		ServerName:   name,
		Host:         host,
		Port:         port,
		JetStream:    true,
		StoreDir:     cfg.DataDir,
		SyncInterval: cfg.SyncInterval,
		SyncAlways:   cfg.SyncInterval == 0,
		NoSigs:       true,
		Users:        cfg.Auth.users(),
	}
	var systemPassword string
	if cfg.Cluster != nil {
		if err := clusterOptions(opts, *cfg.Cluster, cfg.Auth); err != nil {
			return nil, err
		}
		if systemPassword, err = cfg.Auth.clusterAccounts(opts); err != nil {
			return nil, err
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("create embedded nats-server: %w", err)
	}
	ns.SetLoggerV2(&natsLogger{logger.With("component", "nats-server")}, false, false, false)
	ns.Start()
	deadline := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		deadline = time.Until(d)
	}
	if !ns.ReadyForConnections(deadline) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats-server not ready after %s (is %s free?)", deadline, cfg.Listen)
	}
	attrs := []any{"listen", ns.ClientURL(), "store", cfg.DataDir, "fsync", syncPolicy(cfg.SyncInterval), "auth", cfg.Auth.Enabled()}
	if cfg.Cluster != nil {
		attrs = append(attrs, "name", name, "cluster", opts.Cluster.Name, "cluster_listen", cfg.Cluster.Listen, "routes", len(opts.Routes))
	}
	logger.Info("embedded nats-server started", attrs...)
	return &Server{ns: ns, logger: logger, auth: cfg.Auth, systemPassword: systemPassword}, nil
}

// clusterOptions adds the cluster block to opts: the route listener and
// the routes, which log in with the server's user when auth is on.
func clusterOptions(opts *server.Options, c ClusterConfig, auth ServerAuth) error {
	host, portStr, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("nats cluster listen address %q: %w", c.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("nats cluster listen port %q: %w", portStr, err)
	}
	if len(c.Routes) == 0 {
		return errors.New("a cluster needs --nats-routes: every node's route URL")
	}
	name := c.Name
	if name == "" {
		name = "sniper"
	}
	opts.Cluster = server.ClusterOpts{Name: name, Host: host, Port: port, Username: auth.User, Password: auth.Password}
	for _, r := range c.Routes {
		u, err := url.Parse(strings.TrimSpace(r))
		if err != nil || u.Host == "" {
			return fmt.Errorf("nats route %q: want nats://host:port", r)
		}
		if auth.Enabled() {
			u.User = url.UserPassword(auth.User, auth.Password)
		}
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

func syncPolicy(d time.Duration) string {
	if d == 0 {
		return "always"
	}
	return "every " + d.String()
}

// Name is the server's name in the cluster.
func (s *Server) Name() string { return s.ns.Name() }

// ClientURL is the server's TCP address, for the `nats` CLI and other
// processes.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Connect opens a client connection that reaches the server in-process,
// skipping the loopback TCP stack (about twice the publish rate).
func (s *Server) Connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.InProcessServer(s.ns), nats.Name(name), nats.MaxReconnects(-1)}
	if s.auth.Enabled() {
		opts = append(opts, nats.UserInfo(s.auth.User, s.auth.Password))
	}
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect in-process to embedded nats-server: %w", err)
	}
	return nc, nil
}

// StepDownMeta asks the JetStream meta leader to hand its leadership to
// another node, if this clustered server holds it, and reports whether it
// asked: the active instance does, so that its death costs the cluster no
// meta election, which creating any reader (recovery, the followers)
// waits for. It is a system account request, made as the server's own
// system user.
func (s *Server) StepDownMeta(ctx context.Context) (bool, error) {
	if s.systemPassword == "" || !s.ns.JetStreamIsLeader() {
		return false, nil
	}
	nc, err := nats.Connect("", nats.InProcessServer(s.ns), nats.Name("sniper-system"), nats.UserInfo(systemUser, s.systemPassword))
	if err != nil {
		return false, fmt.Errorf("connect as the system user: %w", err)
	}
	defer nc.Close()
	res, err := nc.RequestWithContext(ctx, "$JS.API.META.LEADER.STEPDOWN", []byte("{}"))
	if err != nil {
		return false, fmt.Errorf("meta leader step-down: %w", err)
	}
	var body struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(res.Data, &body); err != nil {
		return false, fmt.Errorf("meta leader step-down: %w", err)
	}
	if body.Error != nil {
		return false, fmt.Errorf("meta leader step-down: %s", body.Error.Description)
	}
	return true, nil
}

// Shutdown stops the server and waits until it has flushed its store.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	s.logger.Info("embedded nats-server stopped")
}

// Connect dials an external NATS server or cluster at url. The connection
// reconnects forever: the sniper waits for its log rather than exit.
func Connect(ctx context.Context, url, name string, auth ClientAuth, logger *slog.Logger) (*nats.Conn, error) {
	if logger == nil {
		logger = slog.Default()
	}
	authOpts, err := auth.options()
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w", url, err)
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			logger.Warn("nats disconnected", "error", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
	}
	opts = append(opts, authOpts...)
	if d, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(d)))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w", url, err)
	}
	logger.Info("connected to nats", "server", nc.ConnectedUrlRedacted())
	return nc, nil
}

// natsLogger forwards nats-server's log lines to slog.
type natsLogger struct{ l *slog.Logger }

func (n *natsLogger) Noticef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Debugf(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Tracef(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
