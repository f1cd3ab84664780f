package main

import (
	"sniper/api"
	"sniper/auction"

	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"sniper/testkit"
)

// TestDemoWithoutAnXMPPServer is the check that `make run` needs
// nothing installed: the real binary, run without --xmpp-addr, starts the
// embedded auction house; a sniper joined through the API on one of the
// items it announces bids against the simulated bidders and ends Won or
// Lost, all within 30 s of starting the process. The demo auctions are
// shortened with SNIPER_DEMO_DURATION.
func TestDemoWithoutAnXMPPServer(t *testing.T) {
	testkit.SniperBinary(t) // build first: the 30 s are the process's
	began := time.Now()
	p := testkit.StartSniperProcess(t, []string{"--data-dir", t.TempDir()}, "SNIPER_DEMO_DURATION=6s", "SNIPER_DEMO_SEED=1")
	t.Logf("serving %s after start", time.Since(began).Round(time.Millisecond))

	// Logged before "sniper running", so already read.
	open := p.Logged("demo auctions open")
	if len(open) != 1 {
		t.Fatalf("%d 'demo auctions open' lines, want 1; log:\n%s", len(open), p.LogTail(40))
	}
	var items []string
	for _, it := range open[0]["items"].([]any) {
		items = append(items, it.(string))
	}
	hint, _ := open[0]["hint"].(string)
	if len(items) < 3 || !strings.Contains(hint, "curl") || !strings.Contains(hint, items[0]) || !strings.Contains(hint, p.URL) {
		t.Fatalf("open items %v, hint %q: want several items and a curl hint for the first at %s", items, hint, p.URL)
	}
	for _, line := range p.Logged("auction open") {
		if _, ok := line["closes_at"]; !ok {
			t.Fatalf("'auction open' without its closing time: %v", line)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	item := items[0]
	code, err := p.Post(ctx, "/api/snipers", fmt.Sprintf(`{"item":%q,"stop_price":100000}`, item))
	if err != nil || code != http.StatusCreated {
		t.Fatalf("join %s: %d %v", item, code, err)
	}

	var seen []auction.State
	var last api.View
	// Polling the API, as a page would.
	testkit.Eventually(t, 30*time.Second-time.Since(began), func() bool {
		if err := p.Get(ctx, "/api/snipers/"+item, &last); err != nil {
			t.Fatalf("GET sniper: %v", err)
		}
		if len(seen) == 0 || seen[len(seen)-1] != last.State {
			seen = append(seen, last.State)
		}
		return last.State == "Won" || last.State == "Lost"
	}, "no Won or Lost within 30 s of starting; states seen %v, last %+v", &seen, &last)
	t.Logf("%s: states %v, final %+v, %s after start", item, seen, last, time.Since(began).Round(time.Millisecond))
	if !slices.Contains(seen, "Bidding") && !slices.Contains(seen, "Winning") {
		t.Fatalf("went %v: never Bidding or Winning", seen)
	}

	// The history shows real bidding: the sniper's BIDs and the auction's
	// PRICEs, simulated bidders' among them.
	var hist struct {
		Events []api.Event `json:"events"`
	}
	if err := p.Get(ctx, "/api/snipers/"+item+"/events", &hist); err != nil {
		t.Fatal(err)
	}
	var bids, prices, simulated int
	for _, e := range hist.Events {
		switch e.Type {
		case "bid":
			bids++
		case "price":
			prices++
			var price struct {
				Bidder     string `json:"bidder"`
				FromSniper bool   `json:"from_sniper"`
			}
			if err := json.Unmarshal(e.Data, &price); err != nil {
				t.Fatalf("price event %s: %v", e.Data, err)
			}
			if !price.FromSniper && price.Bidder != "house" {
				simulated++
			}
		}
	}
	if bids == 0 || prices < 2 || simulated == 0 {
		t.Fatalf("history has %d bids, %d prices (%d from simulated bidders): want real bidding\n%v", bids, prices, simulated, hist.Events)
	}

	// It stops cleanly, the embedded house and server with it.
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after SIGTERM; log:\n%s", p.LogTail(20))
	}
	if c := p.ExitCode(); c != 0 {
		t.Fatalf("exit %d after SIGTERM; log:\n%s", c, p.LogTail(20))
	}
	if len(p.Logged("auction house closed")) != 1 {
		t.Fatalf("auction house not closed on shutdown; log:\n%s", p.LogTail(20))
	}
}

func TestDemoUsageErrors(t *testing.T) {
	clearSniperEnv(t)
	code, _, errOut := runCLI(t, "run", "--auction-domain", "auctions.example")
	if code != 2 || !strings.Contains(errOut, "--auction-domain") || !strings.Contains(errOut, "--xmpp-addr") {
		t.Errorf("--auction-domain without --xmpp-addr: exit %d, stderr %q; want 2 explaining why", code, errOut)
	}
	code, _, errOut = runCLI(t, "run", "--xmpp-jid", "sniper@localhost")
	if code != 2 || !strings.Contains(errOut, "--xmpp-jid") {
		t.Errorf("bare --xmpp-jid: exit %d, stderr %q; want 2", code, errOut)
	}
	t.Setenv(envDemoDuration, "soon")
	code, _, errOut = runCLI(t, "run")
	if code != 2 || !strings.Contains(errOut, envDemoDuration) {
		t.Errorf("%s=soon: exit %d, stderr %q; want 2 naming it", envDemoDuration, code, errOut)
	}
}
