package testkit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ClusterName is the name every server of a test cluster carries.
const ClusterName = "sniper-test"

// Cluster is n embedded nats-servers with JetStream, clustered over routes
// on loopback in the test's process: each has its own store (a t.TempDir)
// and fixed client and cluster ports, so one can be stopped and restarted
// where it was, as an operator restarts a node. Servers are named n1..nN.
//
// Routes go through a relay in front of each server's cluster port (every
// server advertises its relay, so gossip leads there too): that is how
// Kill cuts a server off from its peers before it stops, as a crash would,
// where Stop lets it hand its leaderships over first.
type Cluster struct {
	t testing.TB

	mu      sync.Mutex
	nodes   []*clusterNode
	stopped bool
	links   map[*routeLink]struct{}
	wg      sync.WaitGroup
}

type clusterNode struct {
	name        string
	storeDir    string
	clientPort  int
	clusterPort int
	relayAddr   string         // the relay in front of clusterPort
	relay       net.Listener   // nil while the server is down: dials are refused
	firstRelay  net.Listener   // bound with the cluster, until the first start
	id          string         // server ID of the current run
	srv         *server.Server // nil while stopped
	cut         bool           // killed: the relays drop its routes
}

// routeLink is one route connection through a relay, between servers a and
// b (b is -1 until the dialer's CONNECT names it).
type routeLink struct {
	a, b     int
	down, up net.Conn
}

// StartCluster starts n servers routed to each other and waits until the
// JetStream meta group has a leader and every server is current with it,
// so an R<n> stream can be created at once. Everything is shut down when
// the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("a cluster needs at least one server, not %d", n)
	}
	c := &Cluster{t: t, links: map[*routeLink]struct{}{}}
	t.Cleanup(c.Shutdown)
	for i := range n {
		// The relays are bound at once, not on a port found free and
		// released: every server's routes point at them, and a port
		// released for a moment can be taken by any process meanwhile
		// (seen: "bind: address already in use" with packages testing in
		// parallel).
		relay, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, &clusterNode{
			name:        fmt.Sprintf("n%d", i+1),
			storeDir:    t.TempDir(),
			clientPort:  clusterPort(t),
			clusterPort: clusterPort(t),
			relayAddr:   relay.Addr().String(),
			firstRelay:  relay,
		})
	}
	for i := range c.nodes {
		c.start(i)
	}
	c.WaitMetaLeader(clusterWait)
	return c
}

// clusterWait bounds how long the cluster may take to form or to elect a
// leader: raft's election timeout is 4-9 s in nats-server.
const clusterWait = 20 * time.Second

// clusterPort is a free loopback port for one of the servers (freePort,
// as for Prosody: released before the server binds it).
func clusterPort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func (c *Cluster) options(i int) *server.Options {
	nd := c.nodes[i]
	var routes []string
	for j, other := range c.nodes {
		if j != i {
			routes = append(routes, "nats://"+other.relayAddr)
		}
	}
	return &server.Options{
		ServerName: nd.name,
		Host:       "127.0.0.1",
		Port:       nd.clientPort,
		JetStream:  true,
		StoreDir:   nd.storeDir,
		NoSigs:     true,
		Cluster: server.ClusterOpts{
			Name:      ClusterName,
			Host:      "127.0.0.1",
			Port:      nd.clusterPort,
			Advertise: nd.relayAddr,
		},
		Routes: server.RoutesFromStr(strings.Join(routes, ",")),
	}
}

func (c *Cluster) start(i int) {
	c.t.Helper()
	nd := c.nodes[i]
	ns, err := server.NewServer(c.options(i))
	if err != nil {
		c.t.Fatalf("nats-server %s: %v", nd.name, err)
	}
	ns.SetLoggerV2(&clusterLogger{t: c.t, name: nd.name, done: c.isStopped}, false, false, false)
	relay := nd.firstRelay
	nd.firstRelay = nil
	if relay == nil {
		var err error
		if relay, err = net.Listen("tcp", nd.relayAddr); err != nil {
			ns.Shutdown()
			c.t.Fatalf("route relay for %s: %v", nd.name, err)
		}
	}
	c.mu.Lock()
	nd.id, nd.cut, nd.relay = ns.ID(), false, relay
	c.mu.Unlock()
	c.wg.Add(1)
	go c.serveRelay(i, relay)
	ns.Start()
	if !ns.ReadyForConnections(clusterWait) {
		ns.Shutdown()
		c.t.Fatalf("nats-server %s not ready on 127.0.0.1:%d after %s", nd.name, nd.clientPort, clusterWait)
	}
	c.mu.Lock()
	nd.srv = ns
	c.mu.Unlock()
}

func (c *Cluster) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

// N is the number of servers, running or not.
func (c *Cluster) N() int { return len(c.nodes) }

