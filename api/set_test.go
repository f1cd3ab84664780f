package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"sniper/api"
	"sniper/messages"
	"sniper/testkit"
)

// TestChangeTheStopPrice: PATCH raises a Losing sniper's limit (it bids
// at once), refuses to go below a standing bid or to touch an ended
// sniper (409 saying why), resumes a Stopped one, and each change is a
// cmd.set in the history.
func TestChangeTheStopPrice(t *testing.T) {
	log, view := newFakes(t)
	h := (&api.Server{Log: log, View: view, Logger: testkit.Logger(t), CommandTimeout: 5 * time.Second}).Handler()
	do := func(method, path, body string) (int, api.View, string) {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var v api.View
		_ = json.Unmarshal(rec.Body.Bytes(), &v)
		return rec.Code, v, rec.Body.String()
	}
	price := func(item string, current, inc int64, fromSniper bool) {
		t.Helper()
		if _, err := log.Append(context.Background(), messages.Subject(item, messages.KindIn, messages.TypePrice),
			messages.NewPrice(item, current, inc, "other", fromSniper)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(item string, ok func(api.View) bool) api.View {
		t.Helper()
		var v api.View
		testkit.Eventually(t, 5*time.Second, func() bool {
			_, v, _ = do(http.MethodGet, "/api/snipers/"+item, "")
			return ok(v)
		}, "%s never got there; last %+v", item, &v)
		return v
	}

	if code, _, body := do(http.MethodPatch, "/api/snipers/nobody", `{"stop_price":10}`); code != http.StatusNotFound {
		t.Errorf("unknown sniper: %d %s, want 404", code, body)
	}
	do(http.MethodPost, "/api/snipers", `{"item":"item-1","stop_price":1100}`)
	price("item-1", 1000, 200, false)
	waitFor("item-1", func(v api.View) bool { return v.State == "Losing" })
	for _, bad := range []string{`{"stop_price":0}`, `{"stop_price":"1300"}`, `{}`, `{"stop_price":12.5}`} {
		if code, _, body := do(http.MethodPatch, "/api/snipers/item-1", bad); code != http.StatusBadRequest || !strings.Contains(body, `"error"`) {
			t.Errorf("PATCH %s: %d %s, want 400 with an error", bad, code, body)
		}
	}
	code, v, body := do(http.MethodPatch, "/api/snipers/item-1", `{"stop_price":1300}`)
	if code != http.StatusOK || v.State != "Bidding" || v.LastBid != 1200 || v.StopPrice != 1300 {
		t.Fatalf("raise while Losing: %d %s, want 200 Bidding 1200 at 1300", code, body)
	}
	code, _, body = do(http.MethodPatch, "/api/snipers/item-1", `{"stop_price":1199}`)
	if code != http.StatusConflict || !strings.Contains(body, "a bid of 1200 standing") {
		t.Errorf("below the standing bid: %d %s, want 409 saying why", code, body)
	}
	if code, v, body := do(http.MethodPatch, "/api/snipers/item-1", `{"stop_price":1200}`); code != http.StatusOK || v.StopPrice != 1200 {
		t.Errorf("down to the standing bid: %d %s, want 200", code, body)
	}

	do(http.MethodDelete, "/api/snipers/item-1", "")
	price("item-1", 1250, 25, false)
	waitFor("item-1", func(v api.View) bool { return v.State == "Stopped" && v.LastPrice == 1250 })
	code, v, body = do(http.MethodPatch, "/api/snipers/item-1", `{"stop_price":2000}`)
	if code != http.StatusOK || v.State != "Bidding" || v.LastBid != 1275 {
		t.Fatalf("resume: %d %s, want 200 Bidding 1275 (the last price followed while stopped)", code, body)
	}

	if _, err := log.Append(context.Background(), messages.Subject("item-1", messages.KindIn, messages.TypeClose), messages.NewClose("item-1")); err != nil {
		t.Fatal(err)
	}
	waitFor("item-1", func(v api.View) bool { return v.State == "Lost" })
	code, _, body = do(http.MethodPatch, "/api/snipers/item-1", `{"stop_price":5000}`)
	if code != http.StatusConflict || !strings.Contains(body, "has ended (Lost)") {
		t.Errorf("after the end: %d %s, want 409 saying it ended", code, body)
	}
	code, _, body = do(http.MethodPut, "/api/snipers/item-1", `{}`)
	if code != http.StatusMethodNotAllowed || !strings.Contains(body, "PATCH") {
		t.Errorf("PUT: %d %s, want 405 naming PATCH", code, body)
	}

	sets := 0
	for _, rec := range mustHistory(t, log, "item-1") {
		if strings.HasSuffix(rec, ".cmd.set") {
			sets++
		}
	}
	if sets != 3 {
		t.Errorf("%d cmd.set in the history, want 3 (the refused ones never reached the log)", sets)
	}
}

func mustHistory(t *testing.T, log api.Log, item string) []string {
	t.Helper()
	recs, err := log.History(context.Background(), item)
	if err != nil {
		t.Fatal(err)
	}
	var subjects []string
	for _, r := range recs {
		subjects = append(subjects, r.Subject)
	}
	return subjects
}
