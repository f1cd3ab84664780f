package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sniper/api"
	"sniper/testkit"
)

// newHandler serves the API over the fake log and view, with playSniper
// deciding what is appended: a start command shows as a Joining sniper.
// A fuzz target must not log through f (testing panics), so it passes a
// logger of its own.
func newHandler(t testing.TB, logger *slog.Logger) http.Handler {
	t.Helper()
	log, view := newFakes(t)
	s := &api.Server{Log: log, View: view, Logger: logger, CommandTimeout: 5 * time.Second}
	return s.Handler()
}

var itemPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// validJoin is the oracle for POST /api/snipers, written independently of
// the handler: the body must be one JSON object (only whitespace around
// it) whose keys name item and stop_price (encoding/json matches field
// names case-insensitively; the last of duplicates wins), with item a
// string of [A-Za-z0-9_-]{1,64} and stop_price a positive integer literal
// that fits in int64.
func validJoin(body []byte) bool {
	if !json.Valid(body) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return false
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return false
		}
		switch {
		case strings.EqualFold(key, "item"):
			// null leaves a Go string as it was.
			if string(v) != "null" {
				fields["item"] = v
			}
		case strings.EqualFold(key, "stop_price"):
			fields["stop_price"] = v
		case strings.EqualFold(key, "strategy"), strings.EqualFold(key, "lead_ms"):
			// null leaves a Go pointer as it was.
			if string(v) != "null" {
				fields[strings.ToLower(key)] = v
			} else {
				delete(fields, strings.ToLower(key))
			}
		case strings.EqualFold(key, "notify_url"):
			fields["notify_url"] = v
		default:
			return false
		}
	}
	lastSecond := false
	if raw, ok := fields["strategy"]; ok {
		var strategy string
		if json.Unmarshal(raw, &strategy) != nil || (strategy != "now" && strategy != "last-second") {
			return false
		}
		lastSecond = strategy == "last-second"
	}
	if raw, ok := fields["lead_ms"]; ok {
		lead, err := strconv.ParseInt(string(raw), 10, 64)
		if !lastSecond || err != nil || !regexp.MustCompile(`^-?[0-9]+$`).Match(raw) || lead < 1 || lead > 3_600_000 {
			return false
		}
	}
	var item string
	if err := json.Unmarshal(fields["item"], &item); err != nil || !itemPattern.MatchString(item) {
		return false
	}
	if raw, ok := fields["notify_url"]; ok && string(raw) != "null" {
		var notify string
		if err := json.Unmarshal(raw, &notify); err != nil {
			return false
		}
		if u, err := url.Parse(notify); notify != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
			return false
		}
	}
	stop := string(fields["stop_price"])
	if !regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(stop) {
		return false
	}
	if _, err := strconv.ParseInt(stop, 10, 64); err != nil {
		return false
	}
	return true
}

func TestValidJoinOracle(t *testing.T) {
	for body, want := range map[string]bool{
		`{"item":"item-1","stop_price":1100}`:                                true,
		` {"stop_price":1,"item":"a"} `:                                      true,
		`{"ITEM":"a","Stop_Price":5}`:                                        true,
		`{"item":"a","item":"b","stop_price":5}`:                             true,
		`{"item":"a.b","stop_price":5}`:                                      false,
		`{"item":"a","stop_price":"5"}`:                                      false,
		`{"item":"a","stop_price":5.0}`:                                      false,
		`{"item":"a","stop_price":0}`:                                        false,
		`{"item":"a","stop_price":9223372036854775808}`:                      false,
		`{"item":"a","stop_price":5,"x":1}`:                                  false,
		`{"item":"a","stop_price":5,"strategy":"last-second"}`:               true,
		`{"item":"a","stop_price":5,"strategy":"last-second","lead_ms":500}`: true,
		`{"item":"a","stop_price":5,"strategy":"now"}`:                       true,
		`{"item":"a","stop_price":5,"strategy":"later"}`:                     false,
		`{"item":"a","stop_price":5,"lead_ms":500}`:                          false,
		`{"item":"a","stop_price":5,"strategy":"last-second","lead_ms":0}`:   false,
		`{"item":"a","stop_price":5,"strategy":"last-second","lead_ms":2.5}`: false,
		`{"item":"a","stop_price":5,"strategy":null,"lead_ms":null}`:         true,
		`{"item":"a","stop_price":5}}`:                                       false,
		`{"item":"a","stop_price":null}`:                                     false,
		`[{"item":"a","stop_price":5}]`:                                      false,
		`{"item":"a"}`:                                                       false,
		`{"item":"\u0061","stop_price":5}`:                                   true,
		`{"item":"a","item":null,"stop_price":5}`:                            true,
		`{"item":null,"stop_price":5}`:                                       false,
		`{"item":"a","stop_price":5}{"item":"a","stop_price":5}`:             false,
	} {
		if got := validJoin([]byte(body)); got != want {
			t.Errorf("validJoin(%s) = %v, want %v", body, got, want)
		}
	}
}

