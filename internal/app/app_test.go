package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"sniper/internal/app"
	"sniper/jetstream"
	"sniper/messages"
	"sniper/testkit"
)

// startApp runs the whole sniper in-process on dir, with an embedded NATS
// server and the HTTP API on free loopback ports. It is stopped when the
// test ends (stopping it earlier is fine: Stop is idempotent).
func startApp(t *testing.T, dir string) *app.App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := app.Start(ctx, app.Config{
		DataDir:    dir,
		NATSListen: "127.0.0.1:0",
		HTTPAddr:   "127.0.0.1:0",
		Logger:     testkit.Logger(t),
	})
	if err != nil {
		t.Fatalf("start app: %v", err)
	}
	t.Cleanup(func() { stopApp(t, a) })
	return a
}

// stopApp stops a gracefully and fails the test if that takes more than a
// few seconds.
func stopApp(t *testing.T, a *app.App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	a.Stop(ctx)
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("graceful stop took %s, want a few seconds at most", took)
	}
}

var client = &http.Client{Timeout: 15 * time.Second}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) String() string {
	return fmt.Sprintf("%d %s", r.Status, truncate(string(r.Body), 300))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func do(t *testing.T, method, url, contentType string, body []byte) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return response{Status: res.StatusCode, Header: res.Header, Body: data}
}

func post(t *testing.T, a *app.App, item string, stop int64) response {
	t.Helper()
	body := fmt.Sprintf(`{"item":%q,"stop_price":%d}`, item, stop)
	return do(t, http.MethodPost, a.HTTPURL()+"/api/snipers", "application/json", []byte(body))
}

func get(t *testing.T, a *app.App, path string) response {
	t.Helper()
	return do(t, http.MethodGet, a.HTTPURL()+path, "", nil)
}

// snapshot is a sniper as the API shows it.
type snapshot struct {
	Item      string `json:"item"`
	State     string `json:"state"`
	LastPrice int64  `json:"last_price"`
	LastBid   int64  `json:"last_bid"`
	StopPrice int64  `json:"stop_price"`
	Reason    string `json:"reason,omitempty"`
	InputSeq  uint64 `json:"input_seq"`
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatalf("response %s is not the expected JSON: %v", r, err)
	}
	return v
}

func wantStatus(t *testing.T, r response, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %s, want %d", r, status)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json (%s)", ct, r)
	}
}

// wantError checks an error response: the status, a JSON content type and
// a non-empty "error".
func wantError(t *testing.T, r response, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %s, want %d", r, status)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error response Content-Type %q, want application/json (%s)", ct, r)
	}
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(r.Body, &e); err != nil || e.Error == nil || *e.Error == "" {
		t.Fatalf("error response %s has no JSON \"error\" (decode: %v)", r, err)
	}
}

func history(t *testing.T, a *app.App, item string) []jetstream.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	recs, err := a.Log().History(ctx, item)
	if err != nil {
		t.Fatalf("history of %s: %v", item, err)
	}
	return recs
}

func count(recs []jetstream.Record, item, kind, typ string) int {
	subject := messages.Subject(item, kind, typ)
	n := 0
	for _, r := range recs {
		if r.Subject == subject {
			n++
		}
	}
	return n
}

func wantCounts(t *testing.T, a *app.App, item string, starts, joins, bids int) {
	t.Helper()
	recs := history(t, a, item)
	got := [3]int{
		count(recs, item, messages.KindCmd, messages.TypeStart),
		count(recs, item, messages.KindDec, messages.TypeJoin),
		count(recs, item, messages.KindDec, messages.TypeBid),
	}
	if want := [3]int{starts, joins, bids}; got != want {
		t.Fatalf("%s: log holds %d cmd.start, %d dec.join, %d dec.bid; want %v", item, got[0], got[1], got[2], want)
	}
}

func appendPrice(t *testing.T, a *app.App, item string, price, inc int64) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	seq, err := a.Log().Append(ctx, messages.Subject(item, messages.KindIn, messages.TypePrice),
		messages.NewPrice(item, price, inc, "other bidder", false))
	if err != nil {
		t.Fatalf("append price for %s: %v", item, err)
	}
	return seq
}

