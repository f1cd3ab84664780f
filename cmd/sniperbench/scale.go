package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// scalePassivateAfter is the scale stage's --passivate-after, so that the
// idle figures are those of idle (passivated) auctions within seconds
// rather than after the default 30 s.
const scalePassivateAfter = time.Second

// scaleStage creates scaleMax snipers through the API from 4 concurrent
// clients, then measures them idle: RSS and heap per auction, CPU, and the
// stream's consumer count.
func scaleStage(ctx context.Context, e *bench, policy string) error {
	n := e.p.scaleMax
	postKey, rssKey, cpuKey, consKey := "scale.post."+policy, "scale.rss."+policy, "scale.idlecpu."+policy, "scale.consumers."+policy
	all := []string{postKey, rssKey, cpuKey, consKey}
	dir, err := os.MkdirTemp(e.dataRoot, "scale-"+policy+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := startSniper(ctx, sniperConfig{bin: e.bin, dataDir: dir, fsync: policy, xmppAddr: e.house.p.Addr(),
		auctionDomain: sinkDomain, logPath: e.logPath("sniper-scale-" + policy + ".log"), passivateAfter: scalePassivateAfter})
	if err != nil {
		for _, k := range all {
			e.res.fail(k, err)
		}
		return nil
	}
	defer p.stop()
	time.Sleep(2 * time.Second)
	rss0, _ := procRSS(p.pid())
	heap0, heapOK := p.heapInuse(ctx)

	// POSTs: 4 clients, each taking the next item. A 202 means the sniper
	// was not visible within the API's own wait: the stage has failed, and
	// going on would take that wait for every remaining POST.
	const clients = 4
	var (
		next, created, existed, accepted atomic.Int64
		mu                               sync.Mutex
		firstErr                         error
		wg                               sync.WaitGroup
	)
	pctx, cancel := context.WithTimeout(ctx, e.p.postTimeout)
	defer cancel()
	stop := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				code, err := p.post(pctx, fmt.Sprintf("sc-%06d", i), 1_000_000_000)
				switch {
				case err != nil && pctx.Err() != nil:
					return
				case err != nil:
					stop(err)
				case code == http.StatusCreated:
					created.Add(1)
				case code == http.StatusOK:
					existed.Add(1)
				case code == http.StatusAccepted:
					if accepted.Add(1) >= 2*clients {
						stop(fmt.Errorf("POST answered 202 (sniper not visible within the API's wait) %d times, from about the %s-th sniper on", accepted.Load(), thousands(float64(created.Load()))))
					}
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	ok := created.Load() + existed.Load()
	mu.Lock()
	postErr := firstErr
	mu.Unlock()
	if postErr == nil && pctx.Err() != nil && ctx.Err() == nil {
		postErr = fmt.Errorf("%s of %s POSTs answered within %s", thousands(float64(ok)), thousands(float64(n)), e.p.postTimeout)
	}
	if ok > 0 {
		e.res.add(postKey, sample{"v": float64(ok) / wall.Seconds(), "created": float64(ok)})
	}
	if postErr != nil {
		e.res.fail(postKey, postErr)
	}

	// All listed?
	listed := 0
	err = p.waitListed(ctx, fmt.Sprintf("%s snipers listed", thousands(float64(n))), pollEvery(n), 15*time.Second, 2*time.Minute,
		func(l []sniperView) (int, bool) { listed = len(l); return len(l), len(l) >= n })
	if errors.Is(err, context.DeadlineExceeded) || listed == 0 {
		for _, k := range all[1:] {
			e.res.fail(k, fmt.Errorf("no snipers listed: %v", err))
		}
		return nil
	}
	at := ""
	if err != nil {
		at = fmt.Sprintf("at %s listed snipers, not %s (%v)", thousands(float64(listed)), thousands(float64(n)), err)
	}

	// Idle: once the snipers have been passivated (two sweeps).
	time.Sleep(3*scalePassivateAfter + time.Second)
	c0, _ := procCPU(p.pid())
	t0 := time.Now()
	time.Sleep(e.p.idleWindow)
	c1, _ := procCPU(p.pid())
	idle := (c1 - c0).Seconds() / time.Since(t0).Seconds() * 100
	rss1, _ := procRSS(p.pid())
	s := sample{"v": float64(rss1-rss0) / 1024 / float64(listed), "n": float64(listed)}
	if heap1, ok := p.heapInuse(ctx); ok && heapOK {
		s["heap"] = (heap1 - heap0) / 1024 / float64(listed)
	}
	e.res.add(rssKey, s)
	e.res.add(cpuKey, sample{"v": idle, "n": float64(listed)})
	if st, err := streamState(ctx, p.natsURL); err == nil {
		e.res.add(consKey, sample{"v": float64(st.Consumers), "n": float64(listed)})
	} else {
		e.res.fail(consKey, err)
	}
	if at != "" {
		for _, k := range all[1:] {
			e.res.fail(k, errors.New(at))
		}
	}
	return nil
}

// fillPolicy is the sync policy the restart stage fills its log with:
// filling is setup, not what is measured, and at fsync always it would
// take most of the run.
const fillPolicy = "1s"

// restartStage fills a sniper with auctions of 10 events each (a start and
// 9 prices, straight into the log), waits until all are decided, then at
// each size restarts the process once per sync policy and times process
// start -> all listed.
func restartStage(ctx context.Context, e *bench) error {
	dir, err := os.MkdirTemp(e.dataRoot, "restart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	key := func(n int, pol string) string { return fmt.Sprintf("scale.restart.%d.%s", n, pol) }
	failFrom := func(i int, err error) {
		for j, n := range e.p.restartSizes[i:] {
			for _, pol := range policies {
				if j == 0 {
					e.res.fail(key(n, pol), err)
				} else {
					e.res.fail(key(n, pol), fmt.Errorf("not run: the %s stage failed", thousands(float64(e.p.restartSizes[i]))))
				}
			}
		}
	}
	cfg := sniperConfig{bin: e.bin, dataDir: dir, fsync: fillPolicy, xmppAddr: e.house.p.Addr(),
		auctionDomain: sinkDomain, logPath: e.logPath("sniper-restart.log")}
	p, err := startSniper(ctx, cfg)
	if err != nil {
		failFrom(0, err)
		return nil
	}
	defer func() { p.stop() }()
	cfg = p.cfg // the same ports after a restart
	have := 0
	for i, n := range e.p.restartSizes {
		err := func() error {
			pub, err := newPublisher(p.natsURL)
			if err != nil {
				return err
			}
			defer pub.close()
			items := itemNames("rs-", have, n)
			if err := startAll(ctx, p, pub, "rs-", items, n, 20*time.Second, 5*time.Minute); err != nil {
				return fmt.Errorf("filling the log: %w", err)
			}
			if _, err := pricesAll(ctx, pub, "rs-", items, 9, 20*time.Second, 5*time.Minute); err != nil {
				return fmt.Errorf("filling the log: %w", err)
			}
			have = n
			return nil
		}()
		if err != nil {
			failFrom(i, err)
			return nil
		}
		for _, pol := range policies {
			err := func() error {
				if err := p.stop(); err != nil {
					return err
				}
				c := cfg
				c.fsync = pol
				if p, err = launch(c); err != nil {
					return err
				}
				if err := p.waitServing(ctx, 2*time.Minute); err != nil {
					return err
				}
				var doneAt time.Time
				err = p.waitListed(ctx, fmt.Sprintf("%s snipers listed after restart", thousands(float64(n))), pollEvery(n)/4, 30*time.Second, 2*time.Minute,
					func(l []sniperView) (int, bool) {
						if len(l) >= n {
							doneAt = time.Now()
							return len(l), true
						}
						return len(l), false
					})
				if err != nil {
					return err
				}
				e.res.add(key(n, pol), sample{"v": doneAt.Sub(p.started).Seconds()})
				return nil
			}()
			if err != nil {
				e.res.fail(key(n, pol), err)
			}
		}
		select {
		case <-p.done:
			failFrom(i+1, errors.New("the sniper did not come back after the last restart"))
			return nil
		default:
		}
	}
	return nil
}
