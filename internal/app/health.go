package app

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
)

// Check is one readiness condition and why it fails.
type Check struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Readiness checks what the sniper needs to do its job: the NATS
// connection, the SNIPER stream, and the auction house.
func (a *App) Readiness(ctx context.Context) (bool, []Check) {
	var checks []Check
	natsOK := a.nc.Status() == nats.CONNECTED
	c := Check{Name: "nats", OK: natsOK}
	if !natsOK {
		c.Error = "not connected to NATS (" + a.nc.Status().String() + ")"
	}
	checks = append(checks, c)

	c = Check{Name: "stream", OK: true}
	if natsOK {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := a.log.Stream().Info(ctx)
		cancel()
		if err != nil {
			c.OK, c.Error = false, "stream SNIPER unreachable: "+err.Error()
		}
	} else {
		c.OK, c.Error = false, "stream SNIPER unreachable: no NATS connection"
	}
	checks = append(checks, c)

	if a.chat != nil {
		c = Check{Name: "xmpp", OK: a.xmppUp.Load()}
		if !c.OK {
			c.Error = "not connected to the auction house at " + a.cfg.XMPP.Addr
		}
		checks = append(checks, c)
	}
	ready := true
	for _, c := range checks {
		ready = ready && c.OK
	}
	return ready, checks
}

func (a *App) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "alive"})
}

func (a *App) readyz(w http.ResponseWriter, r *http.Request) {
	ready, checks := a.Readiness(r.Context())
	status, word := http.StatusOK, "ready"
	if !ready {
		status, word = http.StatusServiceUnavailable, "not ready"
	}
	writeJSON(w, status, map[string]any{"status": word, "checks": checks})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
