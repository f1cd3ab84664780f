package app

import (
	"context"
	"log/slog"
	"time"
)

// stack is what the app started, in order: Stop undoes it in the reverse
// order, as defer would, so the shutdown order is the start order read
// backwards (the HTTP server first, the NATS server last) and nothing
// started is left without an owner.
type stack struct {
	logger *slog.Logger
	steps  []step
}

type step struct {
	name string
	stop func(ctx context.Context)
}

// onStop registers how to stop a part that has just started.
func (p *stack) onStop(name string, stop func(ctx context.Context)) {
	p.steps = append(p.steps, step{name, stop})
}

// run starts run(ctx) in a goroutine the stack owns: stopping cancels its
// ctx and waits for it to return. An error it returns before that is
// handed to failed (the app's fatal channel), with its name.
func (p *stack) run(name string, run func(ctx context.Context) error, failed func(error)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := run(ctx); err != nil && ctx.Err() == nil && failed != nil {
			failed(&partError{name, err})
		}
	}()
	p.onStop(name, func(context.Context) {
		cancel()
		<-done
	})
}

// stop stops every part, the last started first; ctx bounds the parts
// that take one (the HTTP drain), each step logged with how long it took.
func (p *stack) stop(ctx context.Context) {
	for i := len(p.steps) - 1; i >= 0; i-- {
		s := p.steps[i]
		began := time.Now()
		s.stop(ctx)
		p.logger.Debug("stopped", "part", s.name, "took", time.Since(began).Round(time.Millisecond))
	}
	p.steps = nil
}

// partError is a part that ended on its own.
type partError struct {
	part string
	err  error
}

func (e *partError) Error() string { return e.part + ": " + e.err.Error() }
func (e *partError) Unwrap() error { return e.err }
