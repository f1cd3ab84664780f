package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"mellium.im/xmpp/jid"

	"sniper/messages"
)

// SOL 1.1 bodies as an auction house writes them, from the sniper's codec.
var solJoin = messages.EncodeJoin()

func solPrice(price, increment int64) string { return messages.EncodePrice(price, increment, "other") }

func solBid(price int64) string { return messages.EncodeBid(price) }

// answerTimeout bounds the wait for one answer (echo or BID) in a closed
// loop: far beyond any sane reaction, short enough to never hang a run.
const answerTimeout = 15 * time.Second

// warmup is how many round trips the one-auction loops make before they
// start timing (the first PRICE of a session pays for cold caches).
const warmup = 3

// closedLoop plays one auction: send a PRICE, wait for its answer, n
// times; it returns each round trip but the first skip, from the write
// to the read of the answer.
func closedLoop(a *auctionClient, to jid.JID, skip, n int, answer func(price int64) string) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, n)
	for k := range skip + n {
		price := int64(1000 + 10*k)
		body := solPrice(price, 1)
		want := answer(price)
		t0 := time.Now()
		if err := a.c.send(to, body); err != nil {
			return lat, err
		}
		m, err := a.await(to, func(b string) bool { return b == want }, answerTimeout)
		if err != nil {
			return lat, fmt.Errorf("round %d (%q): %w", k+1, want, err)
		}
		if k >= skip {
			lat = append(lat, m.at.Sub(t0))
		}
	}
	return lat, nil
}

// loadLoop runs closedLoop on every auction at once and returns all round
// trips and the wall time from the first PRICE to the last answer.
func loadLoop(as []*auctionClient, to jid.JID, n int, answer func(int64) string) ([]time.Duration, time.Duration, error) {
	var (
		mu    sync.Mutex
		all   []time.Duration
		first error
		wg    sync.WaitGroup
	)
	start := time.Now()
	for _, a := range as {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat, err := closedLoop(a, to, 0, n, answer)
			mu.Lock()
			defer mu.Unlock()
			all = append(all, lat...)
			if err != nil && first == nil {
				first = err
			}
		}()
	}
	wg.Wait()
	return all, time.Since(start), first
}

func latSample(lat []time.Duration, wall time.Duration) sample {
	return sample{"v": float64(len(lat)) / wall.Seconds(), "p50": pct(lat, 50), "p99": pct(lat, 99), "max": pct(lat, 100)}
}

// echoStage is the XMPP baseline: the same auction clients, the same
// Prosody, an echo bot where the sniper would be.
func echoStage(_ context.Context, e *bench) error {
	h := e.house
	one := h.auctions[latItem]
	one.drain()
	lat, err := closedLoop(one, h.echoJID, warmup, e.p.latPrices, func(p int64) string { return solPrice(p, 1) })
	if err != nil {
		e.res.fail("echo.lat", err)
	} else {
		e.res.add("echo.lat", latSample(lat, sum(lat)))
	}
	as := e.loadAuctions()
	for _, a := range as {
		a.drain()
	}
	pc0, _ := procCPU(h.prosodyPID())
	lat, wall, err := loadLoop(as, h.echoJID, e.p.loadPrices, func(p int64) string { return solPrice(p, 1) })
	pc1, _ := procCPU(h.prosodyPID())
	if err != nil {
		e.res.fail("echo.load", err)
		return nil
	}
	s := latSample(lat, wall)
	s["prosody_cpu"] = (pc1 - pc0).Seconds() / float64(len(lat))
	e.res.add("echo.load", s)
	return nil
}

func sum(d []time.Duration) time.Duration {
	var t time.Duration
	for _, x := range d {
		t += x
	}
	return t
}

