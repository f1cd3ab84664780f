package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sniper/api"
	"sniper/testkit"
	"sniper/xmppclient"
)

// embeddedCluster is three sniper processes whose embedded nats-servers
// form the JetStream cluster themselves (--nats-cluster-listen,
// --nats-routes): each node keeps its ports and data directory across
// restarts, as a machine does.
type embeddedCluster struct {
	t     *testing.T
	args  [][]string
	procs []*testkit.SniperProcess
}

func startEmbeddedCluster(t *testing.T, p *testkit.Prosody, n int, extra ...string) *embeddedCluster {
	t.Helper()
	c := &embeddedCluster{t: t}
	routes := make([]string, n)
	clusterAddrs := make([]string, n)
	for i := range n {
		clusterAddrs[i] = freeAddr(t)
		routes[i] = "nats://" + clusterAddrs[i]
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		args := []string{"--nats-name", name, "--instance", name, "--data-dir", t.TempDir(),
			"--nats-listen", freeAddr(t), "--nats-cluster-listen", clusterAddrs[i], "--nats-routes", strings.Join(routes, ","),
			"--replicas", "3", "--fsync", "always", "--checkpoint-every", "1s",
			"--xmpp-addr", p.Addr(), "--xmpp-jid", testkit.SniperJID(p), "--xmpp-tls", "skip-verify"}
		c.args = append(c.args, append(args, extra...))
	}
	c.procs = make([]*testkit.SniperProcess, n)
	for i := range n {
		c.procs[i] = c.launch(i)
	}
	for i := range n {
		if err := c.procs[i].WaitServing(90 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *embeddedCluster) launch(i int) *testkit.SniperProcess {
	return testkit.LaunchSniper(c.t, c.args[i], "SNIPER_XMPP_PASSWORD="+testkit.SniperPassword)
}

// restart starts node i again after it died, and waits until it serves.
func (c *embeddedCluster) restart(i int) {
	c.t.Helper()
	c.procs[i] = c.launch(i)
	if err := c.procs[i].WaitServing(90 * time.Second); err != nil {
		c.t.Fatal(err)
	}
}

// status is node i's /api/status, false if it does not answer.
func (c *embeddedCluster) status(i int) (api.Status, bool) {
	proc := c.procs[i]
	if proc.Exited() {
		return api.Status{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var st api.Status
	if err := proc.Get(ctx, "/api/status", &st); err != nil {
		return api.Status{}, false
	}
	return st, true
}

// waitActive waits until exactly one node says it is active and returns it.
func (c *embeddedCluster) waitActive(within time.Duration) int {
	c.t.Helper()
	active := -1
	testkit.Eventually(c.t, within, func() bool {
		active = -1
		for i := range c.procs {
			if st, ok := c.status(i); ok && st.Role == api.RoleActive {
				if active >= 0 {
					return false
				}
				active = i
			}
		}
		return active >= 0
	}, "no single active instance within %s", within)
	return active
}

// anyAlive is a running node, to read the log through its API.
func (c *embeddedCluster) anyAlive() *testkit.SniperProcess {
	for i := range c.procs {
		if _, ok := c.status(i); ok {
			return c.procs[i]
		}
	}
	return nil
}

// The kill suite on an embedded cluster: three instances, each with its
// embedded nats-server clustered with the others' (R3); the active one
// is SIGKILLed at random moments of the script, SIGKILL taking its NATS
// node with it, and restarted; a standby takes over each time. The checks
// are the kill suite's: every input decided exactly once, the final state
// of every auction as the script says, at most one duplicate message on
// the wire per kill. SNIPER_FAULT_CLUSTER_KILLS sets the number of kills
// (make faults: 50).
func TestKillSuiteAcrossAnEmbeddedCluster(t *testing.T) {
	kills := envInt("SNIPER_FAULT_CLUSTER_KILLS", 2)
	items := []string{"item-1", "item-2", "item-3"}
	steps := script(items, max(4, kills/len(items)+2))
	seed := uint64(envInt("SNIPER_FAULT_SEED", int(time.Now().UnixNano()%1e9)))
	rng := rand.New(rand.NewPCG(seed, 7))
	t.Logf("cluster kill suite: %d kills, %d items, %d auction messages, seed %d", kills, len(items), len(steps), seed)

	p := testkit.StartProsody(t)
	if err := p.Register(testkit.SniperUser, testkit.SniperPassword); err != nil {
		t.Fatal(err)
	}
	auctions := map[string]*testkit.FakeAuctionServer{}
	for _, item := range items {
		auctions[item] = testkit.NewFakeAuctionServer(t, p, "ha-"+item)
	}
	began := time.Now()
	c := startEmbeddedCluster(t, p, 3)
	active := c.waitActive(90 * time.Second)
	t.Logf("cluster up, %s active, after %s", c.args[active][1], time.Since(began).Round(time.Millisecond))

	for _, item := range items {
		testkit.Eventually(t, 60*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			proc := c.anyAlive()
			status, err := proc.Post(ctx, "/api/snipers", fmt.Sprintf(`{"item":"ha-%s","stop_price":1000000}`, item))
			return err == nil && (status == 201 || status == 200)
		}, "join %s", item)
	}
	sniperJID := testkit.SniperJID(p)
	killed := 0
	var takeovers []time.Duration
	var diedAt atomic.Int64 // unix nanos of the last kill
	pendingKill := false    // a kill is scheduled and not yet revived
	since := func() time.Duration { return time.Since(time.Unix(0, diedAt.Load())) }
	// reviveDead restarts the nodes that died (the timer's kills), on the
	// test's goroutine, and records how long the takeover took.
	reviveDead := func() {
		for i, proc := range c.procs {
			if !proc.Exited() {
				continue
			}
			killed++
			pendingKill = false
			// A standby takes over before the dead node comes back (else
			// it could take its own lease back on restart).
			next := c.waitActive(30 * time.Second)
			takeovers = append(takeovers, since())
			c.restart(i)
			if os.Getenv("FAULT_DEBUG") != "" {
				t.Logf("kill %d: %s killed, %s active after %s", killed, c.args[i][1], c.args[next][1], since().Round(time.Millisecond))
			}
		}
	}
	for _, item := range items {
		a := auctions[item]
		testkit.Eventually(t, 60*time.Second, func() bool { return a.CountJoins() > 0 }, "%s never received its JOIN", item)
	}
	killEvery := max(1, len(steps)/(kills+1))
	for n, st := range steps {
		item := "ha-" + st.item
		a := auctions[st.item]
		// Kill the active instance at a random moment of every
		// killEvery-th step, so that the kills fall inside the script,
		// while every auction is unfinished.
		var timer *time.Timer
		var victim *testkit.SniperProcess
		if killed < kills && (n+1)%killEvery == 0 {
			victim = c.procs[c.waitActive(30*time.Second)]
			pendingKill = true
			timer = time.AfterFunc(time.Duration(rng.IntN(100))*time.Millisecond, func() {
				diedAt.Store(time.Now().UnixNano())
				victim.Kill()
			})
		}
		sent := false
		var lastSend time.Time
		testkit.Eventually(t, 120*time.Second, func() bool {
			reviveDead()
			proc := c.anyAlive()
			if proc == nil {
				return false
			}
			evs, err := events(proc, item)
			if err != nil {
				return false
			}
			seq, inLog := find(evs, st)
			if inLog && decided(evs, seq) {
				return true
			}
			if !inLog && (!sent || time.Since(lastSend) > 3*time.Second) {
				// Not in the log: bounced while no instance was
				// connected, or lost with the one killed. Send it again,
				// as the auction house answers a JOIN.
				bidder := "other bidder"
				if st.sniper {
					bidder = sniperJID
				}
				body := testkit.SOLClose
				if !st.close {
					body = testkit.SOLPrice(st.price, st.inc, bidder)
				}
				if err := a.TrySendTo(sniperJID, body); err != nil && !errors.Is(err, xmppclient.ErrUndelivered) {
					t.Fatalf("auction send: %v", err)
				}
				sent, lastSend = true, time.Now()
			}
			return false
		}, "%s: the input of step %d %+v was never decided", item, n, st)
		if timer != nil {
			if timer.Stop() {
				// The step was decided first: kill between steps instead.
				diedAt.Store(time.Now().UnixNano())
				victim.Kill()
			}
			testkit.Eventually(t, 30*time.Second, func() bool { reviveDead(); return !pendingKill },
				"the killed instance never died")
		}
	}
	for killed < kills {
		victim := c.procs[c.waitActive(30*time.Second)]
		diedAt.Store(time.Now().UnixNano())
		victim.Kill()
		<-victim.Done()
		reviveDead()
	}

	res := result{final: map[string]payload{}, kills: map[string]int{"external": killed}}
	for _, item := range items {
		// Any node answers; one just restarted may be slow to at first.
		var evs []event
		var err error
		testkit.Eventually(t, 60*time.Second, func() bool {
			proc := c.anyAlive()
			if proc == nil {
				return false
			}
			evs, err = events(proc, "ha-"+item)
			return err == nil
		}, "no node answered the history of ha-%s: %v", item, lazyErr(func() error { return err }))
		if os.Getenv("FAULT_DEBUG") != "" {
			var types []string
			for _, e := range evs {
				var by struct {
					By string `json:"by"`
				}
				_ = json.Unmarshal(e.Data, &by)
				types = append(types, e.Subject+"/"+by.By)
			}
			t.Logf("ha-%s: %v", item, types)
		}
		res.check(t, "ha-"+item, evs, auctions[item])
	}
	for _, item := range items {
		want := expectedFinal(steps, item)
		got := res.final[item]
		got.InputSeq, got.Item = 0, ""
		if got != want {
			t.Errorf("ha-%s: final state %+v, want %+v", item, got, want)
		}
	}
	if dups := res.wireDups + res.joinDups; dups > killed {
		t.Errorf("%d duplicate messages on the wire, more than one per kill (%d kills)", dups, killed)
	}
	var worst time.Duration
	for _, d := range takeovers {
		worst = max(worst, d)
	}
	summary := fmt.Sprintf("cluster kill suite: %d kills of the active instance; %d inputs, %d decisions; duplicates on the log: 0 inputs, 0 decisions; duplicates on the wire: %d BIDs, %d JOINs; %d claims; takeover at most %s",
		killed, res.inputs, res.decisions, res.wireDups, res.joinDups, res.claims, worst.Round(time.Millisecond))
	t.Log(summary)
	fmt.Println(summary)
}

// expectedFinal is the state the script leaves item (the i-th) in: the
// sniper outbids every price by its increment; an item with a closing
// price naming the sniper is Won at its last bid, the others Lost.
func expectedFinal(steps []step, item string) payload {
	var last step
	won := false
	for _, st := range steps {
		if st.item != item || st.close {
			continue
		}
		if st.sniper {
			won = true
			continue
		}
		last = st
	}
	bid := last.price + last.inc
	if won {
		return payload{State: "Won", LastPrice: bid, LastBid: bid, StopPrice: 1000000}
	}
	return payload{State: "Lost", LastPrice: last.price, LastBid: bid, StopPrice: 1000000}
}

// Three instances in embedded-cluster mode with the default lease TTL: the
// active one is SIGKILLed mid-auction (its NATS node goes with it) and a
// survivor becomes active (within 10 s in most runs), joins again, and the
// auction ends as it would have without the kill.
func TestEmbeddedClusterSurvivesTheDeathOfTheActiveInstance(t *testing.T) {
	p := testkit.StartProsody(t)
	if err := p.Register(testkit.SniperUser, testkit.SniperPassword); err != nil {
		t.Fatal(err)
	}
	const item = "item-embedded"
	a := testkit.NewFakeAuctionServer(t, p, item)
	began := time.Now()
	c := startEmbeddedCluster(t, p, 3)
	first := c.waitActive(90 * time.Second)
	t.Logf("three instances clustered, %s active, after %s", c.args[first][1], time.Since(began).Round(time.Millisecond))
	standby := c.procs[(first+1)%3]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if status, err := standby.Post(ctx, "/api/snipers", fmt.Sprintf(`{"item":%q,"stop_price":2000}`, item)); err != nil || status != 201 {
		t.Fatalf("join through a standby: %d %v", status, err)
	}
	sniperJID := testkit.SniperJID(p)
	a.HasReceivedJoinRequestFrom(sniperJID)
	a.ReportPrice(1000, 98, "other bidder")
	a.HasReceivedBid(1098, sniperJID)

	c.procs[first].Kill()
	<-c.procs[first].Done()
	killed := time.Now()
	next := c.waitActive(30 * time.Second)
	took := time.Since(killed)
	t.Logf("%s active %s after %s was killed", c.args[next][1], took.Round(time.Millisecond), c.args[first][1])
	// The target is 10 s, met by most runs (4.8-6.0 s); a run in which
	// the killed node led a raft group the active instance had not yet
	// moved away pays an election, and a reader created meanwhile waits
	// for it (11-26 s seen). The bound here is what must never be
	// exceeded; docs/reliability.md has the distribution.
	if took > 10*time.Second {
		t.Logf("the takeover took %s, over the 10 s target; %s's log:\n%s", took.Round(time.Millisecond), c.args[next][1], c.procs[next].LogTail(15))
	}
	if took > 45*time.Second {
		t.Errorf("the takeover took %s, want well under 45 s", took.Round(time.Millisecond))
	}
	a.HasReceivedJoins(2)
	a.ReportPrice(1200, 97, "other bidder")
	a.HasReceivedBid(1297, sniperJID)
	a.ReportPrice(1297, 97, sniperJID)
	a.AnnounceClosed()
	var evs []event
	testkit.Eventually(t, 30*time.Second, func() bool {
		var err error
		evs, err = events(c.procs[next], item)
		if err != nil {
			return false
		}
		for i := len(evs) - 1; i >= 0; i-- {
			if evs[i].isDecision() {
				return decode(evs[i]).State == "Won"
			}
		}
		return false
	}, "the auction never ended Won under %s", c.args[next][1])
	res := result{final: map[string]payload{}}
	res.check(t, item, evs, a)
	if res.claims != 1 {
		t.Errorf("%d claims, want 1 (the takeover)", res.claims)
	}
	if dups := res.wireDups + res.joinDups; dups > 1 {
		t.Errorf("%d duplicate messages on the wire, want at most one", dups)
	}
}

// lazyErr formats the error when a failure message is printed.
type lazyErr func() error

func (l lazyErr) String() string { return fmt.Sprint(l()) }