// FuzzJoinRequest posts arbitrary bodies to the API: nothing may crash it
// or get a server error other than 503, every refusal is a JSON error,
// and only a valid request creates or finds a sniper.
//
// It runs on the fakes (no NATS server, no actors), so it needs no bound
// on minimization:
//
//	go test -run '^$' -fuzz FuzzJoinRequest -fuzztime 60s ./api/
func FuzzJoinRequest(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzJoinRequest.
	f.Add([]byte(`{"item":"item-54321","stop_price":1100}`))
	f.Add([]byte(`{"item":"item.1","stop_price":1100}`))
	f.Add([]byte(`{"item":"item-1","stop_price":"1100"}`))
	h := newHandler(f, slog.New(slog.DiscardHandler))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/api/snipers", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		res := rec.Result()
		data, _ := io.ReadAll(res.Body)
		status := res.StatusCode
		if status >= 500 && status != http.StatusServiceUnavailable {
			t.Fatalf("body %q: server error %d %s", body, status, data)
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("body %q: Content-Type %q (%d %s)", body, ct, status, data)
		}
		if !json.Valid(data) {
			t.Fatalf("body %q: response is not JSON: %d %s", body, status, data)
		}
		valid := validJoin(body)
		switch {
		case status >= 400 && status < 500:
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(data, &e); err != nil || e.Error == "" {
				t.Fatalf("body %q: %d without a JSON error: %s", body, status, data)
			}
			if valid {
				t.Fatalf("valid body %q refused: %d %s", body, status, data)
			}
			if status == http.StatusRequestEntityTooLarge && len(body) <= api.MaxBodyBytes {
				t.Fatalf("body of %d bytes refused as too large", len(body))
			}
		case status >= 200 && status < 300:
			if !valid {
				t.Fatalf("invalid body %q accepted: %d %s", body, status, data)
			}
			if status != http.StatusCreated && status != http.StatusOK && status != http.StatusAccepted {
				t.Fatalf("body %q: unexpected status %d %s", body, status, data)
			}
			var v api.View
			if err := json.Unmarshal(data, &v); err != nil || v.Item == "" || v.StopPrice <= 0 {
				t.Fatalf("body %q: %d answer is not a sniper: %s (%v)", body, status, data, err)
			}
		case status == http.StatusServiceUnavailable:
		default:
			t.Fatalf("body %q: unexpected status %d %s", body, status, data)
		}
	})
}

