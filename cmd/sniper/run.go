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

	"sniper/internal/app"
	"sniper/jetstream"
	"sniper/xmppclient"
)

func runService(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sniper run", flag.ContinueOnError)
	// Usage goes to stdout when asked for (--help), to stderr with an error.
	var usageOut bytes.Buffer
	fs.SetOutput(&usageOut)
	var (
		dataDir    = fs.String("data-dir", "./sniper-data", "where the embedded NATS server keeps the event log")
		natsURL    = fs.String("nats-url", "", "use this NATS server or cluster (e.g. nats://a:4222,nats://b:4222) instead of the embedded one")
		natsListen = fs.String("nats-listen", "127.0.0.1:4222", "address of the embedded NATS server's client port, for the nats CLI")
		fsync      = fs.String("fsync", "always", "embedded store: 'always' fsyncs every write; a duration (e.g. 1s) flushes at that interval, faster but an acknowledged write can be lost on power failure")
		httpAddr   = fs.String("http", "127.0.0.1:8080", "address of the web UI and JSON API")
		replicas   = fs.Int("replicas", 1, "replicas of the SNIPER stream (3 on a NATS cluster)")
		ackWait    = fs.Duration("ack-wait", jetstream.DefaultAckWait, "after a crash, how soon an input or outgoing message the dead process held is handed out again")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat  = fs.String("log-format", "text", "text or json")

		xmppAddr      = fs.String("xmpp-addr", "", "the auction house's XMPP server, host:port, dialled directly (no SRV lookup); without it, an embedded demo auction house with simulated bidders")
		xmppJID       = fs.String("xmpp-jid", "sniper@localhost/Auction", "the sniper's XMPP account; the resource is bound exactly")
		xmppPassword  = fs.String("xmpp-password", "", "password of --xmpp-jid (prefer the environment: SNIPER_XMPP_PASSWORD)")
		auctionDomain = fs.String("auction-domain", "", "domain of the auction JIDs auction-<item>@<domain>/Auction (default: the domain of --xmpp-jid)")
		xmppTLS       = fs.String("xmpp-tls", "require", "require (STARTTLS, verified certificate), skip-verify (self-signed servers) or off (plaintext)")
	)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: sniper run [flags]

Starts the sniper: the event log (an embedded NATS server storing under
--data-dir, or the NATS server at --nats-url), one actor per auction, and the
HTTP API on --http. With --xmpp-addr it joins auctions on that XMPP server as
--xmpp-jid. SIGINT or SIGTERM stops it cleanly.

Flags (each also read from SNIPER_<NAME>, e.g. SNIPER_DATA_DIR):
`)
		printFlags(fs.Output(), fs)
	}
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			_, _ = stdout.Write(usageOut.Bytes())
			return 0
		}
		_, _ = stderr.Write(usageOut.Bytes())
		fmt.Fprintf(stderr, "sniper run: %v\n", err)
		return 2
	}
	logger, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "sniper run: %v\n", err)
		return 2
	}
	interval, err := parseFsync(*fsync)
	if err != nil {
		fmt.Fprintf(stderr, "sniper run: %v\n", err)
		return 2
	}
	fault, err := faultHookFromEnv(logger)
	if err != nil {
		fmt.Fprintf(stderr, "sniper run: %v\n", err)
		return 2
	}
	cfg := app.Config{
		DataDir: *dataDir, NATSURL: *natsURL, NATSListen: *natsListen, Fsync: interval,
		HTTPAddr: *httpAddr, Replicas: *replicas, AckWait: *ackWait, Logger: logger, Fault: fault, AuctionDomain: *auctionDomain,
	}
	var demo *demoHouse // the embedded auction house, without --xmpp-addr
	if *xmppAddr != "" {
		mode, err := xmppclient.ParseTLSMode(*xmppTLS)
		if err != nil {
			fmt.Fprintf(stderr, "sniper run: --xmpp-tls: %v\n", err)
			return 2
		}
		cfg.XMPP = &xmppclient.Config{Addr: *xmppAddr, JID: *xmppJID, Password: *xmppPassword, TLS: mode}
	} else {
		var code int
		if demo, code = startDemo(ctx, logger, stderr, *xmppJID, *auctionDomain); demo == nil {
			return code
		}
		defer demo.Close() // after a.Stop below: deferred calls run last
		cfg.XMPP = demo.XMPP
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
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

// printFlags is flag.PrintDefaults with the --name spelling the docs use
// and each flag's environment variable.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s", f.Name)
		if typ != "" {
			fmt.Fprintf(w, " %s", typ)
		}
		fmt.Fprintf(w, "\n    \t%s", strings.ReplaceAll(usage, "\n", "\n    \t"))
		switch {
		case f.DefValue == "":
		case typ == "string":
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		default:
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "\n    \t[env %s]\n", envName(f.Name))
	})
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

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, got %q", format)
}
