package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaseBucket is the JetStream KV bucket holding the lease of the active
// instance: the one key "active", whose value names the holder.
const LeaseBucket = "SNIPER_ACTIVE"

const leaseKey = "active"

// DefaultLeaseTTL is how long a lease outlives its holder's last renewal:
// a standby takes over at most this long (plus one poll) after the active
// instance dies.
const DefaultLeaseTTL = 5 * time.Second

// ElectionConfig configures an Election.
type ElectionConfig struct {
	// Instance names this instance; it must differ between instances
	// sharing a log. An instance that finds the lease under its own name
	// (it restarted within the TTL) takes it back at once.
	Instance string
	// TTL is DefaultLeaseTTL when 0.
	TTL time.Duration
	// Replicas of the bucket: as many as the stream's.
	Replicas int
	Logger   *slog.Logger
	// OnChange is called (from the election's goroutine) whenever the
	// election's Status changes.
	OnChange func()
}

// Election elects one active instance among those sharing the log. It is a
// lease in a JetStream KV bucket whose TTL is the lease's: the holder
// renews it with compare-and-set every TTL/4; an instance that finds the
// key gone (expired or resigned) creates it, and the server lets exactly
// one create win. The bucket is replicated like the stream, so the lease
// lives as long as the log does and is lost with its quorum.
//
// A lease alone cannot stop an instance that does not know it lost it
// (paused, cut off) from writing: that is the per-auction decision fence's
// job (see Log.Claim). The election only keeps the overlap short: a holder
// that could not renew for 3/4 of the TTL steps down before anyone else
// can take over.
type Election struct {
	kv     jetstream.KeyValue
	cfg    ElectionConfig
	logger *slog.Logger

	mu     sync.Mutex
	status ElectionStatus
}

// ElectionStatus is what an election knows now.
type ElectionStatus struct {
	// Active reports whether this instance holds the lease.
	Active bool
	// Holder names the instance holding the lease as last seen ("" when
	// nobody or not known).
	Holder string
	// Err is the last failure to reach the lease (nil: the last attempt
	// worked), e.g. no quorum for the bucket.
	Err error
	// Since is when Active last changed.
	Since time.Time
}

// Term is one tenure as the active instance.
type Term struct {
	Instance string
	// Revision is the lease's KV revision when it was won: it grows with
	// every renewal and every new holder, so it orders terms.
	Revision uint64
}

// NewElection creates or updates the lease bucket.
func (l *Log) NewElection(ctx context.Context, cfg ElectionConfig) (*Election, error) {
	if cfg.Instance == "" {
		return nil, errors.New("election: the instance needs a name")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultLeaseTTL
	}
	if cfg.TTL < 500*time.Millisecond {
		return nil, fmt.Errorf("election: lease TTL %s is below 500ms", cfg.TTL)
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var kv jetstream.KeyValue
	err := createPatiently(ctx, "bucket "+LeaseBucket, cfg.Logger, func(ctx context.Context) error {
		var err error
		kv, err = l.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      LeaseBucket,
			Description: "Which sniper instance is active (a lease renewed by its holder)",
			History:     1,
			TTL:         cfg.TTL,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create or update the lease bucket %s: %w", LeaseBucket, err)
	}
	return &Election{kv: kv, cfg: cfg, logger: cfg.Logger.With("component", "election", "instance", cfg.Instance)}, nil
}

// Status is what the election knows now.
func (e *Election) Status() ElectionStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status
}

func (e *Election) update(f func(*ElectionStatus)) {
	e.mu.Lock()
	before := e.status
	f(&e.status)
	if e.status.Active != before.Active {
		e.status.Since = time.Now()
	}
	changed := e.status.Active != before.Active || e.status.Holder != before.Holder || (e.status.Err == nil) != (before.Err == nil)
	e.mu.Unlock()
	if changed && e.cfg.OnChange != nil {
		e.cfg.OnChange()
	}
}

// Run campaigns until ctx ends. Each time this instance wins the lease it
// calls lead with a context that ends when the lease is lost (taken, or
// not renewed in time) or ctx ends; Run waits for lead to return before it
// campaigns again, and when ctx ends it resigns (deletes the lease) after
// lead returned, so that a standby takes over at once.
func (e *Election) Run(ctx context.Context, lead func(ctx context.Context, term Term)) error {
	for {
		rev, err := e.acquire(ctx)
		if err != nil {
			return nil // ctx ended while campaigning
		}
		e.update(func(s *ElectionStatus) { s.Active, s.Holder, s.Err = true, e.cfg.Instance, nil })
		e.logger.Info("this instance is active", "revision", rev)
		termCtx, endTerm := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			lead(termCtx, Term{Instance: e.cfg.Instance, Revision: rev})
		}()
		rev = e.hold(termCtx, rev)
		endTerm()
		<-done
		e.update(func(s *ElectionStatus) { s.Active = false })
		if ctx.Err() != nil {
			e.resign(ctx, rev)
			return nil
		}
		e.logger.Warn("this instance is standby again")
	}
}