// TestHandlerSurvivesBodyReadErrors: a client that breaks off mid-body
// gets an error, not a crash or a sniper.
func TestHandlerSurvivesBodyReadErrors(t *testing.T) {
	h := newHandler(t, testkit.Logger(t))
	body := io.MultiReader(strings.NewReader(`{"item":"item-1","stop_pr`), errReader{})
	req := httptest.NewRequest(http.MethodPost, "/api/snipers", body)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("broken body: %d %s, want 400", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/snipers", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"snipers":[]`) {
		t.Fatalf("GET /api/snipers after a broken body: %d %s", rec.Code, rec.Body)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// TestJoinTakesANotifyURL: a join's notify_url is stored in its start
// command; one that is not an absolute http(s) URL is a 400.
func TestJoinTakesANotifyURL(t *testing.T) {
	h := newHandler(t, testkit.Logger(t))
	do := func(body string) (int, string) {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/api/snipers", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	for _, bad := range []string{"ftp://x/y", "/relative", "http://", "not a url", "mailto:a@b"} {
		if code, body := do(`{"item":"item-n","stop_price":10,"notify_url":` + strconv.Quote(bad) + `}`); code != http.StatusBadRequest || !strings.Contains(body, "notify_url") {
			t.Errorf("notify_url %q: %d %s, want 400 naming notify_url", bad, code, body)
		}
	}
	if code, body := do(`{"item":"item-n","stop_price":10,"notify_url":"https://hooks.example.com/sniper?x=1"}`); code != http.StatusCreated {
		t.Fatalf("join with a notify_url: %d %s, want 201", code, body)
	}
	req := httptest.NewRequest(http.MethodGet, "/api/snipers/item-n/events", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var history struct{ Events []api.Event }
	if err := json.Unmarshal(rec.Body.Bytes(), &history); err != nil || len(history.Events) == 0 {
		t.Fatalf("history: %s (%v)", rec.Body, err)
	}
	var start struct {
		NotifyURL string `json:"notify_url"`
	}
	if err := json.Unmarshal(history.Events[0].Data, &start); err != nil || start.NotifyURL != "https://hooks.example.com/sniper?x=1" {
		t.Errorf("start command %s: notify_url not stored", history.Events[0].Data)
	}
}

// TestJoinStopAndHistory: a join creates a sniper (201) and a second finds
// it (200) with its first stop price; a stop waits for the sniper to stop;
// the history is the auction's messages in log order.
func TestJoinStopAndHistory(t *testing.T) {
	h := newHandler(t, testkit.Logger(t))
	do := func(method, path, body string) (int, []byte) {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.Bytes()
	}
	sniper := func(data []byte) api.View {
		t.Helper()
		var v api.View
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		return v
	}
	code, data := do(http.MethodPost, "/api/snipers", `{"item":"item-1","stop_price":1100}`)
	if v := sniper(data); code != http.StatusCreated || v.Item != "item-1" || v.State != "Joining" || v.StopPrice != 1100 {
		t.Fatalf("join: %d %s, want 201 item-1 Joining at 1100", code, data)
	}
	code, data = do(http.MethodPost, "/api/snipers", `{"item":"item-1","stop_price":5000}`)
	if v := sniper(data); code != http.StatusOK || v.State != "Joining" || v.StopPrice != 1100 {
		t.Fatalf("second join: %d %s, want 200 Joining at the first stop price 1100", code, data)
	}
	code, data = do(http.MethodDelete, "/api/snipers/item-1", "")
	if v := sniper(data); code != http.StatusOK || v.State != "Stopped" {
		t.Fatalf("stop: %d %s, want 200 Stopped", code, data)
	}
	code, data = do(http.MethodGet, "/api/snipers/item-1/events", "")
	var history struct{ Events []api.Event }
	if err := json.Unmarshal(data, &history); code != http.StatusOK || err != nil {
		t.Fatalf("history: %d %s (%v)", code, data, err)
	}
	var got []string
	for i, e := range history.Events {
		got = append(got, e.Subject)
		if i > 0 && e.Seq <= history.Events[i-1].Seq {
			t.Errorf("history out of order: %+v", history.Events)
		}
	}
	if want := []string{"cmd.start", "dec.join", "cmd.stop", "dec.state"}; !slices.Equal(got, want) {
		t.Errorf("history = %v, want %v", got, want)
	}
	if code, data := do(http.MethodGet, "/api/snipers/item-2/events", ""); code != http.StatusNotFound {
		t.Errorf("history of an unknown item: %d %s, want 404", code, data)
	}
}
