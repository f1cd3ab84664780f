package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// stream serves GET /api/stream: Server-Sent Events with every sniper's
// snapshot as it changes ("snapshot") and the sniper's readiness
// ("status", the body of GET /api/status) when it changes. A new
// connection first gets the current state of every sniper and the current
// status, so a client that reconnects is whole again.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	sub := s.View.Subscribe()
	defer sub.Close()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// Tell EventSource to come back quickly after a drop.
	fmt.Fprint(w, "retry: 1000\n\n")
	for _, snap := range s.View.List() {
		writeEvent(w, "snapshot", viewOf(snap))
	}
	// The status after the snapshots, and again whenever it changes: the
	// page shows whether the auction house and the log are reachable.
	var statusChanged <-chan struct{}
	if s.StatusChanged != nil {
		statusChanged = s.StatusChanged()
	}
	lastStatus := writeEvent(w, "status", s.statusView(r.Context()))
	flusher.Flush()

	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
		case <-statusChanged:
			statusChanged = s.StatusChanged()
			data, _ := json.Marshal(s.statusView(r.Context()))
			if string(data) == lastStatus {
				continue
			}
			lastStatus = string(data)
			fmt.Fprintf(w, "event: status\ndata: %s\n\n", data)
		case snap, ok := <-sub.C():
			if !ok {
				// Fell behind or shutting down: end the stream; the
				// client reconnects and gets the full state.
				return
			}
			writeEvent(w, "snapshot", viewOf(snap))
		}
		flusher.Flush()
	}
}

// writeEvent writes one SSE event and returns its data.
func writeEvent(w http.ResponseWriter, event string, v any) string {
	data, _ := json.Marshal(v)
	fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
	return string(data)
}