// pollEvery is how often a standby looks at the lease: a fifth of the TTL,
// so a takeover comes at most TTL/5 after the lease expired.
func (e *Election) pollEvery() time.Duration { return max(e.cfg.TTL/5, 100*time.Millisecond) }

// acquire returns once this instance holds the lease, with its revision.
func (e *Election) acquire(ctx context.Context) (uint64, error) {
	tick := time.NewTicker(e.pollEvery())
	defer tick.Stop()
	for {
		rev, holder, err := e.try(ctx)
		if err == nil && holder == e.cfg.Instance {
			return rev, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if err != nil {
			if e.Status().Err == nil {
				e.logger.Warn("cannot reach the lease; no instance can become active until it can", "error", err)
			}
			e.update(func(s *ElectionStatus) { s.Err, s.Holder = err, "" })
		} else {
			if st := e.Status(); st.Holder != holder || st.Err != nil {
				e.logger.Info("standby: another instance is active", "active", holder)
			}
			e.update(func(s *ElectionStatus) { s.Err, s.Holder = nil, holder })
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
	}
}

// try takes the lease if nobody holds it or this instance held it before
// (a restart within the TTL), and returns its revision and holder.
func (e *Election) try(ctx context.Context) (uint64, string, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.TTL)
	defer cancel()
	entry, err := e.kv.Get(ctx, leaseKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err := e.kv.Create(ctx, leaseKey, []byte(e.cfg.Instance))
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, "", nil // another instance won it; the next look tells who
		}
		if err != nil {
			return 0, "", fmt.Errorf("create the lease: %w", err)
		}
		return rev, e.cfg.Instance, nil
	case err != nil:
		return 0, "", fmt.Errorf("read the lease: %w", err)
	case string(entry.Value()) == e.cfg.Instance:
		rev, err := e.kv.Update(ctx, leaseKey, []byte(e.cfg.Instance), entry.Revision())
		if err != nil {
			return 0, "", fmt.Errorf("take back this instance's lease: %w", err)
		}
		return rev, e.cfg.Instance, nil
	}
	return entry.Revision(), string(entry.Value()), nil
}

// hold renews the lease until it is lost or ctx ends, and returns its last
// revision.
func (e *Election) hold(ctx context.Context, rev uint64) uint64 {
	renew := time.NewTicker(e.cfg.TTL / 4)
	defer renew.Stop()
	// The server stamps a renewal no earlier than it was sent: it expires
	// no earlier than sent+TTL. Stepping down at sent+3/4 TTL leaves a
	// quarter of the TTL for the work to stop before a standby can start.
	safeFor := e.cfg.TTL * 3 / 4
	renewed := time.Now()
	for {
		select {
		case <-ctx.Done():
			return rev
		case <-renew.C:
		}
		sent := time.Now()
		rctx, cancel := context.WithDeadline(ctx, renewed.Add(safeFor))
		next, err := e.kv.Update(rctx, leaseKey, []byte(e.cfg.Instance), rev)
		if err != nil && isWrongLastSequence(err) {
			// Either another instance holds it now, or an earlier renewal
			// was stored though its answer was lost.
			if entry, gerr := e.kv.Get(rctx, leaseKey); gerr == nil && string(entry.Value()) == e.cfg.Instance {
				next, err = entry.Revision(), nil
			} else if gerr == nil {
				cancel()
				e.logger.Error("the lease was taken by another instance; stepping down", "active", string(entry.Value()))
				e.update(func(s *ElectionStatus) { s.Holder, s.Err = string(entry.Value()), nil })
				return rev
			}
		}
		cancel()
		if err == nil {
			rev, renewed = next, sent
			if e.Status().Err != nil {
				e.update(func(s *ElectionStatus) { s.Err = nil })
			}
			continue
		}
		if ctx.Err() != nil {
			return rev
		}
		e.update(func(s *ElectionStatus) { s.Err = fmt.Errorf("renew the lease: %w", err) })
		if time.Since(renewed) >= safeFor {
			e.logger.Error("cannot renew the lease in time; stepping down", "last_renewed", time.Since(renewed).Round(time.Millisecond), "error", err)
			e.update(func(s *ElectionStatus) { s.Holder = "" })
			return rev
		}
		e.logger.Warn("lease renewal failed; retrying", "error", err)
	}
}

// resign deletes the lease if this instance still holds it at rev.
func (e *Election) resign(ctx context.Context, rev uint64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.TTL/2)
	defer cancel()
	if err := e.kv.Delete(ctx, leaseKey, jetstream.LastRevision(rev)); err != nil {
		e.logger.Warn("could not resign the lease; a standby takes over when it expires", "error", err)
		return
	}
	e.update(func(s *ElectionStatus) { s.Holder = "" })
	e.logger.Info("resigned the lease")
}
