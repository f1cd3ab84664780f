// Package metrics exposes the sniper's Prometheus metrics. It implements
// the observer interfaces of the actors, so the actors know nothing of
// Prometheus.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"sniper/auction"
)

// Metrics holds the sniper's collectors in its own registry (not the
// global one, so tests and several instances in one process don't clash).
type Metrics struct {
	Registry *prometheus.Registry

	inputsDecided   *prometheus.CounterVec
	decisions       *prometheus.CounterVec
	decisionSeconds prometheus.Histogram
	commitSeconds   prometheus.Histogram
	bidsSent        prometheus.Counter
	dropped         prometheus.Counter
	malformed       prometheus.Counter
	xmppConnected   prometheus.Gauge
	instanceActive  prometheus.Gauge
	xmppReconnects  prometheus.Counter
	actorRestarts   prometheus.Counter
	notifySent      prometheus.Counter
	notifyFailures  prometheus.Counter
}

// New registers every collector, plus the Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		inputsDecided: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sniper_inputs_decided_total", Help: "Inputs decided by the snipers, by input type.",
		}, []string{"type"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sniper_decisions_total", Help: "Decisions by resulting sniper state.",
		}, []string{"state"}),
		decisionSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sniper_decision_duration_seconds", Help: "Time to decide an input and commit the decision to the log.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sniper_commit_duration_seconds", Help: "Time to write one decision to the log (one fenced publish).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		bidsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sniper_bids_sent_total", Help: "BID messages written to the auction house.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sniper_xmpp_dropped_messages_total", Help: "Chat messages dropped because the sender is not an auction.",
		}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sniper_malformed_messages_total", Help: "Auction messages that could not be decoded.",
		}),
		xmppConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sniper_xmpp_connected", Help: "1 while the XMPP session to the auction house is up.",
		}),
		instanceActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sniper_instance_active", Help: "1 while this instance holds the lease and decides, 0 while it is standby.",
		}),
		xmppReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sniper_xmpp_reconnects_total", Help: "XMPP sessions re-established after a disconnect.",
		}),
		actorRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sniper_actor_restarts_total", Help: "Sniper actors restarted by the supervisor after a failure.",
		}),
		notifySent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sniper_notifications_sent_total", Help: "Notifications of a sniper's state their receiver accepted (a 2xx).",
		}),
		notifyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sniper_notification_failures_total", Help: "Attempts to deliver a notification that failed (each is retried).",
		}),
	}
	m.Registry.MustRegister(m.inputsDecided, m.decisions, m.decisionSeconds, m.commitSeconds, m.bidsSent, m.dropped,
		m.malformed, m.xmppConnected, m.instanceActive, m.xmppReconnects, m.actorRestarts, m.notifySent, m.notifyFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// Decided records one decision.
func (m *Metrics) Decided(input string, _, after auction.State, took time.Duration) {
	m.inputsDecided.WithLabelValues(input).Inc()
	m.decisions.WithLabelValues(string(after)).Inc()
	m.decisionSeconds.Observe(took.Seconds())
}

// Committed records the time to write one decision to the log.
func (m *Metrics) Committed(took time.Duration) { m.commitSeconds.Observe(took.Seconds()) }

// Restarted records a sniper actor restart.
func (m *Metrics) Restarted(string) { m.actorRestarts.Inc() }

// BidSent records a BID on the wire.
func (m *Metrics) BidSent(string) { m.bidsSent.Inc() }

// Dropped records a message from a sender that is not an auction.
func (m *Metrics) Dropped(string) { m.dropped.Inc() }

// Malformed records an undecodable auction message.
func (m *Metrics) Malformed(string) { m.malformed.Inc() }

// NotificationSent records a notification its receiver accepted.
func (m *Metrics) NotificationSent() { m.notifySent.Inc() }

// NotificationFailed records a failed attempt to deliver a notification.
func (m *Metrics) NotificationFailed() { m.notifyFailures.Inc() }

// InstanceActive records this instance becoming active or standby.
func (m *Metrics) InstanceActive(active bool) {
	if active {
		m.instanceActive.Set(1)
		return
	}
	m.instanceActive.Set(0)
}

// XMPPState records the XMPP session going up or down.
func (m *Metrics) XMPPState(connected, reconnect bool) {
	if connected {
		m.xmppConnected.Set(1)
		if reconnect {
			m.xmppReconnects.Inc()
		}
		return
	}
	m.xmppConnected.Set(0)
}

// Register adds further collectors (e.g. per-state gauges computed from
// the projection at scrape time).
func (m *Metrics) Register(cs ...prometheus.Collector) { m.Registry.MustRegister(cs...) }
