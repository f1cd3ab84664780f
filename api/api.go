// Package api is the sniper's HTTP JSON API: it turns requests into
// commands on the log and answers from the projection and the log.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"sniper/auction"
	"sniper/internal/clip"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/projection"
)

// MaxBodyBytes caps request bodies; larger ones get 413.
const MaxBodyBytes = 64 << 10

// Log is what the API asks of the event log: commands are appends,
// an auction's history is a read. *jetstream.Log is one.
type Log interface {
	// Available returns nil when the log can be reached right now, and an
	// error wrapping jetstream.ErrUnavailable otherwise: commands check it
	// first and answer 503 at once instead of waiting out their timeout.
	Available() error
	// Append writes payload as JSON to subject and returns its sequence.
	// With jetstream.FirstOfSubject it fails with jetstream.ErrExists when
	// the subject holds a message already; a full log fails it with
	// jetstream.ErrFull.
	Append(ctx context.Context, subject string, payload any, opts ...jetstream.AppendOption) (uint64, error)
	// History returns every message of item's auction in log order.
	History(ctx context.Context, item string) ([]jetstream.Record, error)
}

// Projection is what the API reads the snipers from: the last decision of
// every auction, as of the log some moments ago. *projection.View is one.
type Projection interface {
	// Get returns item's last decision, if it has one.
	Get(item string) (messages.DecisionEvent, bool)
	// List returns every auction's last decision, ordered by item.
	List() []messages.DecisionEvent
	// Wait blocks until item's last decision satisfies ok, or ctx ends.
	Wait(ctx context.Context, item string, ok func(messages.DecisionEvent) bool) (messages.DecisionEvent, error)
	// Subscribe delivers every new decision until the subscription is
	// closed, or closes its channel when the subscriber falls behind.
	Subscribe() *projection.Subscription
}

var (
	_ Log        = (*jetstream.Log)(nil)
	_ Projection = (*projection.View)(nil)
)

// Server serves the JSON API.
type Server struct {
	Log    Log
	View   Projection
	Logger *slog.Logger
	// CommandTimeout bounds how long a command waits for the log and for
	// its effect to show; past it the client gets 503, never a hang.
	CommandTimeout time.Duration
	// Status says whether the sniper can do its job right now and why not
	// (a list of named checks), and its role, for GET /api/status and the
	// live stream's "status" events. nil: always ready, no checks.
	Status func(ctx context.Context) Status
	// StatusChanged returns a channel closed at the next change of Status,
	// so the live stream can push it. nil: status is sent at connect only.
	StatusChanged func() <-chan struct{}
	// OpenItems lists the auctions open at the built-in auction house, to
	// offer them on the page; nil with a real auction house.
	OpenItems func() []string
}

// Check is one readiness condition and why it fails.
type Check struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Roles of an instance among those sharing the log.
const (
	RoleActive  = "active"  // holds the lease: decides and talks to the auction house
	RoleStandby = "standby" // keeps the view, answers reads, takes commands, waits to take over
)

// Status is whether the sniper can do its job and its role.
type Status struct {
	Ready bool `json:"ready"`
	// Role is RoleActive or RoleStandby.
	Role string `json:"role,omitempty"`
	// Instance names this instance; Active, the active one as last seen
	// ("" when none is).
	Instance string  `json:"instance,omitempty"`
	Active   string  `json:"active,omitempty"`
	Checks   []Check `json:"checks"`
}

// StatusView is what GET /api/status and the "status" event carry.
type StatusView struct {
	Status
	OpenItems []string `json:"open_items,omitempty"`
}

func (s *Server) statusView(ctx context.Context) StatusView {
	v := StatusView{Status: Status{Ready: true, Checks: []Check{}}}
	if s.Status != nil {
		v.Status = s.Status(ctx)
	}
	if s.OpenItems != nil {
		v.OpenItems = s.OpenItems()
	}
	return v
}

// status serves GET /api/status: always 200, the answer is in the body
// (readiness probes use /readyz, which answers 503 when not ready).
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET")
		return
	}
	WriteJSON(w, http.StatusOK, s.statusView(r.Context()))
}

// available answers 503 at once, and returns false, when the log cannot be
// reached: a publish while the client reconnects would only be buffered
// and the request would hang until its timeout.
func (s *Server) available(w http.ResponseWriter, what string) bool {
	if err := s.Log.Available(); err != nil {
		s.unavailable(w, what, err)
		return false
	}
	return true
}

