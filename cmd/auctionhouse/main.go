// Command auctionhouse runs the simulated auction house (package
// auctionhouse) against an XMPP server: a few items, each auctioned by its
// own account auction-<item>@<domain>/Auction in SOL 1.1, with simulated
// bidders competing against whoever joins. It drives Prosody in tests and
// demos; `sniper run` without --xmpp-addr runs the same simulator on an
// embedded server.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sniper/auctionhouse"
	"sniper/internal/config"
	"sniper/internal/logging"
	"sniper/messages"
	"sniper/xmppclient"
)

const usageText = `Usage: auctionhouse --xmpp-addr HOST:PORT [flags]

Runs simulated auctions on an XMPP server until SIGINT or SIGTERM. Each item
is auctioned by the account auction-<item>@<domain>/Auction, which must exist
on the server with --password. Bidders join with "SOLVersion: 1.1; Command:
JOIN;" and bid with "SOLVersion: 1.1; Command: BID; Price: N;"; the house
answers PRICE and, at the closing time, CLOSE, then reopens the item after
--pause. Simulated bidders (alice, bob, ...) compete up to private limits.

Flags (each also read from AUCTIONHOUSE_<NAME>, e.g. AUCTIONHOUSE_PASSWORD):
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole command; it returns the exit code (2: usage error).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("auctionhouse", flag.ContinueOnError)
	var usageOut bytes.Buffer
	fs.SetOutput(&usageOut)
	var (
		xmppAddr   = fs.String("xmpp-addr", "", "the XMPP server, host:port, dialled directly (no SRV lookup); required")
		domain     = fs.String("domain", "localhost", "XMPP domain of the auction accounts")
		xmppTLS    = fs.String("xmpp-tls", "require", "require (STARTTLS, verified certificate), skip-verify (self-signed servers) or off (plaintext)")
		password   = fs.String("password", "", "password of every auction-<item> account (prefer the environment: AUCTIONHOUSE_PASSWORD)")
		items      = fs.String("items", "3", "items to auction: comma-separated ids (item-1,item-2) or a count N for item-1..item-N")
		duration   = fs.Duration("duration", 2*time.Minute, "how long each auction stays open")
		pause      = fs.Duration("pause", auctionhouse.DefaultPause, "time between an auction's close and the item's next auction")
		startPrice = fs.Int64("start-price", 100, "price of an item before any bid")
		increment  = fs.Int64("increment", 10, "minimum raise of a bid")
		bidders    = fs.Int("bidders", 3, "simulated bidders per item")
		seed       = fs.Uint64("seed", 0, "seed of the simulated bidders (0: random, logged so a run can be repeated)")
		quitBefore = fs.Duration("bidders-quit-before", 0, "simulated bidders make no move in the last `D` of an auction, as real bidders often stop early (0: they bid until the close)")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat  = fs.String("log-format", "text", "text or json")
	)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		loader.PrintFlags(fs.Output(), fs)
	}
	usageErr := func(err error) int {
		fmt.Fprintf(stderr, "auctionhouse: %v\nRun 'auctionhouse --help' for usage.\n", err)
		return 2
	}
	if _, err := loader.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			_, _ = stdout.Write(usageOut.Bytes())
			return 0
		}
		_, _ = stderr.Write(usageOut.Bytes())
		fmt.Fprintf(stderr, "auctionhouse: %v\n", err)
		return 2
	}
	if *xmppAddr == "" {
		return usageErr(errors.New("--xmpp-addr is required"))
	}
	mode, err := xmppclient.ParseTLSMode(*xmppTLS)
	if err != nil {
		return usageErr(fmt.Errorf("--xmpp-tls: %w", err))
	}
	ids, err := parseItems(*items)
	if err != nil {
		return usageErr(fmt.Errorf("--items: %w", err))
	}
	switch {
	case *duration <= 0:
		return usageErr(errors.New("--duration must be positive"))
	case *pause <= 0:
		return usageErr(errors.New("--pause must be positive"))
	case *startPrice < 0 || *increment <= 0:
		return usageErr(errors.New("--start-price must be >= 0 and --increment > 0"))
	case *bidders < 0:
		return usageErr(errors.New("--bidders must be >= 0"))
	case *quitBefore < 0:
		return usageErr(errors.New("--bidders-quit-before must be >= 0"))
	}
	logger, err := logging.New(stderr, *logLevel, *logFormat)
	if err != nil {
		return usageErr(err)
	}
	if *seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		*seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	cfg := auctionhouse.Config{
		XMPPAddr: *xmppAddr, Domain: *domain, TLS: mode, Password: *password,
		Pause: *pause, Seed: *seed, BiddersQuitBefore: *quitBefore, Logger: logger,
	}
	for _, id := range ids {
		cfg.Items = append(cfg.Items, auctionhouse.ItemConfig{
			ID: id, StartPrice: *startPrice, Increment: *increment, Duration: *duration, Bidders: *bidders,
		})
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	h, err := auctionhouse.Start(startCtx, cfg)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return 0 // interrupted while starting
		}
		logger.Error("auction house did not start", "error", err)
		return 1
	}
	<-ctx.Done()
	logger.Info("shutting down")
	_ = h.Close()
	return 0
}

// parseItems reads --items: "a,b,c" or a count.
func parseItems(v string) ([]string, error) {
	v = strings.TrimSpace(v)
	if n, err := strconv.Atoi(v); err == nil {
		if n < 1 || n > 1000 {
			return nil, fmt.Errorf("count %d out of range 1..1000", n)
		}
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("item-%d", i+1)
		}
		return ids, nil
	}
	var ids []string
	seen := map[string]bool{}
	for id := range strings.SplitSeq(v, ",") {
		id = strings.TrimSpace(id)
		if err := messages.ValidItem(id); err != nil {
			return nil, err
		}
		if seen[id] {
			return nil, fmt.Errorf("item %q given twice", id)
		}
		seen[id] = true
		ids = append(ids, id)
	}
	return ids, nil
}

// loader reads every flag not given on the command line from
// AUCTIONHOUSE_<NAME> in the environment.
var loader = config.Loader{EnvPrefix: "AUCTIONHOUSE"}