// eventuallyGet polls GET /api/snipers/{item} until ok holds.
func eventuallyGet(t *testing.T, a *app.App, item string, ok func(snapshot) bool, what string) snapshot {
	t.Helper()
	var last snapshot
	var lastRes response
	testkit.Eventually(t, 10*time.Second, func() bool {
		lastRes = get(t, a, "/api/snipers/"+item)
		if lastRes.Status != http.StatusOK {
			return false
		}
		last = decode[snapshot](t, lastRes)
		return ok(last)
	}, "%s: GET /api/snipers/%s never showed %s (last: %s)", item, item, what, lastRes)
	return last
}

func TestSniperLifecycleOverHTTP(t *testing.T) {
	dir := t.TempDir()
	a := startApp(t, dir)
	const item = "item-54321"

	// Nothing yet.
	r := get(t, a, "/api/snipers")
	wantStatus(t, r, http.StatusOK)
	if l := decode[struct{ Snipers []snapshot }](t, r); len(l.Snipers) != 0 {
		t.Fatalf("fresh app lists %+v, want no snipers", l.Snipers)
	}
	wantError(t, get(t, a, "/api/snipers/"+item), http.StatusNotFound)
	wantError(t, get(t, a, "/api/snipers/"+item+"/events"), http.StatusNotFound)

	// POST creates the sniper: one start command, one JOIN.
	r = post(t, a, item, 1100)
	wantStatus(t, r, http.StatusCreated)
	s := decode[snapshot](t, r)
	if s.Item != item || s.State != "Joining" || s.StopPrice != 1100 {
		t.Fatalf("POST answered %+v, want %s Joining with stop price 1100", s, item)
	}
	wantCounts(t, a, item, 1, 1, 0)

	// A second POST finds it and starts nothing.
	r = post(t, a, item, 1100)
	wantStatus(t, r, http.StatusOK)
	if s := decode[snapshot](t, r); s.State != "Joining" {
		t.Fatalf("second POST answered %+v, want Joining", s)
	}
	// Even with another stop price: the first one stands.
	r = post(t, a, item, 5000)
	wantStatus(t, r, http.StatusOK)
	if s := decode[snapshot](t, r); s.StopPrice != 1100 {
		t.Fatalf("POST with another stop price answered %+v, want the original stop price 1100", s)
	}
	wantCounts(t, a, item, 1, 1, 0)

	// A second sniper, to see the list ordered and the restart keep both.
	const other = "item-0001"
	wantStatus(t, post(t, a, other, 300), http.StatusCreated)

	r = get(t, a, "/api/snipers")
	wantStatus(t, r, http.StatusOK)
	list := decode[struct{ Snipers []snapshot }](t, r).Snipers
	if len(list) != 2 || list[0].Item != other || list[1].Item != item {
		t.Fatalf("GET /api/snipers = %+v, want %s and %s in item order", list, other, item)
	}
	r = get(t, a, "/api/snipers/"+item)
	wantStatus(t, r, http.StatusOK)
	if got := decode[snapshot](t, r); got.Item != item || got.State != "Joining" || got.StopPrice != 1100 || got.LastPrice != 0 || got.LastBid != 0 {
		t.Fatalf("GET /api/snipers/%s = %+v", item, got)
	}
	// The raw body has the contract's fields.
	var raw map[string]any
	if err := json.Unmarshal(r.Body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"item", "state", "last_price", "last_bid", "stop_price"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("snapshot %s has no %q", r.Body, k)
		}
	}
	wantError(t, get(t, a, "/api/snipers/item-unknown"), http.StatusNotFound)

	// The history: the start and the decision to join, in log order.
	checkEvents(t, a, item, []string{"start", "join"})

	// A price from another bidder: the sniper bids.
	appendPrice(t, a, item, 1000, 98)
	s = eventuallyGet(t, a, item, func(s snapshot) bool { return s.State == "Bidding" }, "Bidding")
	if s.LastPrice != 1000 || s.LastBid != 1098 {
		t.Fatalf("after price: %+v, want Bidding 1000/1098", s)
	}
	wantCounts(t, a, item, 1, 1, 1)
	checkEvents(t, a, item, []string{"start", "join", "price", "bid"})

	// DELETE stops it.
	r = do(t, http.MethodDelete, a.HTTPURL()+"/api/snipers/"+item, "", nil)
	wantStatus(t, r, http.StatusOK)
	if s := decode[snapshot](t, r); s.State != "Stopped" {
		t.Fatalf("DELETE answered %+v, want Stopped", s)
	}
	if s := decode[snapshot](t, get(t, a, "/api/snipers/"+item)); s.State != "Stopped" || s.LastBid != 1098 {
		t.Fatalf("after DELETE: %+v, want Stopped with last bid 1098", s)
	}
	// DELETE again is harmless.
	r = do(t, http.MethodDelete, a.HTTPURL()+"/api/snipers/"+item, "", nil)
	wantStatus(t, r, http.StatusOK)
	wantError(t, do(t, http.MethodDelete, a.HTTPURL()+"/api/snipers/item-unknown", "", nil), http.StatusNotFound)

	// A later price is followed (so that a new stop price can resume
	// from it) and never bid on.
	appendPrice(t, a, item, 1200, 10)
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		return decode[snapshot](t, get(t, a, "/api/snipers/"+item)).LastPrice == 1200
	}, "the stopped sniper never followed the price of 1200")
	testkit.Consistently(t, 500*time.Millisecond, func() error {
		r := get(t, a, "/api/snipers/"+item)
		if s := decode[snapshot](t, r); s.State != "Stopped" || s.LastBid != 1098 {
			return fmt.Errorf("stopped sniper moved after a price: %+v", s)
		}
		recs := history(t, a, item)
		if n := count(recs, item, messages.KindDec, messages.TypeBid); n != 1 {
			return fmt.Errorf("stopped sniper bid: %d dec.bid", n)
		}
		return nil
	})

	// Restart on the same data dir: the same snipers, the same states.
	r = get(t, a, "/api/snipers")
	wantStatus(t, r, http.StatusOK)
	want := decode[struct{ Snipers []snapshot }](t, r).Snipers
	stopApp(t, a)

	a2 := startApp(t, dir)
	r = get(t, a2, "/api/snipers")
	wantStatus(t, r, http.StatusOK)
	got := decode[struct{ Snipers []snapshot }](t, r).Snipers
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after restart GET /api/snipers = %+v, want %+v", got, want)
	}
	for _, w := range want {
		r := get(t, a2, "/api/snipers/"+w.Item)
		wantStatus(t, r, http.StatusOK)
		if g := decode[snapshot](t, r); g != w {
			t.Fatalf("after restart %s = %+v, want %+v", w.Item, g, w)
		}
	}
	// The restarted app still refuses a second start and keeps its history.
	wantStatus(t, post(t, a2, item, 1100), http.StatusOK)
	wantStatus(t, post(t, a2, other, 300), http.StatusOK)
	wantCounts(t, a2, item, 1, 1, 1)
	wantCounts(t, a2, other, 1, 1, 0)
	// The sniper left running before the restart is running after it.
	appendPrice(t, a2, other, 100, 10)
	s = eventuallyGet(t, a2, other, func(s snapshot) bool { return s.State == "Bidding" }, "Bidding")
	if s.LastBid != 110 {
		t.Fatalf("%s after restart: %+v, want a bid of 110", other, s)
	}
}

