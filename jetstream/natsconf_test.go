package jetstream_test

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"sniper/jetstream"
	"sniper/testkit"
)

// nats.conf at the repository root is a working node of a three-node
// cluster: three servers started from it (ports, names and stores moved
// apart, as the README says) form the cluster; the sniper's user opens an
// R3 SNIPER stream on it, and the reader cannot write.
func TestTheShippedNATSConfigRunsACluster(t *testing.T) {
	const nodes = 3
	clientPorts, routePorts := make([]int, nodes), make([]int, nodes)
	for i := range nodes {
		clientPorts[i], routePorts[i] = freePort(t), freePort(t)
	}
	var urls []string
	for i := range nodes {
		opts, err := server.ProcessConfigFile(filepath.Join("..", "nats.conf"))
		if err != nil {
			t.Fatalf("nats.conf: %v", err)
		}
		if opts.JetStreamMaxStore == 0 || !opts.SyncAlways || len(opts.Users) != 2 || opts.Cluster.Username == "" {
			t.Fatalf("nats.conf lost a setting it documents: max store %d, sync always %v, %d users, route user %q",
				opts.JetStreamMaxStore, opts.SyncAlways, len(opts.Users), opts.Cluster.Username)
		}
		opts.ServerName = fmt.Sprintf("n%d", i+1)
		opts.Port, opts.Cluster.Port = clientPorts[i], routePorts[i]
		opts.StoreDir = t.TempDir()
		opts.NoSigs = true
		opts.Routes = nil
		for _, p := range routePorts {
			opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats", User: url.UserPassword(opts.Cluster.Username, opts.Cluster.Password), Host: fmt.Sprintf("127.0.0.1:%d", p)})
		}
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		t.Cleanup(ns.Shutdown)
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatalf("node %d not ready", i+1)
		}
		urls = append(urls, ns.ClientURL())
	}
	ctx := testContextFor(t, 90*time.Second)
	nc, err := jetstream.Connect(ctx, strings.Join(urls, ","), "conf-test", jetstream.ClientAuth{User: "sniper", Password: "change-me-sniper"}, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l, err := jetstream.Open(ctx, nc, jetstream.StreamConfig{Replicas: 3, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatalf("open an R3 stream on the cluster of nats.conf: %v", err)
	}
	if _, err := l.NewElection(ctx, jetstream.ElectionConfig{Instance: "x", Replicas: 3}); err != nil {
		t.Fatalf("the lease bucket on the cluster of nats.conf: %v", err)
	}
	if _, err := nats.Connect(urls[0], nats.MaxReconnects(0)); err == nil {
		t.Error("a client without credentials connected to a node of nats.conf")
	}
	reader, err := nats.Connect(urls[1], nats.UserInfo("reader", "change-me-reader"), nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if _, err := reader.Request("$JS.API.STREAM.INFO."+jetstream.StreamName, nil, 5*time.Second); err != nil {
		t.Errorf("the reader cannot read the stream's info: %v", err)
	}
	if _, err := reader.Request("$JS.API.STREAM.DELETE."+jetstream.StreamName, nil, time.Second); err == nil {
		t.Error("the reader was answered on the stream delete API")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
