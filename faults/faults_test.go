package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sniper/testkit"
	"sniper/xmppclient"
)

// A step is one message the auction house sends.
type step struct {
	item   string
	close  bool
	price  int64
	inc    int64
	sniper bool // the price names the sniper as bidder
}

// script builds, per item, rising prices from another bidder (each one
// makes the sniper bid), then for every other item a price naming the
// sniper (Winning), then the close. Items are interleaved, as a real
// auction house would.
func script(items []string, prices int) []step {
	var perItem [][]step
	for i, item := range items {
		var s []step
		var lastBid int64
		for k := range prices {
			p := int64(1000 + 100*k + 7*i)
			s = append(s, step{item: item, price: p, inc: 10})
			lastBid = p + 10
		}
		if i%2 == 0 {
			s = append(s, step{item: item, price: lastBid, inc: 5, sniper: true})
		}
		s = append(s, step{item: item, close: true})
		perItem = append(perItem, s)
	}
	var out []step
	for k := 0; ; k++ {
		added := false
		for _, s := range perItem {
			if k < len(s) {
				out = append(out, s[k])
				added = true
			}
		}
		if !added {
			return out
		}
	}
}

type event struct {
	Seq     uint64          `json:"seq"`
	Type    string          `json:"type"`
	Subject string          `json:"subject"` // kind.type
	Data    json.RawMessage `json:"data"`
}

// isDecision reports whether e is one of the sniper's decisions
// (dec.join, dec.bid, dec.state).
func (e event) isDecision() bool { return strings.HasPrefix(e.Subject, "dec.") }

type payload struct {
	Item         string `json:"item"`
	State        string `json:"state"`
	LastPrice    int64  `json:"last_price"`
	LastBid      int64  `json:"last_bid"`
	StopPrice    int64  `json:"stop_price"`
	InputSeq     uint64 `json:"input_seq"`
	CurrentPrice int64  `json:"current_price"`
	Price        int64  `json:"price"`
}

func decode(e event) payload {
	var p payload
	_ = json.Unmarshal(e.Data, &p)
	return p
}