// Name is the server name of server i (n1..nN).
func (c *Cluster) Name(i int) string { return c.nodes[i].name }

// Server is server i, nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// URLs is every server's client URL, comma separated, as --nats-url takes
// them; stopped servers included (a client skips them until they return).
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i, nd := range c.nodes {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", nd.clientPort)
	}
	return strings.Join(urls, ",")
}

// running returns the running servers with their indexes.
func (c *Cluster) running() map[int]*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[int]*server.Server{}
	for i, nd := range c.nodes {
		if nd.srv != nil {
			out[i] = nd.srv
		}
	}
	return out
}

// MetaLeader is the index of the running server that leads the JetStream
// meta group, or -1 when none does (an election is under way).
func (c *Cluster) MetaLeader() int {
	for i, s := range c.running() {
		if s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// WaitMetaLeader waits until a running server leads the meta group and
// every running server is current with it.
func (c *Cluster) WaitMetaLeader(timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	Eventually(c.t, timeout, func() bool {
		if leader = c.MetaLeader(); leader < 0 {
			return false
		}
		for _, s := range c.running() {
			if !s.JetStreamIsCurrent() {
				return false
			}
		}
		return true
	}, "the JetStream meta group of %d servers never had a leader every server follows", len(c.nodes))
	return leader
}

// StreamLeader is the index of the running server that leads stream (in
// the global account, where clients without accounts live), or -1.
func (c *Cluster) StreamLeader(stream string) int {
	for i, s := range c.running() {
		if s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// WaitStreamLeader waits until a running server leads stream and returns
// its index.
func (c *Cluster) WaitStreamLeader(stream string, timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	Eventually(c.t, timeout, func() bool { leader = c.StreamLeader(stream); return leader >= 0 },
		"stream %s never had a leader among the running servers", stream)
	return leader
}

// ConsumerLeader is the index of the running server that leads a durable
// consumer of stream, or -1.
func (c *Cluster) ConsumerLeader(stream, consumer string) int {
	for i, s := range c.running() {
		if s.JetStreamIsConsumerLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream, consumer) {
			return i
		}
	}
	return -1
}

// ClientServer is the index of the running server a client connection
// named name (nats.Name) is attached to, or -1.
func (c *Cluster) ClientServer(name string) int {
	for i, s := range c.running() {
		cz, err := s.Connz(&server.ConnzOptions{})
		if err != nil {
			continue
		}
		for _, ci := range cz.Conns {
			if ci.Name == name {
				return i
			}
		}
	}
	return -1
}

// MoveLeaders makes server to the leader of stream and of each of its
// durable consumers named, with leader step-downs that prefer it (the
// `nats stream/consumer cluster step-down --preferred` requests), and waits
// until it leads them all: a test can then lose all of them at once.
func (c *Cluster) MoveLeaders(to int, stream string, consumers ...string) {
	c.t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.Name("testkit-cluster"))
	if err != nil {
		c.t.Fatalf("connect to the cluster: %v", err)
	}
	defer nc.Close()
	type group struct {
		what, subject string
		leads         func() bool
	}
	groups := []group{{
		what:    "stream " + stream,
		subject: "$JS.API.STREAM.LEADER.STEPDOWN." + stream,
		leads:   func() bool { return c.StreamLeader(stream) == to },
	}}
	for _, cons := range consumers {
		groups = append(groups, group{
			what:    "consumer " + cons,
			subject: "$JS.API.CONSUMER.LEADER.STEPDOWN." + stream + "." + cons,
			leads:   func() bool { return c.ConsumerLeader(stream, cons) == to },
		})
	}
	req := fmt.Sprintf(`{"placement":{"preferred":%q}}`, c.nodes[to].name)
	for _, g := range groups {
		Eventually(c.t, clusterWait, func() bool {
			if g.leads() {
				return true
			}
			res, err := nc.Request(g.subject, []byte(req), 2*time.Second)
			if err != nil {
				return false
			}
			var answer struct {
				Success bool `json:"success"`
			}
			_ = json.Unmarshal(res.Data, &answer)
			return answer.Success && g.leads()
		}, "%s never moved its leader to %s", g.what, c.nodes[to].name)
	}
}

// StreamState is stream's state as server i holds it (its own replica),
// and false when the server is stopped or holds no replica.
func (c *Cluster) StreamState(i int, stream string) (server.StreamState, bool) {
	s := c.Server(i)
	if s == nil {
		return server.StreamState{}, false
	}
	jsz, err := s.Jsz(&server.JSzOptions{Account: server.DEFAULT_GLOBAL_ACCOUNT, Streams: true})
	if err != nil {
		return server.StreamState{}, false
	}
	for _, acc := range jsz.AccountDetails {
		for _, sd := range acc.Streams {
			if sd.Name == stream {
				return sd.State, true
			}
		}
	}
	return server.StreamState{}, false
}

// Stop shuts server i down as an operator does and waits until it has
// flushed its store: nats-server first steps down from every raft group it
// leads, handing the leadership to a current peer, and tells the cluster
// it is going; its clients lose their connection. Kill is the crash.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	s := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.closeRelay(i)
	c.mu.Unlock()
	if s == nil {
		return
	}
	s.Shutdown()
	s.WaitForShutdown()
}

// Kill cuts server i off from its peers (every route to or from it is
// closed, and no new one gets through) and then shuts it down: its peers
// get no leadership hand-over and no shutdown notice, as when a machine
// dies, and must notice by raft's election timeout. Its clients lose their
// connection as they would in a crash.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	s := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.nodes[i].cut = true
	c.closeRelay(i)
	var closing []*routeLink
	for l := range c.links {
		if l.a == i || l.b == i {
			closing = append(closing, l)
		}
	}
	c.mu.Unlock()
	for _, l := range closing {
		l.close()
	}
	if s == nil {
		return
	}
	s.Shutdown()
	s.WaitForShutdown()
}

