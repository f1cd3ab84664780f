package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"sniper/api"
)

// Check is one readiness condition and why it fails.
type Check = api.Check

// Readiness checks what the sniper needs to do its job: the NATS
// connection, the SNIPER stream, the log taking the actors' writes, the
// lease that says which instance is active and, on the active instance,
// the auction house. A standby whose checks pass is ready: it answers
// reads and takes commands (they are log writes).
func (a *App) Readiness(ctx context.Context) api.Status {
	var checks []Check
	natsOK := a.nc.Status() == nats.CONNECTED
	c := Check{Name: "nats", OK: natsOK}
	if !natsOK {
		c.Error = "not connected to NATS (" + a.nc.Status().String() + ")"
		if a.cfg.NATSURL != "" {
			c.Error = "not connected to NATS at " + a.cfg.NATSURL + " (" + a.nc.Status().String() + ")"
		}
	}
	checks = append(checks, c)

	c = Check{Name: "stream", OK: true}
	if natsOK {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := a.log.LastSeq(ctx)
		cancel()
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			c.OK, c.Error = false, "stream SNIPER does not answer within 2s: no leader (are most of its servers down?)"
		case err != nil:
			c.OK, c.Error = false, "stream SNIPER unreachable: "+err.Error()
		}
	} else {
		c.OK, c.Error = false, "stream SNIPER unreachable: no NATS connection"
	}
	checks = append(checks, c)

	c = Check{Name: "log_writes", OK: true}
	if since, err := a.writes.failing(); err != nil {
		c.OK = false
		c.Error = fmt.Sprintf("the log refuses writes since %s: %v", since.UTC().Format(time.RFC3339), err)
	}
	checks = append(checks, c)

	st := api.Status{Role: api.RoleStandby, Instance: a.cfg.Instance}
	if a.election != nil {
		es := a.election.Status()
		st.Active = es.Holder
		c = Check{Name: "lease", OK: es.Err == nil && es.Holder != ""}
		switch {
		case es.Err != nil && errors.Is(es.Err, context.DeadlineExceeded):
			c.Error = "no instance can be made active: the lease does not answer (no quorum?): " + es.Err.Error()
		case es.Err != nil:
			c.Error = "no instance can be made active: " + es.Err.Error()
		case es.Holder == "":
			c.Error = "no instance is active (the last one's lease ran out; one takes over within a second)"
		}
		checks = append(checks, c)
	}
	if p := a.parts.Load(); p != nil {
		st.Role = api.RoleActive
		if p.chat != nil {
			c = Check{Name: "xmpp", OK: a.xmppUp.Load()}
			if !c.OK {
				c.Error = "not connected to the auction house at " + a.cfg.XMPP.Addr
			}
			checks = append(checks, c)
		}
	}
	st.Ready = true
	for _, c := range checks {
		st.Ready = st.Ready && c.OK
	}
	st.Checks = checks
	return st
}

func (a *App) healthz(w http.ResponseWriter, _ *http.Request) {
	api.WriteJSON(w, http.StatusOK, map[string]string{"status": "alive"})
}

func (a *App) readyz(w http.ResponseWriter, r *http.Request) {
	st := a.Readiness(r.Context())
	status, word := http.StatusOK, "ready"
	if !st.Ready {
		status, word = http.StatusServiceUnavailable, "not ready"
	}
	api.WriteJSON(w, status, map[string]any{"status": word, "role": st.Role, "instance": st.Instance, "active": st.Active, "checks": st.Checks})
}

// writeHealth remembers whether the log took the actors' last write
// (actors.WriteObserver). The last outcome wins: one success after a run
// of failures means the log takes writes again.
type writeHealth struct {
	logger *slog.Logger
	poke   func()

	mu    sync.Mutex
	err   error
	since time.Time
}

func (w *writeHealth) WriteFailed(err error) {
	w.mu.Lock()
	first := w.err == nil
	w.err = err
	if first {
		w.since = time.Now()
	}
	w.mu.Unlock()
	if first {
		w.logger.Error("the event log refuses writes: inputs are held, undecided, until it takes them again", "error", err)
		w.poke()
	}
}

func (w *writeHealth) WriteSucceeded() {
	w.mu.Lock()
	was, since := w.err, w.since
	w.err = nil
	w.mu.Unlock()
	if was != nil {
		w.logger.Info("the event log takes writes again", "refused_for", time.Since(since).Round(time.Millisecond))
		w.poke()
	}
}

// failing returns since when writes fail and the last error (nil: they
// do not).
func (w *writeHealth) failing() (time.Time, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.since, w.err
}

// statusWatch recomputes readiness whenever a dependency reports a change
// (NATS connection, XMPP session, log writes) and every second (what no
// callback reports: the stream vanishing), and tells the live stream's
// clients when the outcome changed.
type statusWatch struct {
	mu      sync.Mutex
	key     string
	checks  string
	changed chan struct{} // closed and replaced on every change
	poke    chan struct{}
}

func newStatusWatch() *statusWatch {
	return &statusWatch{changed: make(chan struct{}), poke: make(chan struct{}, 1)}
}

// Poke asks for a recheck now; it never blocks.
func (s *statusWatch) Poke() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// Changed returns a channel closed at the next change of the status.
func (s *statusWatch) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// set records st and reports whether it changed, and whether its checks
// did (the rest being the role).
func (s *statusWatch) set(st api.Status) (changed, checksChanged bool) {
	all, _ := json.Marshal(st)
	checks, _ := json.Marshal(st.Checks)
	s.mu.Lock()
	defer s.mu.Unlock()
	if string(all) == s.key {
		return false, false
	}
	checksChanged = string(checks) != s.checks
	s.key, s.checks = string(all), string(checks)
	close(s.changed)
	s.changed = make(chan struct{})
	return true, checksChanged
}

// watchStatus keeps the status the probes and the live stream show, and
// logs its changes, until ctx ends.
func (a *App) watchStatus(ctx context.Context) error {
	natsCh := a.nc.StatusChanged()
	defer a.nc.RemoveStatusListener(natsCh)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	first := true
	for {
		st := a.Readiness(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if _, checksChanged := a.status.set(st); checksChanged && !first {
			if st.Ready {
				a.logger.Info("ready again: every check passes")
			} else {
				var failing []any
				for _, c := range st.Checks {
					if !c.OK {
						failing = append(failing, c.Name, c.Error)
					}
				}
				a.logger.Warn("not ready", failing...)
			}
		}
		first = false
		select {
		case <-ctx.Done():
			return nil
		case <-natsCh:
		case <-a.status.poke:
		case <-tick.C:
		}
	}
}
