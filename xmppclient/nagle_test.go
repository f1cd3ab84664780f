package xmppclient_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"sniper/testkit"
	"sniper/xmppclient"
)

// stallSignature is the median round trip above which TestClosedLoopNoAckStall
// fails. Not a tuning target: a healthy loop through Prosody on loopback
// takes 0.4-2 ms, one stuck behind Nagle and a delayed ACK ~40 ms or more.
const stallSignature = 30 * time.Millisecond

// TestClosedLoopNoAckStall runs the PRICE -> BID loop through Prosody as
// shipped (Nagle on): the auction sends a message, the sniper's handler
// answers with Send (message plus ping confirmation), and the auction sends
// the next one only when the answer arrived. Prosody's pong to the sniper
// is a small segment the sniper's kernel would ACK only after its delayed
// ACK timer (up to 40 ms); until then Nagle holds the next PRICE in Prosody.
// The session re-arms TCP_QUICKACK after every read (see quickAckConn), so
// the ACK leaves at once and the loop runs at network speed.
func TestClosedLoopNoAckStall(t *testing.T) {
	t.Parallel()
	p := testkit.StartProsody(t)
	// The test's premise: Prosody's network settings as Debian ships them.
	cfgText, err := os.ReadFile(p.ConfigPath())
	if err != nil {
		t.Fatalf("read prosody config: %v", err)
	}
	if strings.Contains(string(cfgText), "network_settings") || strings.Contains(string(cfgText), "nagle") {
		t.Fatalf("testkit's Prosody config changes network settings; test against the defaults:\n%s", cfgText)
	}

	account(t, p, "auction-loop", "auction-pw")
	account(t, p, "sniper", "sniper-pw")
	tlsCfg := func(full, pw string) xmppclient.Config {
		c := config(p, full, pw, xmppclient.TLSRequire, testkit.Logger(t))
		c.RootCAs = p.CertPool()
		return c
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bidErr := make(chan error, 1)
	var sniper *xmppclient.Session
	ready := make(chan struct{})
	sniper = dial(t, tlsCfg("sniper@localhost/Auction", "sniper-pw"), func(from jid.JID, body string) {
		<-ready
		price, ok := strings.CutPrefix(body, "PRICE ")
		if !ok {
			return
		}
		if err := sniper.Send(ctx, from, "BID "+price); err != nil {
			select {
			case bidErr <- err:
			default:
			}
		}
	})
	close(ready)
	auctionIn := newInbox()
	auction := dial(t, tlsCfg("auction-loop@localhost/Auction", "auction-pw"), auctionIn.handler)

	const warmup, rounds = 3, 50
	rtts := make([]time.Duration, 0, rounds)
	for i := range warmup + rounds {
		start := time.Now()
		send(t, auction, sniper.LocalJID().String(), fmt.Sprintf("PRICE %d", i))
		want := fmt.Sprintf("BID %d", i)
		for {
			var m msg
			select {
			case m = <-auctionIn:
			case err := <-bidErr:
				t.Fatalf("round %d: sniper's Send: %v", i, err)
			case <-time.After(wait):
				t.Fatalf("round %d: no %q within %s", i, want, wait)
			}
			if m.body == want {
				break
			}
			t.Logf("round %d: ignoring %q from %s", i, m.body, m.from)
		}
		if i >= warmup {
			rtts = append(rtts, time.Since(start))
		}
	}
	slices.Sort(rtts)
	median := rtts[len(rtts)/2]
	t.Logf("PRICE -> BID round trips over %d rounds: min %s, p50 %s, p90 %s, max %s",
		len(rtts), rtts[0], median, rtts[len(rtts)*9/10], rtts[len(rtts)-1])
	if median > stallSignature {
		t.Fatalf("median round trip %s > %s: the next stanza waits in Prosody behind Nagle for our delayed ACK", median, stallSignature)
	}
}