// Handler routes the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/snipers", s.snipers)
	mux.HandleFunc("/api/snipers/{item}", s.sniper)
	mux.HandleFunc("/api/snipers/{item}/events", s.events)
	mux.HandleFunc("/api/groups", s.groups)
	mux.HandleFunc("/api/groups/{group}", s.group)
	mux.HandleFunc("/api/stream", s.stream)
	mux.HandleFunc("/api/status", s.status)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})
	return recoverer(s.Logger, mux)
}

// View is a sniper as the API shows it.
type View struct {
	Item      string        `json:"item"`
	State     auction.State `json:"state"`
	LastPrice int64         `json:"last_price"`
	LastBid   int64         `json:"last_bid"`
	StopPrice int64         `json:"stop_price"`
	Reason    string        `json:"reason,omitempty"`
	InputSeq  uint64        `json:"input_seq"`
	// A last-second sniper's plan: its lead, the close the auction house
	// announced and when it will bid (Unix ms; 0: not known, not set).
	Strategy auction.Strategy `json:"strategy,omitempty"`
	LeadMS   int64            `json:"lead_ms,omitempty"`
	CloseAt  int64            `json:"close_at,omitempty"`
	WakeAt   int64            `json:"wake_at,omitempty"`
	// Group is the snipe group the sniper belongs to; Slot says whether
	// it holds one of the group's slots (only a slot holder bids).
	Group    string `json:"group,omitempty"`
	GroupWin int    `json:"group_win,omitempty"`
	Slot     bool   `json:"slot,omitempty"`
}

func viewOf(s messages.DecisionEvent) View {
	return View{Item: s.Item, State: s.State, LastPrice: s.LastPrice, LastBid: s.LastBid, StopPrice: s.StopPrice, Reason: s.Reason, InputSeq: s.InputSeq,
		Strategy: s.Strategy, LeadMS: s.LeadMS, CloseAt: s.CloseAt, WakeAt: s.WakeAt, Group: s.Group, GroupWin: s.GroupWin, Slot: s.Slot}
}

type joinRequest struct {
	Item      string          `json:"item"`
	StopPrice json.RawMessage `json:"stop_price"`
	NotifyURL string          `json:"notify_url"`
	// Strategy "last-second" holds the bid until LeadMS before the close
	// (when the auction house announces it); "now" or absent bids at once.
	Strategy *string `json:"strategy"`
	LeadMS   *int64  `json:"lead_ms"`
}

// DefaultLeadMS is how long before the close a last-second sniper bids
// when the join does not say.
const DefaultLeadMS = 2000

// maxLeadMS bounds a lead: an hour before the close is no longer a
// last-second bid.
const maxLeadMS = 3_600_000

// strategyOf checks a join's strategy and lead.
func (req joinRequest) strategyOf() (auction.Strategy, int64, error) {
	strategy := auction.Now
	if req.Strategy != nil {
		switch *req.Strategy {
		case "now":
		case string(auction.LastSecond):
			strategy = auction.LastSecond
		default:
			return "", 0, fmt.Errorf(`strategy must be "now" or "last-second", got %q`, clip.String(*req.Strategy, 40))
		}
	}
	if req.LeadMS == nil {
		if strategy == auction.LastSecond {
			return strategy, DefaultLeadMS, nil
		}
		return strategy, 0, nil
	}
	if strategy != auction.LastSecond {
		return "", 0, errors.New(`lead_ms is for "strategy": "last-second"`)
	}
	if *req.LeadMS < 1 || *req.LeadMS > maxLeadMS {
		return "", 0, fmt.Errorf("lead_ms must be 1 to %d (milliseconds before the close), got %d", maxLeadMS, *req.LeadMS)
	}
	return strategy, *req.LeadMS, nil
}

func (s *Server) snipers(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		list := s.View.List()
		out := make([]View, len(list))
		for i, sn := range list {
			out[i] = viewOf(sn)
		}
		WriteJSON(w, http.StatusOK, map[string]any{"snipers": out})
	case http.MethodPost:
		s.join(w, r)
	default:
		methodNotAllowed(w, "GET, POST")
	}
}

func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	var req joinRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if err := messages.ValidItem(req.Item); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	stop, err := parseStopPrice(req.StopPrice)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	strategy, lead, err := req.strategyOf()
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.NotifyURL != "" {
		if err := ValidNotifyURL(req.NotifyURL); err != nil {
			writeError(w, http.StatusBadRequest, "notify_url "+err.Error())
			return
		}
	}
	if !s.available(w, "join "+req.Item) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout())
	defer cancel()
	// The start command is fenced on "first on its subject": of two
	// concurrent joins, or a join on another instance, only one lands.
	start := startCommand(req.Item, stop, strategy, lead)
	start.NotifyURL = req.NotifyURL
	_, err = s.Log.Append(ctx, messages.Subject(req.Item, messages.KindCmd, messages.TypeStart),
		start, jetstream.WithMsgID(req.Item+"/start"), jetstream.FirstOfSubject())
	status := http.StatusCreated
	switch {
	case errors.Is(err, jetstream.ErrExists):
		status = http.StatusOK
	case err != nil:
		s.unavailable(w, "join "+req.Item, err)
		return
	}
	snap, err := s.View.Wait(ctx, req.Item, func(messages.DecisionEvent) bool { return true })
	if err != nil {
		// The command is in the log and will be decided; the client just
		// does not get to see the first snapshot in time.
		WriteJSON(w, http.StatusAccepted, View{Item: req.Item, StopPrice: stop})
		return
	}
	WriteJSON(w, status, viewOf(snap))
}

