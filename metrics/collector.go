package metrics

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"sniper/auction"
)

// StateCounter counts snipers by state (the projection provides it).
type StateCounter interface {
	CountByState() map[auction.State]int
}

// ConsumerLister lists the stream's consumers (the log provides it).
type ConsumerLister interface {
	ConsumerInfos(ctx context.Context) ([]*jetstream.ConsumerInfo, error)
}

// stateCollector reads gauges at scrape time from the projection and the
// log, so nothing has to keep them up to date.
type stateCollector struct {
	states    StateCounter
	consumers ConsumerLister

	snipers     *prometheus.Desc
	pending     *prometheus.Desc
	ackPending  *prometheus.Desc
	redelivered *prometheus.Desc
}

// NewStateCollector exposes snipers by state and the consumers' backlog.
func NewStateCollector(states StateCounter, consumers ConsumerLister) prometheus.Collector {
	return &stateCollector{
		states:    states,
		consumers: consumers,
		snipers:   prometheus.NewDesc("sniper_snipers", "Snipers by state.", []string{"state"}, nil),
		pending: prometheus.NewDesc("sniper_consumer_pending_messages", "Messages not yet delivered, by consumer group (sniper inputs, outbound, supervisor).",
			[]string{"consumer"}, nil),
		ackPending: prometheus.NewDesc("sniper_consumer_ack_pending_messages", "Messages delivered and not yet acknowledged, by consumer group.",
			[]string{"consumer"}, nil),
		redelivered: prometheus.NewDesc("sniper_consumer_redelivered_messages", "Messages currently being redelivered, by consumer group.",
			[]string{"consumer"}, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.snipers
	ch <- c.pending
	ch <- c.ackPending
	ch <- c.redelivered
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.states.CountByState()
	for _, st := range []auction.State{auction.Joining, auction.Bidding, auction.Winning, auction.Losing, auction.Won, auction.Lost, auction.Failed, auction.Stopped} {
		ch <- prometheus.MustNewConstMetric(c.snipers, prometheus.GaugeValue, float64(counts[st]), string(st))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	infos, err := c.consumers.ConsumerInfos(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.pending, err)
		return
	}
	type totals struct{ pending, ack, redelivered float64 }
	groups := map[string]*totals{}
	for _, info := range infos {
		group := info.Name
		if strings.HasPrefix(group, "sniper-") {
			group = "sniper-inputs" // one consumer per auction: sum them
		}
		if info.Config.Durable == "" {
			continue // ordered readers (projection, history)
		}
		t := groups[group]
		if t == nil {
			t = &totals{}
			groups[group] = t
		}
		t.pending += float64(info.NumPending)
		t.ack += float64(info.NumAckPending)
		t.redelivered += float64(info.NumRedelivered)
	}
	for group, t := range groups {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, t.pending, group)
		ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, t.ack, group)
		ch <- prometheus.MustNewConstMetric(c.redelivered, prometheus.GaugeValue, t.redelivered, group)
	}
}