// checkEvents checks GET /api/snipers/{item}/events against the log.
func checkEvents(t *testing.T, a *app.App, item string, wantTypes []string) {
	t.Helper()
	r := get(t, a, "/api/snipers/"+item+"/events")
	wantStatus(t, r, http.StatusOK)
	body := decode[eventsBody](t, r)
	var types []string
	var last uint64
	for _, e := range body.Events {
		types = append(types, e.Type)
		if e.Seq <= last {
			t.Fatalf("events out of log order: seq %d after %d (%s)", e.Seq, last, r)
		}
		last = e.Seq
		ts, err := time.Parse(time.RFC3339, e.Time)
		if err != nil {
			t.Fatalf("event %d time %q is not RFC3339: %v", e.Seq, e.Time, err)
		}
		if d := time.Since(ts); d < -time.Minute || d > time.Hour {
			t.Fatalf("event %d time %s is not about now", e.Seq, ts)
		}
		var data struct {
			Type string `json:"type"`
			Item string `json:"item"`
		}
		if err := json.Unmarshal(e.Data, &data); err != nil || data.Type != e.Type || data.Item != item {
			t.Fatalf("event %d data %s does not match type %q and item %s (%v)", e.Seq, e.Data, e.Type, item, err)
		}
	}
	if !reflect.DeepEqual(types, wantTypes) {
		t.Fatalf("event types %v, want %v", types, wantTypes)
	}
	// The same sequence numbers as the log itself.
	recs := history(t, a, item)
	if len(recs) != len(body.Events) {
		t.Fatalf("%d events over HTTP, %d in the log", len(body.Events), len(recs))
	}
	for i, rec := range recs {
		if rec.Seq != body.Events[i].Seq {
			t.Fatalf("event %d has seq %d, the log %d", i, body.Events[i].Seq, rec.Seq)
		}
	}
}

