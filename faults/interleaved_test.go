package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"sniper/actors"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
)

// The inputs of a thousand interleaved auctions are published straight
// into the log of the real binary, which is SIGKILLed at its fault points
// (before a decision, after one is committed) and at random moments, and
// restarted on its data dir. At the end each input is decided exactly
// once, in log order per auction, and each auction ends where its prices
// say. Then the input checkpoint is rewound to the start of the log: the
// restarted sniper reads every input again and decides none of them.
//
// The sniper has no auction house here (its XMPP server does not exist):
// this is about the log path; the kill suite covers the wire.
func TestKillsAcrossAThousandInterleavedAuctions(t *testing.T) {
	auctions := envInt("SNIPER_FAULT_AUCTIONS", 1000)
	const prices = 3
	kills := envInt("SNIPER_FAULT_INTERLEAVED_KILLS", 5)
	seed := uint64(envInt("SNIPER_FAULT_SEED", int(time.Now().UnixNano()%1e9)))
	rng := rand.New(rand.NewPCG(seed, 7))
	t.Logf("%d auctions x (start + %d prices), %d kills, seed %d (SNIPER_FAULT_SEED)", auctions, prices, kills, seed)

	// The inputs, interleaved: every auction's start, then every
	// auction's first price, and so on. Each has a message id, so a
	// publish retried after a kill is stored once.
	type input struct {
		id      string
		subject string
		data    []byte
	}
	var inputs []input
	item := func(i int) string { return fmt.Sprintf("mass-%d", i) }
	for round := 0; round <= prices; round++ {
		for i := range auctions {
			var payload any = messages.NewStart(item(i), 1_000_000)
			subject := messages.Subject(item(i), messages.KindCmd, messages.TypeStart)
			if round > 0 {
				payload = messages.NewPrice(item(i), int64(100*round), 1, "other", false)
				subject = messages.Subject(item(i), messages.KindIn, messages.TypePrice)
			}
			data, _ := json.Marshal(payload)
			inputs = append(inputs, input{id: fmt.Sprintf("test/%s/%d", item(i), round), subject: subject, data: data})
		}
	}

	dataDir := t.TempDir()
	natsAddr := freeAddr(t)
	args := []string{"--data-dir", dataDir, "--fsync", "always", "--checkpoint-every", "200ms",
		"--nats-listen", natsAddr,
		// No auction house: sends wait, decisions do not.
		"--xmpp-addr", freeAddr(t), "--xmpp-tls", "off", "--xmpp-jid", "sniper@localhost/Auction"}
	env := []string{"SNIPER_XMPP_PASSWORD=unused"}
	killed := map[string]int{}
	var proc *testkit.SniperProcess
	launch := func(armed bool) {
		lifeEnv := env
		if armed {
			points := []string{actors.FaultBeforeDecide, actors.FaultAfterCommit}
			lifeEnv = append(lifeEnv, fmt.Sprintf("SNIPER_TEST_FAULT=%s:%d", points[rng.IntN(len(points))], 1+rng.IntN(len(inputs)/kills)))
		}
		proc = testkit.LaunchSniper(t, args, lifeEnv...)
		if err := proc.WaitServing(60 * time.Second); err != nil && !proc.Exited() {
			t.Fatal(err)
		}
	}
	// death waits for the process to end and says how it died.
	death := func() {
		<-proc.Done()
		if f := proc.Logged("test fault: killing the process"); len(f) > 0 {
			point, _ := f[0]["point"].(string)
			killed[point]++
			return
		}
		killed["external"]++
	}
	total := func() int {
		n := 0
		for _, k := range killed {
			n += k
		}
		return n
	}
	// life starts the sniper (armed with a fault while kills remain) and
	// connects to its NATS; a life that dies on the way is followed by
	// the next.
	life := func() natsjs.JetStream {
		for {
			launch(total() < kills)
			nc, err := nats.Connect("nats://"+natsAddr, nats.MaxReconnects(0))
			if err == nil {
				t.Cleanup(nc.Close)
				js, err := natsjs.New(nc)
				if err != nil {
					t.Fatal(err)
				}
				return js
			}
			select {
			case <-proc.Done(): // killed at a fault point on the way up
			case <-time.After(10 * time.Second):
				t.Fatalf("connect to the sniper's NATS: %v", err)
			}
			death()
		}
	}

	began := time.Now()
	js := life()
	// Published in batches of async publishes; a batch cut by a kill is
	// published again whole (the message ids keep the repeats out).
	const batch = 100
	for next := 0; next < len(inputs); {
		// A timer kill now and then, besides the fault points.
		if total() < kills && rng.IntN(len(inputs)/batch/kills+1) == 0 && !proc.Exited() {
			proc.Kill()
		}
		end := min(next+batch, len(inputs))
		var err error
		var acks []natsjs.PubAckFuture
		for _, in := range inputs[next:end] {
			m := nats.NewMsg(in.subject)
			m.Data = in.data
			m.Header.Set(natsjs.MsgIDHeader, in.id)
			f, perr := js.PublishMsgAsync(m)
			if perr != nil {
				err = perr
				break
			}
			acks = append(acks, f)
		}
		timeout := time.After(10 * time.Second)
		for _, f := range acks {
			if err != nil {
				break
			}
			select {
			case <-f.Ok():
			case err = <-f.Err():
			case <-timeout:
				err = fmt.Errorf("no ack within 10 s")
			}
		}
		if err == nil {
			next = end
			continue
		}
		if !proc.Exited() {
			// Not dead yet: a kill lands while the batch is in flight.
			select {
			case <-proc.Done():
			case <-time.After(10 * time.Second):
				t.Fatalf("publish from %s: %v, and the sniper is alive\n%s", inputs[next].id, err, proc.LogTail(20))
			}
		}
		death()
		js = life()
	}
	// A last life without faults decides the rest.
	if !proc.Exited() {
		proc.Signal(os.Interrupt)
		<-proc.Done()
	} else {
		death()
	}
	kills = 0
	t.Logf("published after %s", time.Since(began))
	js = life()
	t.Logf("last life up after %s", time.Since(began))
	want := func(i int) (int64, string) { return 100*prices + 1, item(i) }
	_ = streamLastSeq
	waitFinal(t, js, auctions, want)
	t.Logf("all decided after %s", time.Since(began))
	checkInterleaved(t, js, auctions, prices)
	t.Logf("checked after %s", time.Since(began))
	t.Logf("kills %v; every one of %d inputs decided exactly once, in order", killed, len(inputs))

	// Rewind the input checkpoint to the beginning: everything is read
	// again, nothing is decided again.
	before := decisionsOfInputs(t, js)
	proc.Signal(os.Interrupt)
	<-proc.Done()
	t.Logf("stopped after %s", time.Since(began))
	rewind(t, dataDir)
	t.Logf("rewound after %s", time.Since(began))
	js = life()
	t.Logf("up after %s", time.Since(began))
	lastIn := lastInputSeq(t, js)
	// A hang guard, not a speed target: under a full parallel `make test`
	// on two cores, reading the 8,000 messages again under -race took
	// over a minute twice; alone it takes seconds.
	testkit.Eventually(t, 3*time.Minute, func() bool { return checkpointAt(t, js) >= lastIn },
		"the restarted sniper never read its inputs up to %d", lastIn)
	if after := decisionsOfInputs(t, js); after != before {
		t.Errorf("%d decisions after reading every input again, %d before: something was decided twice", after, before)
	}
	t.Logf("read again after %s", time.Since(began))
	checkInterleaved(t, js, auctions, prices)
	proc.Signal(os.Interrupt)
	<-proc.Done()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scan reads the whole stream once, in order.
func scan(t *testing.T, js natsjs.JetStream, filter string) []natsjs.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, jetstream.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx, natsjs.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) == 0 {
		return nil
	}
	cons, err := stream.OrderedConsumer(ctx, natsjs.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	var out []natsjs.Msg
	for {
		msg, err := it.Next(natsjs.NextContext(ctx))
		if err != nil {
			t.Fatalf("scan %s: %v", filter, err)
		}
		out = append(out, msg)
		if meta, _ := msg.Metadata(); meta.NumPending == 0 {
			return out
		}
	}
}

