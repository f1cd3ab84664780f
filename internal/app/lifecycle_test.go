package app

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
)

// TestStackStopsInReverse: parts stop last started first; a goroutine's
// ctx ends when its turn comes, not before; one that fails on its own is
// reported with its name.
func TestStackStopsInReverse(t *testing.T) {
	s := stack{logger: slog.New(slog.DiscardHandler)}
	var order []string
	s.onStop("server", func(context.Context) { order = append(order, "server") })
	s.run("reader", func(ctx context.Context) error {
		<-ctx.Done()
		order = append(order, "reader")
		return ctx.Err() // ended by stop: not a failure
	}, func(err error) { t.Errorf("a stopped part reported %v", err) })
	s.onStop("http", func(context.Context) { order = append(order, "http") })
	s.stop(context.Background())
	if want := []string{"http", "reader", "server"}; !slices.Equal(order, want) {
		t.Errorf("stopped %v, want %v", order, want)
	}

	boom := errors.New("boom")
	failed := make(chan error, 1)
	s.run("watcher", func(context.Context) error { return boom }, func(err error) { failed <- err })
	err := <-failed
	if !errors.Is(err, boom) || err.Error() != "watcher: boom" {
		t.Errorf("reported %v, want watcher: boom", err)
	}
	s.stop(context.Background())
}