type eventsBody struct {
	Events []struct {
		Seq  uint64          `json:"seq"`
		Type string          `json:"type"`
		Time string          `json:"time"`
		Data json.RawMessage `json:"data"`
	} `json:"events"`
}

func TestConcurrentJoinsStartOneSniper(t *testing.T) {
	t.Parallel()
	a := startApp(t, t.TempDir())
	const item = "item-race"
	const n = 10
	statuses := make([]int, n)
	bodies := make([]string, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-gate
			req, err := http.NewRequest(http.MethodPost, a.HTTPURL()+"/api/snipers", strings.NewReader(`{"item":"item-race","stop_price":1100}`))
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("Content-Type", "application/json")
			res, err := client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			statuses[i], bodies[i] = res.StatusCode, string(b)
		})
	}
	close(gate)
	wg.Wait()
	created, found := 0, 0
	for i, st := range statuses {
		switch st {
		case http.StatusCreated:
			created++
		case http.StatusOK:
			found++
		default:
			t.Errorf("POST %d: %d %s", i, st, bodies[i])
		}
	}
	if created != 1 || found != n-1 {
		t.Fatalf("concurrent POSTs: %d x 201 and %d x 200 (%v), want exactly one 201 and %d x 200", created, found, statuses, n-1)
	}
	wantCounts(t, a, item, 1, 1, 0)
	if s := decode[snapshot](t, get(t, a, "/api/snipers/"+item)); s.State != "Joining" {
		t.Fatalf("after concurrent POSTs: %+v, want Joining", s)
	}
}

