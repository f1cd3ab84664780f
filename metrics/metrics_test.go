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

type backlogs map[string]int

func (b backlogs) Backlogs() map[string]int { return b }

func TestStateCollectorReadsAtScrapeTime(t *testing.T) {
	m := metrics.New()
	m.Register(metrics.NewStateCollector(states{auction.Bidding: 2, auction.Won: 1}, backlogs{"inputs": 4, "outbound": 1}, consumers{
		{Name: "inputs_1", NumPending: 3}, {Name: "outbound_2", NumPending: 5}, {Name: "projection_1"},
		{Name: "CLIREADER", NumPending: 99}, // not a follower's: counted, not as a follower
	}))
	want(t, scrape(t, m),
		`sniper_snipers{state="Bidding"} 2`,
		`sniper_snipers{state="Won"} 1`,
		`sniper_snipers{state="Joining"} 0`,
		`sniper_follower_unread_messages{follower="inputs"} 3`,
		`sniper_follower_unread_messages{follower="outbound"} 5`,
		`sniper_follower_unread_messages{follower="projection"} 0`,
		`sniper_follower_undone_messages{follower="inputs"} 4`,
		`sniper_follower_undone_messages{follower="outbound"} 1`,
		"sniper_stream_consumers 4",
	)
}
