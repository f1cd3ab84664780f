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

// BacklogReporter says how many deliveries each follower of the log was
// handed and has not finished (the app provides it).
type BacklogReporter interface {
	Backlogs() map[string]int
}

// stateCollector reads gauges at scrape time from the projection, the
// followers and the log, so nothing has to keep them up to date.
type stateCollector struct {
	states    StateCounter
	backlogs  BacklogReporter
	consumers ConsumerLister

	snipers   *prometheus.Desc
	unread    *prometheus.Desc
	undone    *prometheus.Desc
	consumerN *prometheus.Desc
}

// NewStateCollector exposes snipers by state, the followers' backlogs and
// the stream's consumer count.
func NewStateCollector(states StateCounter, backlogs BacklogReporter, consumers ConsumerLister) prometheus.Collector {
	return &stateCollector{
		states:    states,
		backlogs:  backlogs,
		consumers: consumers,
		snipers:   prometheus.NewDesc("sniper_snipers", "Snipers by state.", []string{"state"}, nil),
		unread: prometheus.NewDesc("sniper_follower_unread_messages", "Messages in the log a follower (inputs, outbound, notify, projection) has not read yet.",
			[]string{"follower"}, nil),
		undone: prometheus.NewDesc("sniper_follower_undone_messages", "Messages a follower handed out and has not finished: inputs not decided, requests not sent, notifications not accepted.",
			[]string{"follower"}, nil),
		consumerN: prometheus.NewDesc("sniper_stream_consumers", "JetStream consumers on the SNIPER stream: constant, whatever the number of auctions.", nil, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.snipers
	ch <- c.unread
	ch <- c.undone
	ch <- c.consumerN
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.states.CountByState()
	for _, st := range auction.States() {
		ch <- prometheus.MustNewConstMetric(c.snipers, prometheus.GaugeValue, float64(counts[st]), string(st))
	}
	for name, n := range c.backlogs.Backlogs() {
		ch <- prometheus.MustNewConstMetric(c.undone, prometheus.GaugeValue, float64(n), name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	infos, err := c.consumers.ConsumerInfos(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.unread, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.consumerN, prometheus.GaugeValue, float64(len(infos)))
	unread := map[string]float64{}
	for _, info := range infos {
		// A follower's reader is named <follower>_<n> (nats.go's ordered
		// consumer); others (a history read, the nats CLI) are not ours.
		name, _, ok := strings.Cut(info.Name, "_")
		if !ok {
			continue
		}
		unread[name] += float64(info.NumPending)
	}
	for name, n := range unread {
		ch <- prometheus.MustNewConstMetric(c.unread, prometheus.GaugeValue, n, name)
	}
}
