package metrics_test

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sniper/auction"
	"sniper/metrics"
)

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	return string(body)
}

func want(t *testing.T, body string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(body, l+"\n") {
			t.Errorf("metrics lack %q", l)
		}
	}
}

func TestEachMetricMovesWithItsEvent(t *testing.T) {
	m := metrics.New()
	want(t, scrape(t, m), "sniper_bids_sent_total 0", "sniper_xmpp_connected 0", "sniper_xmpp_dropped_messages_total 0")

	m.Decided("price", auction.Joining, auction.Bidding, 2*time.Millisecond)
	m.Decided("close", auction.Bidding, auction.Lost, time.Millisecond)
	m.Committed(3 * time.Millisecond)
	m.Committed(time.Millisecond)
	m.BidSent("item-1")
	m.Dropped("mallory@localhost")
	m.Malformed("item-1")
	m.Restarted("item-1")
	m.XMPPState(true, false) // first connect: not a reconnect
	m.XMPPState(false, false)
	m.XMPPState(true, true)
	want(t, scrape(t, m),
		`sniper_inputs_decided_total{type="price"} 1`,
		`sniper_inputs_decided_total{type="close"} 1`,
		`sniper_decisions_total{state="Bidding"} 1`,
		`sniper_decisions_total{state="Lost"} 1`,
		"sniper_decision_duration_seconds_count 2",
		"sniper_commit_duration_seconds_count 2",
		"sniper_bids_sent_total 1",
		"sniper_xmpp_dropped_messages_total 1",
		"sniper_malformed_messages_total 1",
		"sniper_actor_restarts_total 1",
		"sniper_xmpp_connected 1",
		"sniper_xmpp_reconnects_total 1",
	)
}

type states map[auction.State]int

func (s states) CountByState() map[auction.State]int { return s }

type consumers []*jetstream.ConsumerInfo

func (c consumers) ConsumerInfos(context.Context) ([]*jetstream.ConsumerInfo, error) { return c, nil }

func TestStateCollectorReadsAtScrapeTime(t *testing.T) {
	m := metrics.New()
	durable := func(name string, pending, ack, redelivered int) *jetstream.ConsumerInfo {
		return &jetstream.ConsumerInfo{Name: name, Config: jetstream.ConsumerConfig{Durable: name},
			NumPending: uint64(pending), NumAckPending: ack, NumRedelivered: redelivered}
	}
	m.Register(metrics.NewStateCollector(states{auction.Bidding: 2, auction.Won: 1}, consumers{
		durable("sniper-a", 1, 1, 0), durable("sniper-b", 2, 0, 1), durable("xmpp-out", 5, 1, 1),
		{Name: "ordered-reader", NumPending: 99}, // not durable: not counted
	}))
	want(t, scrape(t, m),
		`sniper_snipers{state="Bidding"} 2`,
		`sniper_snipers{state="Won"} 1`,
		`sniper_snipers{state="Joining"} 0`,
		`sniper_consumer_pending_messages{consumer="sniper-inputs"} 3`,
		`sniper_consumer_ack_pending_messages{consumer="sniper-inputs"} 1`,
		`sniper_consumer_redelivered_messages{consumer="sniper-inputs"} 1`,
		`sniper_consumer_pending_messages{consumer="xmpp-out"} 5`,
	)
}
