package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNewRefusesWhatIsNotAnHTTPURL(t *testing.T) {
	for _, base := range []string{"", "ftp://x", "http://", "://"} {
		if _, err := New(base, ""); !errors.Is(err, ErrBadURL) {
			t.Errorf("New(%q): %v, want ErrBadURL", base, err)
		}
	}
	c, err := New(" 127.0.0.1:8080/ ", "")
	if err != nil || c.Base() != "http://127.0.0.1:8080" {
		t.Errorf("New(host:port) = %v, %v", c, err)
	}
}

func TestAnswersAndErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "Bearer tok" {
			http.Error(w, `{"error":"no token"}`, http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/api/snipers/item-1":
			fmt.Fprint(w, `{"item":"item-1","state":"Bidding","last_price":100,"last_bid":110,"stop_price":500,"input_seq":7}`)
		case "/api/snipers/gone":
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"no sniper for gone"}`)
		case "/api/snipers/broken":
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, "<html>proxy down</html>")
		case "/api/snipers":
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"item":"item-2","state":"Joining","stop_price":300}`)
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL, "tok")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v, err := c.Sniper(ctx, "item-1")
	if err != nil || v.State != "Bidding" || v.LastBid != 110 || v.InputSeq != 7 {
		t.Errorf("Sniper = %+v, %v", v, err)
	}
	_, err = c.Sniper(ctx, "gone")
	var ae *Error
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &ae) || ae.Message != "no sniper for gone" {
		t.Errorf("a 404: %v, want ErrNotFound with the API's message", err)
	}
	_, err = c.Sniper(ctx, "broken")
	if errors.Is(err, ErrNotFound) || err == nil || !strings.Contains(err.Error(), "502 Bad Gateway: <html>proxy down</html>") {
		t.Errorf("a 502 without JSON: %v", err)
	}
	a, err := c.Join(ctx, "item-2", 300)
	if err != nil || a.Status != http.StatusCreated || a.Sniper.Item != "item-2" || len(a.Raw) == 0 {
		t.Errorf("Join = %+v, %v", a, err)
	}
	anon, _ := New(srv.URL, "")
	if _, err := anon.Sniper(ctx, "item-1"); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Errorf("without the token: %v, want a 401", err)
	}
}

func TestUnreachableSaysSo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, _ := New(addr, "")
	_, err = c.Sniper(context.Background(), "x")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the sniper at http://"+addr+" (is 'sniper run' running?)") {
		t.Errorf("refused: %v", err)
	}
}

// TestWatchReconnects: events are handed over in order, a dropped stream
// is reported and reconnected, and a 4xx ends the watch with the API's
// message.
func TestWatchReconnects(t *testing.T) {
	var mu sync.Mutex
	conns := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns++
		n := conns
		mu.Unlock()
		if n == 3 {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"error":"token revoked"}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, ": keepalive\n\nevent: snapshot\ndata: {\"item\":\"i\",\ndata: \"n\":%d}\n\nevent: status\r\ndata: {}\r\n\r\n", n)
		// The handler returns: the stream ends, as a restart would end it.
	}))
	defer srv.Close()
	c, _ := New(srv.URL, "")
	var got []string
	opened, lost := 0, 0
	err := c.Watch(context.Background(), Watch{
		Opened: func() { opened++ },
		Event:  func(event string, data []byte) { got = append(got, event+" "+string(data)) },
		Lost:   func(err error, retry time.Duration) { lost++ },
	})
	if err == nil || err.Error() != "token revoked" {
		t.Errorf("Watch ended with %v, want the 403's message", err)
	}
	want := []string{"snapshot {\"item\":\"i\",\n\"n\":1}", "status {}", "snapshot {\"item\":\"i\",\n\"n\":2}", "status {}"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events %q\nwant %q", got, want)
	}
	if opened != 2 || lost != 2 {
		t.Errorf("opened %d, lost %d; want 2 and 2", opened, lost)
	}
}