func TestBadRequestsAreRefusedAndHarmless(t *testing.T) {
	t.Parallel()
	a := startApp(t, t.TempDir())
	url := a.HTTPURL()
	const okBody = `{"item":"item-ok","stop_price":1100}`
	huge := `{"item":"item-big","stop_price":1100,"x":"` + strings.Repeat("a", 70<<10) + `"}`
	padded := `{"item":"item-big","stop_price":1100}` + strings.Repeat(" ", 70<<10)

	bad := []struct {
		name   string
		body   string
		ct     string
		status int
	}{
		{"invalid JSON", `{"item":`, "", 400},
		{"not an object", `["item-1",1100]`, "", 400},
		{"null", `null`, "", 400},
		{"empty body", ``, "", 400},
		{"unknown field", `{"item":"item-1","stop_price":1100,"max":5}`, "", 400},
		{"missing item", `{"stop_price":1100}`, "", 400},
		{"item not a string", `{"item":12345,"stop_price":1100}`, "", 400},
		{"item with dot", `{"item":"item.1","stop_price":1100}`, "", 400},
		{"item with star", `{"item":"item*","stop_price":1100}`, "", 400},
		{"item with gt", `{"item":"item>","stop_price":1100}`, "", 400},
		{"item is gt", `{"item":">","stop_price":1100}`, "", 400},
		{"item with space", `{"item":"item 1","stop_price":1100}`, "", 400},
		{"item with newline", `{"item":"item-1\n","stop_price":1100}`, "", 400},
		{"item with slash", `{"item":"item/1","stop_price":1100}`, "", 400},
		{"item with non-ascii", `{"item":"itém","stop_price":1100}`, "", 400},
		{"item 65 chars", `{"item":"` + strings.Repeat("a", 65) + `","stop_price":1100}`, "", 400},
		{"empty item", `{"item":"","stop_price":1100}`, "", 400},
		{"stop price 0", `{"item":"item-1","stop_price":0}`, "", 400},
		{"stop price -1", `{"item":"item-1","stop_price":-1}`, "", 400},
		{"stop price 1.5", `{"item":"item-1","stop_price":1.5}`, "", 400},
		{"stop price string", `{"item":"item-1","stop_price":"1100"}`, "", 400},
		{"stop price null", `{"item":"item-1","stop_price":null}`, "", 400},
		{"stop price bool", `{"item":"item-1","stop_price":true}`, "", 400},
		{"stop price object", `{"item":"item-1","stop_price":{}}`, "", 400},
		{"missing stop price", `{"item":"item-1"}`, "", 400},
		{"stop price 1e400", `{"item":"item-1","stop_price":1e400}`, "", 400},
		{"stop price over int64", `{"item":"item-1","stop_price":9223372036854775808}`, "", 400},
		{"trailing garbage", okBody + `garbage`, "", 400},
		{"trailing brace", okBody + `}`, "", 400},
		{"trailing bracket", okBody + `]`, "", 400},
		{"second object", okBody + okBody, "", 400},
		{"body over 64 KiB", huge, "", 413},
		{"valid JSON padded over 64 KiB", padded, "", 413},
		{"form content type", okBody, "application/x-www-form-urlencoded", 415},
		{"text content type", okBody, "text/plain", 415},
		{"json-ish content type", okBody, "application/jsonp", 415},
		{"no content type", okBody, "-", 415},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			ct := c.ct
			switch ct {
			case "":
				ct = "application/json"
			case "-":
				ct = ""
			}
			wantError(t, do(t, http.MethodPost, url+"/api/snipers", ct, []byte(c.body)), c.status)
		})
	}

	// Nothing above reached the log.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	last, err := a.Log().LastSeqOn(ctx, "sniper.*.cmd.>")
	if err != nil {
		t.Fatal(err)
	}
	if last != 0 {
		t.Fatalf("refused requests wrote to the log (last message %d)", last)
	}

	// A JSON content type with parameters is fine, and so is whitespace
	// after the body.
	wantStatus(t, do(t, http.MethodPost, url+"/api/snipers", "application/json; charset=utf-8", []byte(okBody+"\r\n ")), http.StatusCreated)

	paths := []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodPut, "/api/snipers", 405, "GET, POST"},
		{http.MethodPatch, "/api/snipers", 405, "GET, POST"},
		{http.MethodDelete, "/api/snipers", 405, "GET, POST"},
		{http.MethodPost, "/api/snipers/item-ok", 405, "GET, PATCH, DELETE"},
		{http.MethodPut, "/api/snipers/item-ok", 405, "GET, PATCH, DELETE"},
		{http.MethodPost, "/api/snipers/item-ok/events", 405, "GET"},
		{http.MethodDelete, "/api/snipers/item-ok/events", 405, "GET"},
		{http.MethodGet, "/api/nothing", 404, ""},
		{http.MethodPost, "/api/nothing", 404, ""},
		{http.MethodGet, "/api/", 404, ""},
		{http.MethodGet, "/api/snipers/item-ok/events/more", 404, ""},
		{http.MethodGet, "/api/snipers/item-ok/history", 404, ""},
		{http.MethodGet, "/api/snipers/item.1", 400, ""},
		{http.MethodGet, "/api/snipers/item*", 400, ""},
		{http.MethodGet, "/api/snipers/item%3E", 400, ""},
		{http.MethodGet, "/api/snipers/item%2E1/events", 400, ""},
		{http.MethodGet, "/api/snipers/item%2F1", 400, ""},
		{http.MethodGet, "/api/snipers/item%201", 400, ""},
		{http.MethodGet, "/api/snipers/" + strings.Repeat("a", 65), 400, ""},
		{http.MethodDelete, "/api/snipers/item%2A", 400, ""},
	}
	for _, p := range paths {
		t.Run(p.method+" "+p.path, func(t *testing.T) {
			r := do(t, p.method, url+p.path, "application/json", []byte(okBody))
			wantError(t, r, p.status)
			if p.allow != "" && r.Header.Get("Allow") != p.allow {
				t.Fatalf("Allow %q, want %q", r.Header.Get("Allow"), p.allow)
			}
		})
	}

	// Still serving, and still only the one sniper.
	r := get(t, a, "/api/snipers")
	wantStatus(t, r, http.StatusOK)
	if l := decode[struct{ Snipers []snapshot }](t, r).Snipers; len(l) != 1 || l[0].Item != "item-ok" {
		t.Fatalf("after bad requests GET /api/snipers = %+v, want only item-ok", l)
	}
	wantCounts(t, a, "item-ok", 1, 1, 0)
}