// run plays the script against a sniper that is killed `kills` times and
// returns what it found.
type result struct {
	final     map[string]payload // last decision per item
	kills     map[string]int     // by fault point, "external" for timer kills
	inputs    int
	decisions int
	wireDups  int
	joinDups  int
	claims    int
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func TestKillSuite(t *testing.T) {
	kills := envInt("SNIPER_FAULT_KILLS", 8)
	items := make([]string, envInt("SNIPER_FAULT_ITEMS", 3))
	for i := range items {
		items[i] = fmt.Sprintf("item-%d", i+1)
	}
	// About two auction messages per kill keeps the script going until the
	// kill budget is spent.
	steps := script(items, envInt("SNIPER_FAULT_PRICES", max(6, 2*kills/len(items)+1)))
	seed := uint64(envInt("SNIPER_FAULT_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("kill suite: %d kills, %d items, %d auction messages, seed %d (SNIPER_FAULT_SEED)", kills, len(items), len(steps), seed)

	p := testkit.StartProsody(t)
	if err := p.Register(testkit.SniperUser, testkit.SniperPassword); err != nil {
		t.Fatal(err)
	}
	baseline := play(t, p, "base", items, steps, 0, seed)
	faulty := play(t, p, "kill", items, steps, kills, seed)

	for _, item := range items {
		b, f := baseline.final[item], faulty.final[item]
		// Sequences differ with the interleaving, names with the run.
		b.InputSeq, f.InputSeq, b.Item, f.Item = 0, 0, "", ""
		if b != f {
			t.Errorf("%s: final state %+v, the uninterrupted run ended %+v", item, f, b)
		}
	}
	total := 0
	for _, n := range faulty.kills {
		total += n
	}
	// The outbound bridge runs beside the snipers, so a kill at any
	// point, not only at after-send, can cut a send window: at most one
	// extra message per kill (the script's auctions are interleaved, and a
	// BID is only decided after the previous one's price came back, so at
	// most one is in flight). The uninterrupted run must have none (checked in play).
	if dups := faulty.wireDups + faulty.joinDups; dups > total {
		t.Errorf("%d duplicate messages on the wire, more than one per kill (%d kills)", dups, total)
	}
	if baseline.wireDups+baseline.joinDups != 0 {
		t.Errorf("the uninterrupted run sent %d duplicates", baseline.wireDups+baseline.joinDups)
	}
	summary := fmt.Sprintf("kill suite: %d kills %v; %d inputs, %d decisions; duplicates on the log: 0 inputs, 0 decisions; duplicates on the wire: %d BIDs, %d JOINs (%d of the kills were at after-send); %d claims by the restarted lives",
		total, faulty.kills, faulty.inputs, faulty.decisions, faulty.wireDups, faulty.joinDups, faulty.kills["after-send"], faulty.claims)
	t.Log(summary)
	fmt.Println(summary)
}

// play runs the whole script once. kills > 0 arms a fault (or a timer
// kill) in each life of the process until that many kills happened.
func play(t *testing.T, p *testkit.Prosody, name string, items []string, steps []step, kills int, seed uint64) result {
	rng := rand.New(rand.NewPCG(seed, uint64(len(name))))
	res := result{final: map[string]payload{}, kills: map[string]int{}}
	auctions := map[string]*testkit.FakeAuctionServer{}
	for _, item := range items {
		auctions[item] = testkit.NewFakeAuctionServer(t, p, name+"-"+item)
	}
	dataDir := t.TempDir()
	sniperJID := testkit.SniperJID(p)
	args := []string{"--data-dir", dataDir, "--fsync", "always", "--checkpoint-every", "1s",
		"--xmpp-addr", p.Addr(), "--xmpp-jid", sniperJID, "--xmpp-tls", "skip-verify"}
	env := []string{"SNIPER_XMPP_PASSWORD=" + testkit.SniperPassword}

	var proc *testkit.SniperProcess
	var timer *time.Timer
	killedByTimer := false
	finishing := false // the script is done: no more kills
	start := func() {
		lifeEnv := env
		killedByTimer = false
		if !finishing && res.totalKills() < kills {
			points := []string{"before-decide", "after-commit", "after-send", "after-inbound-write"}
			lifeEnv = append(lifeEnv, fmt.Sprintf("SNIPER_TEST_FAULT=%s:%d", points[rng.IntN(len(points))], 1+rng.IntN(3)))
		}
		proc = testkit.LaunchSniper(t, args, lifeEnv...)
		if !finishing && res.totalKills() < kills && rng.IntN(3) == 0 {
			d := time.Duration(50+rng.IntN(600)) * time.Millisecond
			pr := proc
			timer = time.AfterFunc(d, func() { killedByTimer = true; pr.Kill() })
		}
		if err := proc.WaitServing(60 * time.Second); err != nil && !proc.Exited() {
			t.Fatal(err)
		}
		waitReady(t, proc)
	}
	// recordDeath attributes a death to its fault point (from the log) or
	// to the timer, and starts the next life.
	recordDeath := func() {
		<-proc.Done()
		if timer != nil {
			timer.Stop()
		}
		point := "external"
		if f := proc.Logged("test fault: killing the process"); len(f) > 0 {
			point, _ = f[0]["point"].(string)
		} else if !killedByTimer {
			t.Fatalf("the sniper died by itself (exit %d):\n%s", proc.ExitCode(), proc.LogTail(30))
		}
		// FAULT_DEBUG=1 tells what each life sent and how it died, and
		// keeps the last life's log in $TMPDIR: how a failure is read.
		if os.Getenv("FAULT_DEBUG") != "" {
			for _, l := range proc.Logged("sent") {
				t.Logf("life sent %v %v", l["item"], l["body"])
			}
			t.Logf("died at %s", point)
		}
		res.kills[point]++
		start()
	}
	start()
	// diedOnError tells a request that failed because the process is dying
	// (a kill lands mid-request) from a real failure.
	diedOnError := func() bool {
		select {
		case <-proc.Done():
			recordDeath()
			return true
		case <-time.After(3 * time.Second):
			return false
		}
	}

	ctx := context.Background()
	for _, item := range items {
		for {
			status, err := proc.Post(ctx, "/api/snipers", fmt.Sprintf(`{"item":%q,"stop_price":1000000}`, name+"-"+item))
			if err == nil && (status == 201 || status == 200) {
				break
			}
			if diedOnError() {
				continue
			}
			t.Fatalf("join %s: %d %v\n%s", item, status, err, proc.LogTail(30))
		}
	}
	for _, st := range steps {
		item := name + "-" + st.item
		a := auctions[st.item]
		// The JOIN may wait for a restart: keep the sniper alive until
		// the auction has it.
		testkit.Eventually(t, 60*time.Second, func() bool {
			if proc.Exited() {
				recordDeath()
			}
			return joins(a) > 0
		}, "%s never received its JOIN", item)
		sent := false
		var lastSend time.Time
		// The process under test has no push channel: poll its API until
		// the step's input is in the log and decided, restarting it when
		// it dies and resending what the log lacks.
		testkit.Eventually(t, 60*time.Second, func() bool {
			evs, err := events(proc, item)
			if err != nil {
				if diedOnError() {
					return false
				}
				t.Fatalf("events of %s: %v", item, err)
			}
			seq, inLog := find(evs, st)
			if inLog && decided(evs, seq) {
				return true
			}
			if !inLog && (!sent || proc.Exited() || time.Since(lastSend) > 3*time.Second) {
				if proc.Exited() {
					recordDeath()
					return false
				}
				// Not in the log: it never reached the sniper (bounced
				// while it was down, or lost with the process). The
				// auction house's job is to deliver; send it again.
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
			if proc.Exited() {
				recordDeath()
			}
			return false
		}, "%s: the input of step %+v was never decided", item, st)
	}
	// The script is decided. A life still armed with a fault would die
	// while the checks wait for the wire: stop it cleanly (SIGTERM, which
	// must lose nothing either) and finish on a life without faults.
	finishing = true
	if timer != nil {
		timer.Stop()
	}
	if kills == 0 {
		// The uninterrupted run stays one life.
	} else if !proc.Exited() {
		proc.Signal(os.Interrupt)
		<-proc.Done()
		if f := proc.Logged("test fault: killing the process"); len(f) > 0 {
			point, _ := f[0]["point"].(string)
			res.kills[point]++ // it hit its fault while shutting down
		} else if code := proc.ExitCode(); code != 0 && !killedByTimer {
			t.Fatalf("SIGTERM: exit code %d\n%s", code, proc.LogTail(30))
		} else if killedByTimer {
			res.kills["external"]++
		}
		start()
	} else {
		recordDeath() // attributes the death and starts a life without faults
	}
	if os.Getenv("FAULT_DEBUG") != "" {
		last := proc
		t.Cleanup(func() {
			data, _ := os.ReadFile(last.LogPath)
			_ = os.WriteFile(filepath.Join(os.TempDir(), "sniper-last-life-"+name+".log"), data, 0o644)
		})
	}
	// Every decided bid must reach the wire, kills or not.
	for _, item := range items {
		for {
			evs, err := events(proc, name+"-"+item)
			if err != nil {
				if diedOnError() {
					continue
				}
				t.Fatal(err)
			}
			res.check(t, name+"-"+item, evs, auctions[item])
			break
		}
	}
	proc.Signal(os.Interrupt)
	if code := proc.ExitCode(); code != 0 {
		t.Errorf("%s run: exit code %d on SIGINT", name, code)
	}
	return res
}

func joins(a *testkit.FakeAuctionServer) int {
	n := 0
	for _, m := range a.Received() {
		if m.Body == testkit.SOLJoin {
			n++
		}
	}
	return n
}

func (r result) totalKills() int {
	n := 0
	for _, k := range r.kills {
		n += k
	}
	return n
}

func events(proc *testkit.SniperProcess, item string) ([]event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out struct {
		Events []event `json:"events"`
	}
	err := proc.Get(ctx, "/api/snipers/"+item+"/events", &out)
	return out.Events, err
}

// find returns the log sequence of the input a step produces, if stored.
func find(evs []event, st step) (uint64, bool) {
	for _, e := range evs {
		switch {
		case st.close && e.Type == "close":
			return e.Seq, true
		case !st.close && e.Type == "price" && decode(e).CurrentPrice == st.price:
			return e.Seq, true
		}
	}
	return 0, false
}

func decided(evs []event, seq uint64) bool {
	for _, e := range evs {
		if e.isDecision() && decode(e).InputSeq >= seq {
			return true
		}
	}
	return false
}

func waitReady(t *testing.T, proc *testkit.SniperProcess) {
	t.Helper()
	// A process that dies while starting is the caller's to restart.
	testkit.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var v map[string]any
		return proc.Exited() || proc.Get(ctx, "/readyz", &v) == nil
	}, "sniper not ready within 30 s")
}

// check verifies one auction's log and wire after the script ran.
func (r *result) check(t *testing.T, item string, evs []event, a *testkit.FakeAuctionServer) {
	t.Helper()
	inputs := map[uint64]bool{}
	decisions := map[uint64]int{}
	bids := map[uint64]int{}
	prices := map[int64]int{}
	var last payload
	claims := 0
	for _, e := range evs {
		switch {
		case e.Type == "claim":
			// Each life claims the unfinished auctions and joins again.
			claims++
		case e.isDecision():
			d := decode(e)
			decisions[d.InputSeq]++
			last = d
			if e.Type == "bid" {
				bids[d.InputSeq]++
			}
		case e.Type == "start", e.Type == "stop", e.Type == "price", e.Type == "close", e.Type == "malformed":
			inputs[e.Seq] = true
			if e.Type == "price" {
				prices[decode(e).CurrentPrice]++
			}
		}
	}
	for p, n := range prices {
		if n != 1 {
			t.Errorf("%s: price %d stored %d times", item, p, n)
		}
	}
	for seq := range inputs {
		if decisions[seq] != 1 {
			t.Errorf("%s: input %d decided %d times, want exactly once", item, seq, decisions[seq])
		}
	}
	for seq, n := range decisions {
		if !inputs[seq] {
			t.Errorf("%s: decision for %d, which is not an input of this auction", item, seq)
		}
		_ = n
	}
	var wantBids []int64
	for seq, n := range bids {
		if n != 1 {
			t.Errorf("%s: %d bids for input %d, want at most one", item, n, seq)
		}
	}
	for _, e := range evs {
		if e.isDecision() && e.Type == "bid" {
			wantBids = append(wantBids, decode(e).LastBid)
		}
	}
	// Every bid decided reaches the auction (at least once).
	for _, price := range wantBids {
		a.HasReceivedBids(price, 1)
		r.wireDups += a.CountBids(price) - 1
	}
	// One JOIN for the start and one per claim, each at least once.
	r.joinDups += joins(a) - 1 - claims
	r.claims += claims
	r.inputs += len(inputs)
	r.decisions += len(decisions)
	r.final[strings.SplitN(item, "-", 2)[1]] = last
}