func seqOf(m natsjs.Msg) uint64 {
	meta, _ := m.Metadata()
	return meta.Sequence.Stream
}

// waitFinal waits until every auction's last decision has the bid want
// says.
func waitFinal(t *testing.T, js natsjs.JetStream, auctions int, want func(int) (int64, string)) {
	t.Helper()
	var behind string
	testkit.Eventually(t, 120*time.Second, func() bool {
		last := map[string]messages.DecisionEvent{}
		for _, m := range scan(t, js, messages.DecisionFilter("*")) {
			var d messages.DecisionEvent
			_ = json.Unmarshal(m.Data(), &d)
			last[d.Item] = d
		}
		for i := range auctions {
			bid, item := want(i)
			if last[item].LastBid != bid {
				behind = fmt.Sprintf("%s at %+v, want last bid %d (%d auctions decided on)", item, last[item], bid, len(last))
				return false
			}
		}
		return true
	}, "not every auction reached its last bid: %s", &behind)
}

// checkInterleaved checks exactly-once and per-auction order on the log.
func checkInterleaved(t *testing.T, js natsjs.JetStream, auctions, prices int) {
	t.Helper()
	inputs := map[string][]uint64{}
	for _, m := range scan(t, js, "sniper.*.*.*") {
		item, kind, _, err := messages.ParseSubject(m.Subject())
		if err != nil {
			continue
		}
		switch kind {
		case messages.KindCmd, messages.KindIn:
			inputs[item] = append(inputs[item], seqOf(m))
		}
	}
	decided := map[string][]uint64{}
	for _, m := range scan(t, js, messages.DecisionFilter("*")) {
		var d messages.DecisionEvent
		if err := json.Unmarshal(m.Data(), &d); err != nil {
			t.Fatalf("decision %d: %v", seqOf(m), err)
		}
		if d.Type == messages.TypeClaim {
			continue // a restarted life taking the auction over: no input decided
		}
		decided[d.Item] = append(decided[d.Item], d.InputSeq)
	}
	for i := range auctions {
		item := fmt.Sprintf("mass-%d", i)
		in, dec := inputs[item], decided[item]
		if len(in) != 1+prices {
			t.Fatalf("%s: %d inputs stored, want %d (a retried publish stored twice?)", item, len(in), 1+prices)
		}
		// Decided in log order, each once: the decisions' input
		// sequences are exactly the inputs', in the same order.
		if fmt.Sprint(in) != fmt.Sprint(dec) {
			t.Fatalf("%s: inputs at %v, decisions for %v; want each input decided once, in order", item, in, dec)
		}
	}
}

