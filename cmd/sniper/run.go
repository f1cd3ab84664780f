package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"sniper/actors"
	"sniper/api"
	"sniper/internal/app"
	"sniper/internal/logging"
	"sniper/jetstream"
	"sniper/notify"
	"sniper/xmppclient"
)

// runOptions are the settings of `sniper run`, one per flag.
type runOptions struct {
	dataDir, natsURL, natsListen, fsync, httpAddr, httpToken string
	replicas                                                 int
	checkpointEvery, passivateAfter                          time.Duration
	instance                                                 string
	natsUser, natsPassword, natsReaderPassword, natsCreds    string
	natsCA, natsCert, natsKey                                string
	natsName, natsClusterName, natsClusterListen, natsRoutes string
	leaseTTL                                                 time.Duration
	logLevel, logFormat                                      string

	xmppAddr, xmppJID, xmppPassword, auctionDomain, xmppTLS string

	notifyURL, notifySecret, notifyOn string

	config string // the config file the others were read from, if any
}

// runFlags declares the flags of `sniper run` on fs: the one place they
// are defined, shared by `sniper run` and `sniper config`. Every flag is
// also read from SNIPER_<NAME> and, but --config, from the config file.
// A flag whose name contains "password" or "token" is a secret (isSecret):
// `sniper config` masks it.
func runFlags(fs *flag.FlagSet) *runOptions {
	o := &runOptions{}
	fs.StringVar(&o.dataDir, "data-dir", "./sniper-data", "where the embedded NATS server keeps the event log")
	fs.StringVar(&o.natsURL, "nats-url", "", "use this NATS server or cluster (e.g. nats://a:4222,nats://b:4222) instead of the embedded one")
	fs.StringVar(&o.natsListen, "nats-listen", "127.0.0.1:4222", "address of the embedded NATS server's client port, for the nats CLI")
	fs.StringVar(&o.natsUser, "nats-user", "", "NATS user: the one to log in as with --nats-url; for the embedded server, its own user (full access, the routes' too), which every client must then use")
	fs.StringVar(&o.natsPassword, "nats-password", "", "password of --nats-user (prefer SNIPER_NATS_PASSWORD)")
	fs.StringVar(&o.natsReaderPassword, "nats-reader-password", "", "embedded server with --nats-user: also let the user 'reader' in with this password, read-only (the nats CLI's inspection commands)")
	fs.StringVar(&o.natsCreds, "nats-creds", "", "with --nats-url: log in with this creds file (JWT and nkey seed)")
	fs.StringVar(&o.natsCA, "nats-ca", "", "with --nats-url: trust the servers' TLS certificates signed by this CA file")
	fs.StringVar(&o.natsCert, "nats-cert", "", "with --nats-url: present this TLS client certificate (with --nats-key)")
	fs.StringVar(&o.natsKey, "nats-key", "", "the key file of --nats-cert")
	fs.StringVar(&o.natsName, "nats-name", "", "name of the embedded NATS server in its cluster (default \"sniper\"; in a cluster also the instance name)")
	fs.StringVar(&o.natsClusterName, "nats-cluster-name", "sniper", "name of the embedded servers' cluster, the same on every node")
	fs.StringVar(&o.natsClusterListen, "nats-cluster-listen", "", "make the embedded server a node of a JetStream cluster of embedded servers, with its route listener here (host:port); anything but loopback needs --nats-user")
	fs.StringVar(&o.natsRoutes, "nats-routes", "", "with --nats-cluster-listen: every node's route URL, comma separated (nats://h1:6222,nats://h2:6222,nats://h3:6222)")
	fs.StringVar(&o.fsync, "fsync", "always", "embedded store: 'always' fsyncs every write; a duration (e.g. 1s) flushes at that interval, faster but an acknowledged write can be lost on power failure")
	fs.StringVar(&o.httpAddr, "http", "127.0.0.1:8080", "address of the web UI and JSON API; anything but a loopback address needs --http-token")
	fs.StringVar(&o.httpToken, "http-token", "", "token every API call must carry (Authorization: Bearer) and the page asks for once; required when --http is not loopback")
	fs.IntVar(&o.replicas, "replicas", 1, "replicas of the SNIPER stream (3 on a NATS cluster)")
	fs.DurationVar(&o.checkpointEvery, "checkpoint-every", jetstream.DefaultCheckpointEvery, "how often the readers of the log record how far they got: what a restart reads again at most")
	fs.DurationVar(&o.passivateAfter, "passivate-after", actors.DefaultPassivateAfter, "a sniper with no input for about this long gives up its actor and keeps only its last decision in memory, until its next input")
	fs.StringVar(&o.instance, "instance", "", "this instance's name among those sharing the log, unique to each (default: the host name and a hash of --data-dir)")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", jetstream.DefaultLeaseTTL, "instances sharing a log elect one active instance with a lease this long: a standby takes over about this long after the active one dies")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")

	fs.StringVar(&o.xmppAddr, "xmpp-addr", "", "the auction house's XMPP server, host:port, dialled directly (no SRV lookup); without it, an embedded demo auction house with simulated bidders")
	fs.StringVar(&o.xmppJID, "xmpp-jid", "sniper@localhost/Auction", "the sniper's XMPP account; the resource is bound exactly")
	fs.StringVar(&o.xmppPassword, "xmpp-password", "", "password of --xmpp-jid (prefer the environment, SNIPER_XMPP_PASSWORD, or a config file only you can read)")
	fs.StringVar(&o.auctionDomain, "auction-domain", "", "domain of the auction JIDs auction-<item>@<domain>/Auction (default: the domain of --xmpp-jid)")
	fs.StringVar(&o.xmppTLS, "xmpp-tls", "require", "require (STARTTLS, verified certificate), skip-verify (self-signed servers) or off (plaintext)")

	fs.StringVar(&o.notifyURL, "notify-url", "", "POST a JSON notification to this http(s) URL for each final state of a sniper (Won, Lost, Failed, Stopped), retried until a 2xx; a sniper's own notify_url (POST /api/snipers) replaces it")
	fs.StringVar(&o.notifySecret, "notify-secret", "", "sign each notification: X-Sniper-Signature: sha256=<hex HMAC-SHA256 of the body> (prefer SNIPER_NOTIFY_SECRET)")
	fs.StringVar(&o.notifyOn, "notify-on", notify.OnFinal, "which states to notify: 'final' (Won, Lost, Failed, Stopped) or 'all' (every change of state)")

	fs.StringVar(&o.config, configFlag, "", "read the settings not given as flags or in the environment from this TOML `FILE`; its keys are the flag names, e.g. data-dir = \"/var/lib/sniper\"")
	return o
}