// Restart starts server i again on its ports and store, after Stop or
// Kill.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Server(i) != nil {
		c.t.Fatalf("restart %s: it is running", c.nodes[i].name)
	}
	c.start(i)
}

// Shutdown stops every server and relay; the test's cleanup calls it.
func (c *Cluster) Shutdown() {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.stopped = true
	c.mu.Unlock()
	for i := range c.nodes {
		c.Stop(i)
	}
	c.mu.Lock()
	for l := range c.links {
		l.close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// serveRelay forwards route connections to server i's cluster port, unless
// i or the dialing server (named by the server ID in its CONNECT, the
// first thing a server sends on a route it dials) is cut off.
func (c *Cluster) serveRelay(i int, relay net.Listener) {
	defer c.wg.Done()
	for {
		down, err := relay.Accept()
		if err != nil {
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.relayRoute(i, down)
		}()
	}
}

func (c *Cluster) relayRoute(i int, down net.Conn) {
	_ = down.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(down)
	first, err := br.ReadString('\n')
	_ = down.SetReadDeadline(time.Time{})
	if err != nil {
		_ = down.Close()
		return
	}
	var connect struct {
		Name string `json:"name"`
	}
	if rest, ok := strings.CutPrefix(first, "CONNECT "); ok {
		_ = json.Unmarshal([]byte(strings.TrimSpace(rest)), &connect)
	}
	up, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.nodes[i].clusterPort), 2*time.Second)
	if err != nil {
		_ = down.Close()
		return
	}
	l := &routeLink{a: i, b: -1, down: down, up: up}
	c.mu.Lock()
	for j, other := range c.nodes {
		if other.id != "" && other.id == connect.Name {
			l.b = j
		}
	}
	if c.stopped || c.nodes[i].cut || (l.b >= 0 && c.nodes[l.b].cut) {
		c.mu.Unlock()
		l.close()
		return
	}
	c.links[l] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.links, l)
		c.mu.Unlock()
	}()
	if _, err := io.WriteString(up, first); err != nil {
		l.close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, br); l.close(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(down, up); l.close(); done <- struct{}{} }()
	<-done
	<-done
}

// closeRelay stops server i's relay listening: routes dialled to it are
// refused, as by a host where nothing listens. Called with c.mu held.
func (c *Cluster) closeRelay(i int) {
	if nd := c.nodes[i]; nd.relay != nil {
		_ = nd.relay.Close()
		nd.relay = nil
	}
}

func (l *routeLink) close() {
	_ = l.down.Close()
	_ = l.up.Close()
}

// clusterLogger sends a server's notices, warnings and errors to the
// test log, named; lines after the test ended are dropped.
type clusterLogger struct {
	t    testing.TB
	name string
	done func() bool
}

func (l *clusterLogger) logf(level, format string, v ...any) {
	if l.done() {
		return
	}
	l.t.Logf("nats-server %s %s: %s", l.name, level, fmt.Sprintf(format, v...))
}

func (l *clusterLogger) Noticef(format string, v ...any) { l.logf("INF", format, v...) }
func (l *clusterLogger) Warnf(format string, v ...any)   { l.logf("WRN", format, v...) }
func (l *clusterLogger) Fatalf(format string, v ...any)  { l.logf("FTL", format, v...) }
func (l *clusterLogger) Errorf(format string, v ...any)  { l.logf("ERR", format, v...) }
func (l *clusterLogger) Debugf(format string, v ...any)  {}
func (l *clusterLogger) Tracef(format string, v ...any)  {}