// decisionsOfInputs counts the decisions in the log but the claims (which
// every life writes on the unfinished auctions, deciding no input).
func decisionsOfInputs(t *testing.T, js natsjs.JetStream) int {
	t.Helper()
	n := 0
	for _, m := range scan(t, js, messages.DecisionFilter("*")) {
		if !strings.HasSuffix(m.Subject(), "."+messages.TypeClaim) {
			n++
		}
	}
	return n
}

func streamLastSeq(t *testing.T, js natsjs.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, jetstream.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

func lastInputSeq(t *testing.T, js natsjs.JetStream) uint64 {
	t.Helper()
	var last uint64
	for _, f := range messages.InputSubjects("*") {
		ms := scan(t, js, f)
		if len(ms) > 0 {
			last = max(last, seqOf(ms[len(ms)-1]))
		}
	}
	return last
}

func checkpointAt(t *testing.T, js natsjs.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, jetstream.StreamName)
	if err != nil {
		return 0
	}
	m, err := s.GetLastMsgForSubject(ctx, jetstream.CheckpointSubject(actors.InputFollowerName))
	if err != nil {
		return 0
	}
	var c struct {
		Seq uint64 `json:"seq"`
	}
	_ = json.Unmarshal(m.Data, &c)
	return c.Seq
}

// rewind writes an input checkpoint of 0 into the stopped sniper's log,
// through an embedded server of the test's own on its data dir.
func rewind(t *testing.T, dataDir string) {
	t.Helper()
	n := testkit.StartNATSIn(t, dataDir)
	defer n.Stop()
	js, err := natsjs.New(n.Conn)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(jetstream.CheckpointSubject(actors.InputFollowerName))
	m.Data = []byte(`{"type":"checkpoint","follower":"` + actors.InputFollowerName + `","seq":0}`)
	m.Header.Set(natsjs.MsgRollup, natsjs.MsgRollupSubject)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatalf("rewind the checkpoint: %v", err)
	}
}
