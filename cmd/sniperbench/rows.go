package main

import (
	"fmt"
	"os/exec"
	"strings"
)

// declareRows fixes the table's rows and their order: the echo bot once
// (it does not touch the log), then per sync policy the log baselines, the
// sniper through Prosody, log only, scale.
func (e *bench) declareRows() {
	p := e.p
	res := e.res
	load := fmt.Sprintf("%d auctions x %d prices", p.loadAuctions, p.loadPrices)
	res.declare(row{key: "echo.lat", name: "XMPP echo bot: PRICE->echo round trip, 1 auction, closed loop", unit: "round trips/s", cmp: "baseline"})
	res.declare(row{key: "echo.load", name: "XMPP echo bot: " + load + ", closed loop", unit: "round trips/s", cmp: "baseline",
		note: func(r *row, _ *results) string {
			if v, ok := r.med("prosody_cpu"); ok {
				return fmt.Sprintf("Prosody CPU %.3f ms per round trip", v*1000)
			}
			return ""
		}})
	for _, pol := range policies {
		syncKey, asyncKey := "base.sync."+pol, "base.async."+pol
		res.declare(row{key: syncKey, name: fmt.Sprintf("`nats bench js pub sync`, %d B", payloadSize), fsync: pol, unit: "msgs/s", cmp: "baseline",
			extra: "p50/p99/max: the same number of sync publishes timed with nats.go, same server, TCP"})
		res.declare(row{key: asyncKey, name: fmt.Sprintf("`nats bench js pub async`, %d B", payloadSize), fsync: pol, unit: "msgs/s", cmp: "baseline"})

		res.declare(row{key: "sniper.lat." + pol, name: "sniper: PRICE->BID through Prosody, 1 auction, closed loop", fsync: pol, unit: "BIDs/s",
			base: "echo.lat", cmp: "lat", baseName: "echo bot"})
		res.declare(row{key: "sniper.load." + pol, name: "sniper: " + load + " through Prosody, closed loop", fsync: pol, unit: "BIDs/s",
			base: "echo.load", cmp: "rate", baseName: "echo bot's round trips/s",
			note: func(r *row, res *results) string {
				var parts []string
				if lat := res.ratio(&row{samples: r.samples, base: "echo.load", cmp: "lat", baseName: "echo bot"}); lat != "" {
					parts = append(parts, lat)
				}
				if w, ok := r.med("writes_per_bid"); ok {
					s := fmt.Sprintf("%.1f log writes per BID", w)
					if b := res.get(syncKey); b != nil {
						if bv, ok := b.med("v"); ok && bv > 0 {
							s += fmt.Sprintf(", log writes/s = %sx sync publish", ratioNum(w*r.mustMed("v")/bv))
						}
					}
					parts = append(parts, s)
				}
				if v, ok := r.med("prosody_cpu"); ok {
					parts = append(parts, fmt.Sprintf("Prosody CPU %.3f ms per BID", v*1000))
				}
				return strings.Join(parts, "; ")
			}})
		res.declare(row{key: "sniper.cpu." + pol, name: "sniper: CPU per BID (utime+stime over the " + load + " window)", fsync: pol, unit: "ms",
			extra: "the whole process: decisions, embedded nats-server, XMPP, HTTP"})
		res.declare(row{key: "sniper.profile." + pol, name: "sniper: CPU profile of the " + load + " run (first " + p.profileFor.String() + ")", fsync: pol})

		for _, lv := range p.logLevels {
			auctions, prices := "auctions", "prices"
			if lv.auctions == 1 {
				auctions = "auction"
			}
			if lv.prices == 1 {
				prices = "price"
			}
			res.declare(row{key: lv.key(pol), fsync: pol, unit: "decisions/s", base: asyncKey, cmp: "rate", baseName: "async publish",
				name: fmt.Sprintf("log only: inputs published into the stream, %s %s x %s %s", thousands(float64(lv.auctions)), auctions, thousands(float64(lv.prices)), prices),
				note: func(r *row, _ *results) string {
					w, ok1 := r.med("writes_per_input")
					ws, ok2 := r.med("writes_per_s")
					if !ok1 || !ok2 {
						return ""
					}
					return fmt.Sprintf("%.1f log writes per input (the input included): %s log writes/s", w, thousands(ws))
				}})
		}

		n := thousands(float64(p.scaleMax))
		res.declare(row{key: "scale.post." + pol, fsync: pol, unit: "POSTs/s", name: "scale: POSTs/s creating " + n + " snipers, 4 concurrent clients"})
		for _, size := range p.restartSizes {
			res.declare(row{key: fmt.Sprintf("scale.restart.%d.%s", size, pol), fsync: pol, unit: "s",
				name:  fmt.Sprintf("scale: process start -> all %s listed after a restart (10 events each)", thousands(float64(size))),
				extra: "log filled at --fsync " + fillPolicy + ", restarted with this --fsync"})
		}
		res.declare(row{key: "scale.rss." + pol, fsync: pol, unit: "KiB", name: "scale: RSS per idle auction at " + n + " (VmRSS growth / auctions)",
			note: func(r *row, _ *results) string {
				if h, ok := r.med("heap"); ok {
					return fmt.Sprintf("heap in use %.1f KiB per auction (go_memstats_heap_inuse_bytes after a GC), snipers passivated (--passivate-after %s); both include the embedded nats-server", h, scalePassivateAfter)
				}
				return ""
			}})
		res.declare(row{key: "scale.idlecpu." + pol, fsync: pol, unit: "%", name: fmt.Sprintf("scale: idle CPU at %s auctions, over %s", n, p.idleWindow)})
		res.declare(row{key: "scale.consumers." + pol, fsync: pol, unit: "", name: "scale: JetStream consumers on SNIPER at " + n + " auctions"})
	}
}

func gitOut(root string, args ...string) (string, error) {
	out, err := exec.Command("git", append([]string{"-C", root}, args...)...).Output()
	return string(out), err
}