func startCommand(item string, stop int64, strategy auction.Strategy, lead int64) messages.StartCommand {
	c := messages.NewStart(item, stop)
	c.Strategy, c.LeadMS = string(strategy), lead
	return c
}

// ValidNotifyURL checks a notification URL: absolute, http or https, with
// a host.
func ValidNotifyURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("must be an absolute http or https URL, got %s", clip.String(strconv.Quote(raw), 80))
	}
	return nil
}

func parseStopPrice(raw json.RawMessage) (int64, error) {
	if len(raw) == 0 {
		return 0, errors.New("stop_price is required")
	}
	// A JSON string holding a number would unmarshal into json.Number too:
	// only a number literal is a stop price.
	var n json.Number
	if raw[0] == '"' {
		return 0, fmt.Errorf("stop_price must be a positive integer, not a string: %s", clip.String(string(raw), 40))
	}
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, fmt.Errorf("stop_price must be a positive integer, got %s", clip.String(string(raw), 40))
	}
	v, err := n.Int64()
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("stop_price must be a positive integer, got %s", clip.String(n.String(), 40))
	}
	return v, nil
}

func (s *Server) sniper(w http.ResponseWriter, r *http.Request) {
	item, ok := itemFrom(w, r)
	if !ok {
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		snap, found := s.View.Get(item)
		if !found {
			writeError(w, http.StatusNotFound, "no sniper for "+item)
			return
		}
		WriteJSON(w, http.StatusOK, viewOf(snap))
	case http.MethodDelete:
		s.stop(w, r, item)
	case http.MethodPatch:
		s.setStopPrice(w, r, item)
	default:
		methodNotAllowed(w, "GET, PATCH, DELETE")
	}
}

type setRequest struct {
	StopPrice json.RawMessage `json:"stop_price"`
}

// setStopPrice serves PATCH /api/snipers/{item} {"stop_price": N}: the
// change goes into the log as cmd.set and the core decides it (a Losing
// sniper may bid at once, a Stopped one resumes). What the core would
// refuse is refused here first, with 409 and why: the sniper has ended,
// or N is below a bid of its that still stands.
func (s *Server) setStopPrice(w http.ResponseWriter, r *http.Request, item string) {
	var req setRequest
	if !decodeBody(w, r, &req) {
		return
	}
	stop, err := parseStopPrice(req.StopPrice)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	snap, found := s.View.Get(item)
	switch {
	case !found:
		writeError(w, http.StatusNotFound, "no sniper for "+item)
		return
	case snap.State.Final():
		writeError(w, http.StatusConflict, fmt.Sprintf("the sniper for %s has ended (%s): its stop price can no longer change", item, snap.State))
		return
	case snap.HasStandingBid() && stop < snap.LastBid:
		writeError(w, http.StatusConflict, fmt.Sprintf("the sniper for %s has a bid of %d standing: a stop price of %d cannot take it back (a bid made stands)", item, snap.LastBid, stop))
		return
	}
	if !s.available(w, "change the stop price of "+item) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout())
	defer cancel()
	seq, err := s.Log.Append(ctx, messages.Subject(item, messages.KindCmd, messages.TypeSet), messages.NewSetStopPrice(item, stop))
	if err != nil {
		s.unavailable(w, "change the stop price of "+item, err)
		return
	}
	decided, err := s.View.Wait(ctx, item, func(d messages.DecisionEvent) bool { return d.InputSeq >= seq })
	if err != nil {
		WriteJSON(w, http.StatusAccepted, viewOf(snap))
		return
	}
	if decided.StopPrice != stop {
		// Between the check above and the decision, the sniper moved
		// (it ended, or bid above stop): the core refused the change.
		writeError(w, http.StatusConflict, fmt.Sprintf("the sniper for %s refused a stop price of %d: it is now %s with a bid of %d (the change is in its history)", item, stop, decided.State, decided.LastBid))
		return
	}
	WriteJSON(w, http.StatusOK, viewOf(decided))
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request, item string) {
	snap, found := s.View.Get(item)
	if !found {
		writeError(w, http.StatusNotFound, "no sniper for "+item)
		return
	}
	if snap.State.Terminal() {
		WriteJSON(w, http.StatusOK, viewOf(snap))
		return
	}
	if !s.available(w, "stop "+item) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout())
	defer cancel()
	if _, err := s.Log.Append(ctx, messages.Subject(item, messages.KindCmd, messages.TypeStop), messages.NewStop(item)); err != nil {
		s.unavailable(w, "stop "+item, err)
		return
	}
	snap, err := s.View.Wait(ctx, item, func(s messages.DecisionEvent) bool { return s.State.Terminal() })
	if err != nil {
		WriteJSON(w, http.StatusAccepted, viewOf(snap))
		return
	}
	WriteJSON(w, http.StatusOK, viewOf(snap))
}

