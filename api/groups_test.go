package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"sniper/api"
	"sniper/testkit"
)

// POST /api/groups refuses what cannot make a group, saying why, and
// writes nothing then.
func TestGroupRequestsAreChecked(t *testing.T) {
	log, view := newFakes(t)
	h := (&api.Server{Log: log, View: view, Logger: testkit.Logger(t), CommandTimeout: 5 * time.Second}).Handler()
	do := func(method, path, body string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	for body, want := range map[string]string{
		`{"group":"cam","win":1,"items":[]}`:                                                        "items must list 1 to 100",
		`{"group":"c.am","win":1,"items":[{"item":"a","stop_price":5}]}`:                            "group:",
		`{"group":"cam","win":0,"items":[{"item":"a","stop_price":5}]}`:                             "win must be 1 to the number of items (1), got 0",
		`{"group":"cam","win":2,"items":[{"item":"a","stop_price":5}]}`:                             "win must be 1 to the number of items (1), got 2",
		`{"group":"cam","win":1,"items":[{"item":"a","stop_price":5},{"item":"a","stop_price":6}]}`: "listed twice",
		`{"group":"cam","win":1,"items":[{"item":"a","stop_price":0}]}`:                             "items[0] (a): stop_price must be a positive integer",
		`{"group":"cam","win":1,"items":[{"item":"a b","stop_price":5}]}`:                           "items[0]:",
		`{"group":"cam","win":1,"items":[{"item":"a","stop_price":5}],"x":1}`:                       "unknown field",
	} {
		code, got := do(http.MethodPost, "/api/groups", body)
		if code != http.StatusBadRequest || !strings.Contains(got, want) {
			t.Errorf("POST %s: %d %s, want 400 saying %q", body, code, got, want)
		}
	}
	if len(log.recs) != 0 {
		t.Errorf("refused groups wrote %d records", len(log.recs))
	}
	do(http.MethodPost, "/api/snipers", `{"item":"solo","stop_price":100}`)
	testkit.Eventually(t, 5*time.Second, func() bool { _, ok := view.Get("solo"); return ok }, "the solo sniper never showed")
	if code, got := do(http.MethodPost, "/api/groups", `{"group":"cam","win":1,"items":[{"item":"solo","stop_price":5}]}`); code != http.StatusConflict || !strings.Contains(got, "already sniped on its own") {
		t.Errorf("a group taking a solo sniper's item: %d %s, want 409", code, got)
	}
	if code, _ := do(http.MethodGet, "/api/groups/nobody", ""); code != http.StatusNotFound {
		t.Errorf("unknown group: %d, want 404", code)
	}
	if code, _ := do(http.MethodGet, "/api/groups", ""); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/groups: %d, want 405", code)
	}
}