// check validates the settings runService interprets after parsing, for
// `sniper config`: the flag whose value is wrong and why.
func (o *runOptions) check() (flagName string, err error) {
	if _, err := parseFsync(o.fsync); err != nil {
		return "fsync", err
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(o.logLevel)); err != nil {
		return "log-level", fmt.Errorf("--log-level: %w", err)
	}
	if _, err := logging.New(io.Discard, "info", o.logFormat); err != nil {
		return "log-format", err
	}
	if o.xmppAddr != "" {
		if _, err := xmppclient.ParseTLSMode(o.xmppTLS); err != nil {
			return "xmpp-tls", fmt.Errorf("--xmpp-tls: %w", err)
		}
	}
	return o.notifyCheck()
}

// notifyCheck validates --notify-url and --notify-on.
func (o *runOptions) notifyCheck() (flagName string, err error) {
	if o.notifyURL != "" {
		if err := api.ValidNotifyURL(o.notifyURL); err != nil {
			return "notify-url", fmt.Errorf("--notify-url: %w", err)
		}
	}
	if err := notify.CheckOn(o.notifyOn); err != nil {
		return "notify-on", fmt.Errorf("--notify-on: %w", err)
	}
	return "", nil
}

func runService(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sniper run", flag.ContinueOnError)
	// Usage goes to stdout when asked for (--help), to stderr with an error.
	var usageOut bytes.Buffer
	fs.SetOutput(&usageOut)
	o := runFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: sniper run [flags]

Starts the sniper: the event log (an embedded NATS server storing under
--data-dir, or the NATS server at --nats-url), one actor per auction, and the
HTTP API on --http. With --xmpp-addr it joins auctions on that XMPP server as
--xmpp-jid; without it, on a built-in auction house with simulated bidders
(a demo). SIGINT or SIGTERM stops it cleanly.

Each flag is also read from SNIPER_<NAME> (e.g. SNIPER_DATA_DIR) and from
the TOML file --config FILE (e.g. data-dir = "/var/lib/sniper"): a flag beats
the environment, which beats the file, which beats the default. 'sniper
config' shows what a command line would run with and where each value comes
from.

Flags:
`)
		loader.PrintFlags(fs.Output(), fs)
	}
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			_, _ = stdout.Write(usageOut.Bytes())
			return 0
		}
		_, _ = stderr.Write(usageOut.Bytes())
		printErr(stderr, "sniper run", err)
		return 2
	}
	logger, err := logging.New(stderr, o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "sniper run: %v\n", err)
		return 2
	}
	interval, err := parseFsync(o.fsync)
	if err != nil {
		fmt.Fprintf(stderr, "sniper run: %v\n", err)
		return 2
	}
	if _, err := o.notifyCheck(); err != nil {
		fmt.Fprintf(stderr, "sniper run: %v\n", err)
		return 2
	}
	fault, err := faultHookFromEnv(logger)
	if err != nil {
		fmt.Fprintf(stderr, "sniper run: %v\n", err)
		return 2
	}
	cfg := app.Config{
		DataDir: o.dataDir, NATSURL: o.natsURL, NATSListen: o.natsListen, Fsync: interval,
		HTTPAddr: o.httpAddr, HTTPToken: o.httpToken, Replicas: o.replicas, CheckpointEvery: o.checkpointEvery, PassivateAfter: o.passivateAfter, Instance: o.instance, LeaseTTL: o.leaseTTL, Logger: logger, Fault: fault, AuctionDomain: o.auctionDomain,
	}
	cfg.NotifyURL, cfg.NotifySecret, cfg.NotifyOn = o.notifyURL, o.notifySecret, o.notifyOn
	cfg.NATSAuth = jetstream.ClientAuth{User: o.natsUser, Password: o.natsPassword, CredsFile: o.natsCreds, CAFile: o.natsCA, CertFile: o.natsCert, KeyFile: o.natsKey}
	cfg.NATSReaderPassword, cfg.NATSName = o.natsReaderPassword, o.natsName
	if o.natsClusterListen != "" {
		if o.natsURL != "" {
			fmt.Fprintln(stderr, "sniper run: --nats-cluster-listen clusters the embedded server; it cannot go with --nats-url")
			return 2
		}
		cfg.NATSCluster = &jetstream.ClusterConfig{Name: o.natsClusterName, Listen: o.natsClusterListen, Routes: splitList(o.natsRoutes)}
	} else if o.natsRoutes != "" {
		fmt.Fprintln(stderr, "sniper run: --nats-routes needs --nats-cluster-listen")
		return 2
	}
	var demo *demoHouse // the embedded auction house, without --xmpp-addr
	if o.xmppAddr != "" {
		mode, err := xmppclient.ParseTLSMode(o.xmppTLS)
		if err != nil {
			fmt.Fprintf(stderr, "sniper run: --xmpp-tls: %v\n", err)
			return 2
		}
		cfg.XMPP = &xmppclient.Config{Addr: o.xmppAddr, JID: o.xmppJID, Password: o.xmppPassword, TLS: mode}
	} else {
		var code int
		if demo, code = startDemo(ctx, logger, stderr, o.xmppJID, o.auctionDomain); demo == nil {
			return code
		}
		defer demo.Close() // after a.Stop below: deferred calls run last
		cfg.XMPP = demo.XMPP
		cfg.OpenItems = demo.OpenItems
	}
	// A cluster forming waits for its meta leader and enough peers.
	startBound := 30 * time.Second
	if cfg.NATSCluster != nil || o.replicas > 1 {
		startBound = 90 * time.Second
	}
	startCtx, cancel := context.WithTimeout(ctx, startBound)
	a, err := app.Start(startCtx, cfg)
	cancel()
	if err != nil {
		logger.Error("sniper did not start", "error", err)
		return 1
	}
	demo.announce(a.HTTPURL())
	logger.Info("sniper running", "http", a.HTTPURL(), "nats", a.NATSURL())
	code := 0
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err := <-a.Fatal():
		logger.Error("sniper cannot go on", "error", err)
		code = 1
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.Stop(stopCtx)
	return code
}

// splitList splits a comma separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func parseFsync(v string) (time.Duration, error) {
	if v == "always" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--fsync must be 'always' or a positive duration, got %q", v)
	}
	return d, nil
}