// Event is one message of an auction's history.
type Event struct {
	Seq     uint64          `json:"seq"`
	Type    string          `json:"type"`
	Subject string          `json:"subject"`
	Time    string          `json:"time"`
	Data    json.RawMessage `json:"data"`
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	item, ok := itemFrom(w, r)
	if !ok {
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET")
		return
	}
	if !s.available(w, "history of "+item) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout())
	defer cancel()
	recs, err := s.Log.History(ctx, item)
	if err != nil {
		s.unavailable(w, "history of "+item, err)
		return
	}
	if len(recs) == 0 {
		writeError(w, http.StatusNotFound, "no events for "+item)
		return
	}
	out := make([]Event, len(recs))
	for i, rec := range recs {
		_, kind, typ, _ := messages.ParseSubject(rec.Subject)
		data := rec.Data
		if !json.Valid(data) {
			// Someone wrote a non-JSON message by hand: show it as a string.
			data, _ = json.Marshal(string(rec.Data))
		}
		out[i] = Event{Seq: rec.Seq, Type: typ, Subject: kind + "." + typ, Time: rec.Time.UTC().Format(time.RFC3339Nano), Data: data}
	}
	WriteJSON(w, http.StatusOK, map[string]any{"events": out})
}

func itemFrom(w http.ResponseWriter, r *http.Request) (string, bool) {
	item := r.PathValue("item")
	if err := messages.ValidItem(item); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return item, true
}

func (s *Server) timeout() time.Duration {
	if s.CommandTimeout > 0 {
		return s.CommandTimeout
	}
	return 5 * time.Second
}

func (s *Server) unavailable(w http.ResponseWriter, what string, err error) {
	var msg string
	switch {
	case errors.Is(err, jetstream.ErrUnavailable):
		msg = err.Error() + "; try again"
	case errors.Is(err, jetstream.ErrFull):
		msg = "the event log is full and refuses writes; try again once space is freed: " + err.Error()
	default:
		msg = "the event log is unavailable, try again: " + err.Error()
	}
	s.Logger.Warn("request failed: log unavailable", "request", what, "error", err)
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, msg)
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	// Requiring JSON also keeps other web sites out: a cross-site form or
	// fetch cannot send this content type without a CORS preflight. A
	// missing Content-Type is refused too: a cross-site fetch of a Blob
	// sends none, without a preflight.
	if ct := r.Header.Get("Content-Type"); !isJSON(ct) {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json, got "+clip.String(strconv.Quote(ct), 80))
		return false
	}
	tooBig := func() bool {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", MaxBodyBytes))
		return false
	}
	if r.ContentLength > MaxBodyBytes {
		return tooBig()
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	var maxErr *http.MaxBytesError
	if err := dec.Decode(v); err != nil {
		if errors.As(err, &maxErr) {
			return tooBig()
		}
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	// Only whitespace may follow the value (dec.More would let a stray '}'
	// or ']' through), and reading to the end holds the whole body, not
	// just its first value, to the size limit.
	rest, err := io.ReadAll(io.MultiReader(dec.Buffered(), body))
	if err != nil {
		if errors.As(err, &maxErr) {
			return tooBig()
		}
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return false
	}
	if len(bytes.TrimLeft(rest, " \t\r\n")) > 0 {
		writeError(w, http.StatusBadRequest, "invalid JSON body: data after the JSON value")
		return false
	}
	return true
}

// isJSON reports whether a Content-Type is application/json, with or
// without parameters.
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// WriteJSON answers with v as JSON: how every JSON answer of the sniper's
// HTTP server is written (the API's, and the app's probes and 401s).
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"error": msg})
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed; use "+allow)
}

// recoverer turns a handler panic into a 500 and a log line: nothing a
// client sends may take the process down.
func recoverer(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logger.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", v)
				writeError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}