// sniperStage runs the sniper against the auctions through Prosody: one
// auction closed loop, then loadAuctions x loadPrices closed loop with the
// sniper's CPU time and log writes over that window.
func sniperStage(ctx context.Context, e *bench, run int, policy string) error {
	dir, err := os.MkdirTemp(e.dataRoot, "xmpp-"+policy+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	latKey, loadKey, cpuKey, profKey := "sniper.lat."+policy, "sniper.load."+policy, "sniper.cpu."+policy, "sniper.profile."+policy
	p, err := startSniper(ctx, sniperConfig{bin: e.bin, dataDir: dir, fsync: policy, xmppAddr: e.house.p.Addr(),
		auctionDomain: domain, logPath: e.logPath(fmt.Sprintf("sniper-xmpp-%s-run%d.log", policy, run))})
	if err != nil {
		for _, k := range []string{latKey, loadKey, cpuKey} {
			e.res.fail(k, err)
		}
		return nil
	}
	defer p.stop()
	sniper := e.house.sniperJID()
	bid := func(price int64) string { return solBid(price + 1) }

	// One auction.
	one := e.house.auctions[latItem]
	one.drain()
	if err := joinAll(ctx, p, []*auctionClient{one}, sniper); err != nil {
		e.res.fail(latKey, err)
	} else if lat, err := closedLoop(one, sniper, warmup, e.p.latPrices, bid); err != nil {
		e.res.fail(latKey, err)
	} else {
		e.res.add(latKey, latSample(lat, sum(lat)))
	}

	// Many auctions at once.
	as := e.loadAuctions()
	for _, a := range as {
		a.drain()
	}
	if err := joinAll(ctx, p, as, sniper); err != nil {
		e.res.fail(loadKey, err)
		e.res.fail(cpuKey, err)
		return nil
	}
	seq0, _ := streamState(ctx, p.natsURL)
	cpu0, _ := procCPU(p.pid())
	pc0, _ := procCPU(e.house.prosodyPID())
	var prof chan error
	if run == 1 {
		prof = make(chan error, 1)
		go func() { prof <- e.profile(ctx, p, policy) }()
	}
	lat, wall, err := loadLoop(as, sniper, e.p.loadPrices, bid)
	cpu1, _ := procCPU(p.pid())
	pc1, _ := procCPU(e.house.prosodyPID())
	seq1, _ := streamState(ctx, p.natsURL)
	if err != nil {
		e.res.fail(loadKey, err)
		e.res.fail(cpuKey, err)
	} else {
		s := latSample(lat, wall)
		s["writes_per_bid"] = float64(seq1.LastSeq-seq0.LastSeq) / float64(len(lat))
		s["prosody_cpu"] = (pc1 - pc0).Seconds() / float64(len(lat))
		e.res.add(loadKey, s)
		e.res.add(cpuKey, sample{"v": (cpu1 - cpu0).Seconds() * 1000 / float64(len(lat))})
	}
	if prof != nil {
		if err := <-prof; err != nil {
			e.res.fail(profKey, err)
		}
	}
	return nil
}

// joinAll starts a sniper for each auction through the API and waits for
// each auction to receive its JOIN.
func joinAll(ctx context.Context, p *sniperProc, as []*auctionClient, sniper jid.JID) error {
	return inParallel(len(as), 8, func(i int) error {
		a := as[i]
		if _, err := p.post(ctx, a.item, 1_000_000_000); err != nil {
			return fmt.Errorf("join %s: %w", a.item, err)
		}
		if _, err := a.await(sniper, func(b string) bool { return b == solJoin }, 30*time.Second); err != nil {
			return fmt.Errorf("join %s: %w", a.item, err)
		}
		return nil
	})
}

// streamState is the SNIPER stream's state, read as any client may.
func streamState(ctx context.Context, url string) (jetstream.StreamState, error) {
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		return jetstream.StreamState{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "SNIPER")
	if err != nil {
		return jetstream.StreamState{}, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	return info.State, nil
}

// profile takes a CPU profile of the sniper through /debug/pprof, if its
// HTTP server has one, saves it and names its top costs.
func (e *bench) profile(ctx context.Context, p *sniperProc, policy string) error {
	key := "sniper.profile." + policy
	secs := int(e.p.profileFor.Seconds())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", p.url, secs), nil)
	resp, err := (&http.Client{Timeout: e.p.profileFor + 30*time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("GET /debug/pprof/profile: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	// A profile is a gzipped protobuf; the page's catch-all answers HTML.
	if resp.StatusCode != http.StatusOK || len(body) < 2 || body[0] != 0x1f || body[1] != 0x8b {
		return fmt.Errorf("no /debug/pprof on the sniper's HTTP server (GET /debug/pprof/profile: %s)", resp.Status)
	}
	if err := os.MkdirAll(e.profileDir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(e.profileDir, fmt.Sprintf("cpu-%dx%d-fsync-%s.pprof", len(e.loadItems), e.p.loadPrices, policy))
	if err := os.WriteFile(path, body, 0o644); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=3", e.bin, path).CombinedOutput()
	top := ""
	if err == nil {
		var names []string
		lines := strings.Split(string(out), "\n")
		for i, l := range lines {
			if strings.Contains(l, "flat%") {
				for _, r := range lines[i+1:] {
					f := strings.Fields(r)
					if len(f) >= 6 {
						names = append(names, fmt.Sprintf("%s %s flat", strings.Join(f[5:], " "), f[1]))
					}
				}
				break
			}
		}
		top = strings.Join(names, ", ")
	}
	rel := path
	if r, err := filepath.Rel(e.root, path); err == nil && !strings.HasPrefix(r, "..") {
		rel = r
	}
	e.res.setText(key, "`"+rel+"`", "top flat costs: "+top)
	return nil
}
