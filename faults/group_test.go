package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"sniper/testkit"
)

// A snipe group (three items, win one) killed between the two commits of
// one input (the holder's Losing is in the log, the slot handed on is
// not): the restarted sniper settles the group at start and makes the
// missing decision, so the slot moves on once, nothing bids twice, and
// exactly one item is won.
func TestAGroupKilledBetweenItsCommits(t *testing.T) {
	p := testkit.StartProsody(t)
	if err := p.Register(testkit.SniperUser, testkit.SniperPassword); err != nil {
		t.Fatal(err)
	}
	sniperJID := testkit.SniperJID(p)
	items := []string{"grp-a", "grp-b", "grp-c"}
	auctions := map[string]*testkit.FakeAuctionServer{}
	for _, item := range items {
		auctions[item] = testkit.NewFakeAuctionServer(t, p, item)
	}
	dataDir := t.TempDir()
	args := []string{"--data-dir", dataDir, "--fsync", "always", "--xmpp-addr", p.Addr(), "--xmpp-jid", sniperJID, "--xmpp-tls", "skip-verify"}
	launch := func(env ...string) *testkit.SniperProcess {
		proc := testkit.LaunchSniper(t, args, append([]string{"SNIPER_XMPP_PASSWORD=" + testkit.SniperPassword}, env...)...)
		if err := proc.WaitServing(60 * time.Second); err != nil {
			t.Fatal(err)
		}
		waitReady(t, proc)
		return proc
	}
	proc := launch("SNIPER_TEST_FAULT=between-group-commits:1")
	ctx := context.Background()
	body := `{"group":"g","win":1,"items":[{"item":"grp-a","stop_price":1000},{"item":"grp-b","stop_price":1000},{"item":"grp-c","stop_price":1000}]}`
	if status, err := proc.Post(ctx, "/api/groups", body); err != nil || status != 201 {
		t.Fatalf("join the group: %d %v", status, err)
	}
	for _, item := range items {
		auctions[item].HasReceivedJoinRequestFrom(sniperJID)
	}
	other := "other@" + p.Domain()
	auctions["grp-a"].ReportPrice(500, 50, other)
	auctions["grp-a"].HasReceivedBid(550, sniperJID)
	auctions["grp-b"].ReportPrice(600, 50, other)
	auctions["grp-c"].ReportPrice(700, 50, other)
	state := func(item string) string {
		var v struct{ State string }
		if err := proc.Get(ctx, "/api/snipers/"+item, &v); err != nil {
			return "?"
		}
		return v.State
	}
	testkit.Eventually(t, testkit.WaitTimeout, func() bool { return state("grp-b") == "Waiting" && state("grp-c") == "Waiting" }, "b and c never waited")

	// grp-a outbid beyond its stop: its Losing is committed, then the
	// process dies before grp-b's decision to take the slot and bid.
	auctions["grp-a"].ReportPrice(1000, 50, other)
	select {
	case <-proc.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the sniper never reached the fault between the group's commits")
	}
	if f := proc.Logged("test fault: killing the process"); len(f) != 1 || f[0]["point"] != "between-group-commits" {
		t.Fatalf("died without the fault: %v\n%s", f, proc.LogTail(20))
	}
	if n := auctions["grp-b"].CountAllBids(); n != 0 {
		t.Fatalf("grp-b bid before the crash: the kill was not between the commits")
	}

	proc = launch()
	auctions["grp-b"].HasReceivedBid(650, sniperJID)
	auctions["grp-b"].ReportPrice(650, 50, sniperJID)
	testkit.Eventually(t, testkit.WaitTimeout, func() bool { return state("grp-b") == "Winning" }, "grp-b never led")
	auctions["grp-b"].AnnounceClosed()
	testkit.Eventually(t, testkit.WaitTimeout, func() bool {
		return state("grp-b") == "Won" && state("grp-a") == "Stopped" && state("grp-c") == "Stopped"
	}, "the group never ended with grp-b Won and the others Stopped")
	got := fmt.Sprint(auctions["grp-a"].CountAllBids(), auctions["grp-b"].CountAllBids(), auctions["grp-c"].CountAllBids())
	if got != "1 1 0" {
		t.Errorf("bids on the wire (a b c): %s, want 1 1 0", got)
	}
}
