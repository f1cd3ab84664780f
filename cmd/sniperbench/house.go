package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"sniper/testkit"
)

// The auction house of the XMPP stages: a stock Prosody (the testkit's, as
// the tests run it: Nagle at Prosody's default, no rate limits), the
// auction accounts, an echo bot and a sink component.
const (
	domain         = "localhost"
	sinkDomain     = "sink.localhost"
	sinkSecret     = "sniperbench-sink"
	sniperUser     = "sniper"
	sniperPassword = "sniper-bench"
	echoUser       = "echo"
	auctionPass    = "auction"
	resource       = "Auction"
)

// house is the running Prosody with everyone the bench needs logged in.
type house struct {
	p        *testkit.Prosody
	sinkAddr string
	sink     *sink

	echo     *xclient
	echoJID  jid.JID
	echoQ    chan inMsg
	echoDone chan struct{}

	auctions map[string]*auctionClient // by item
}

// auctionClient is auction-<item>@localhost/Auction.
type auctionClient struct {
	item string
	c    *xclient
	in   chan inMsg
}

func (a *auctionClient) drain() {
	for {
		select {
		case <-a.in:
		default:
			return
		}
	}
}

// await waits for a message from `from` (bare compare) whose body
// satisfies match, dropping others, until the deadline.
func (a *auctionClient) await(from jid.JID, match func(string) bool, timeout time.Duration) (inMsg, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case m := <-a.in:
			if m.from.Bare().Equal(from.Bare()) && match(m.body) {
				return m, nil
			}
		case <-t.C:
			return inMsg{}, fmt.Errorf("auction %s: nothing matching from %s within %s", a.item, from.Bare(), timeout)
		case <-a.c.done:
			return inMsg{}, fmt.Errorf("auction %s: session ended: %v", a.item, a.c.err.Load())
		}
	}
}

// startHouse starts Prosody under dir with a sink component, registers the
// sniper, the echo bot and one account per item, and logs the echo bot,
// the sink and the auctions in.
func startHouse(ctx context.Context, dir string, items []string) (_ *house, err error) {
	p, err := testkit.NewProsody(dir)
	if err != nil {
		return nil, err
	}
	h := &house{p: p, auctions: map[string]*auctionClient{}}
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	h.sinkAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := addSinkComponent(p.ConfigPath(), port); err != nil {
		return nil, err
	}
	if err := p.Start(ctx); err != nil {
		return nil, fmt.Errorf("start prosody: %w", err)
	}
	users := []string{sniperUser, echoUser}
	for _, it := range items {
		users = append(users, "auction-"+it)
	}
	if err := registerAll(p, users); err != nil {
		return nil, err
	}
	if h.sink, err = dialSink(ctx, h.sinkAddr, sinkDomain, sinkSecret); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, p.LogTail(20))
	}
	h.echoJID = jid.MustParse(echoUser + "@" + domain + "/" + resource)
	h.echoQ = make(chan inMsg, 1<<14)
	if h.echo, err = dialXMPP(ctx, p.Addr(), h.echoJID, password(echoUser), func(m inMsg) { h.echoQ <- m }); err != nil {
		return nil, err
	}
	h.echoDone = make(chan struct{})
	go h.runEcho()
	// Logins in parallel: each is a TLS handshake and a SCRAM exchange.
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
		sem  = make(chan struct{}, 8)
	)
	for _, it := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			a := &auctionClient{item: it, in: make(chan inMsg, 4096)}
			self := jid.MustParse("auction-" + it + "@" + domain + "/" + resource)
			c, err := dialXMPP(ctx, p.Addr(), self, auctionPass, func(m inMsg) { a.in <- m })
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			a.c = c
			h.auctions[it] = a
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, fmt.Errorf("%d auction logins failed, first: %w", len(errs), errs[0])
	}
	return h, nil
}

// runEcho answers every message with the same body, one plain Send each,
// from one session, as the sniper's one session answers its auctions.
func (h *house) runEcho() {
	defer close(h.echoDone)
	for m := range h.echoQ {
		if err := h.echo.send(m.from, m.body); err != nil {
			return
		}
	}
}

func (h *house) sniperJID() jid.JID {
	return jid.MustParse(sniperUser + "@" + domain + "/" + resource)
}

// prosodyPID reads Prosody's pidfile, for its CPU time.
func (h *house) prosodyPID() int {
	b, err := os.ReadFile(filepath.Join(h.p.Dir(), "prosody.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func (h *house) close() {
	var wg sync.WaitGroup
	for _, a := range h.auctions {
		if a.c != nil {
			wg.Add(1)
			go func() { defer wg.Done(); a.c.close() }()
		}
	}
	wg.Wait()
	if h.echo != nil {
		h.echo.close()
		close(h.echoQ)
		<-h.echoDone
	}
	if h.sink != nil {
		h.sink.close()
	}
	_ = h.p.Close()
}

func password(user string) string {
	if user == sniperUser {
		return sniperPassword
	}
	if strings.HasPrefix(user, "auction-") {
		return auctionPass
	}
	return "bench-" + user
}

// registerAll creates the accounts with prosodyctl, a few at a time (each
// call is a Lua process start).
func registerAll(p *testkit.Prosody, users []string) error {
	return inParallel(len(users), 4, func(i int) error { return p.Register(users[i], password(users[i])) })
}

// inParallel runs f(0..n-1), at most limit at a time, and returns the
// first error.
func inParallel(n, limit int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, limit)
	)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// addSinkComponent adds the sink's component port and host to the
// testkit's generated config. Global settings must come before the first
// host section, so they go in front of the VirtualHost line; nothing of
// the client-to-server side (ports, Nagle, modules) changes.
func addSinkComponent(config string, port int) error {
	b, err := os.ReadFile(config)
	if err != nil {
		return err
	}
	text := string(b)
	i := strings.Index(text, "VirtualHost ")
	if i < 0 {
		return fmt.Errorf("no VirtualHost in %s", config)
	}
	global := fmt.Sprintf("component_ports = { %d }\ncomponent_interfaces = { \"127.0.0.1\" }\n", port)
	host := fmt.Sprintf("\nComponent %q\n    component_secret = %q\n", sinkDomain, sinkSecret)
	text = text[:i] + global + text[i:] + host
	return os.WriteFile(config, []byte(text), 0o640)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
