package xmppclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/jid"
)

// Conn keeps one Session alive: Run dials, and redials with backoff
// whenever the session dies. mellium has no reconnect of its own.
type Conn struct {
	cfg     Config
	handler func(from jid.JID, body string)
	log     *slog.Logger

	running atomic.Bool

	mu   sync.Mutex
	sess *Session      // nil while disconnected
	up   chan struct{} // closed while a session is live; replaced when it goes
}

// New returns a Conn for cfg; nothing happens until Run. handler is given
// to every session (see Dial).
func New(cfg Config, handler func(from jid.JID, body string)) *Conn {
	return &Conn{
		cfg:     cfg,
		handler: handler,
		log:     cfg.logger().With("jid", cfg.JID, "addr", cfg.Addr),
		up:      make(chan struct{}),
	}
}

// Up returns a channel that is closed while a session is live (now, or
// from when the next one comes up): how a sender waits for the connection
// instead of trying again and again.
func (c *Conn) Up() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

// Connected reports whether a session is live right now.
func (c *Conn) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess != nil
}

// Send sends body to `to` on the live session and returns nil once the
// server has processed it (see Session.Send). It returns an error
// wrapping ErrNotConnected when there is no live session, or when the
// session died during the send (the caller retries later); one wrapping
// ErrUndelivered, as Session.Send returned it, when the server bounced the
// message (the session stays up; the caller retries later too); or
// another error (ctx ended, say). After an error the message may or may
// not have arrived (after ErrUndelivered it has not): senders that need
// it there resend, at least once.
func (c *Conn) Send(ctx context.Context, to jid.JID, body string) error {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		return fmt.Errorf("xmppclient: send to %s: %w", to, ErrNotConnected)
	}
	if err := s.Send(ctx, to, body); err != nil {
		if errors.Is(err, ErrClosed) {
			return fmt.Errorf("%w: %w", ErrNotConnected, err)
		}
		return err
	}
	return nil
}

// Run connects and stays connected until ctx ends, then closes the
// session and returns nil. It returns at once with an error wrapping
// ErrAuth or ErrTLS when the server rejects the credentials or TLS:
// those do not heal by retrying. Any other failure is retried after an
// exponential, jittered delay. Run may be called only once.
func (c *Conn) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("xmppclient: Conn.Run called twice")
	}
	minB := orDefault(c.cfg.MinBackoff, DefaultMinBackoff)
	maxB := max(orDefault(c.cfg.MaxBackoff, DefaultMaxBackoff), minB)
	backoff := minB

	for {
		s, err := Dial(ctx, c.cfg, c.handler)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, ErrAuth) || errors.Is(err, ErrTLS) {
				c.log.Error("xmpp connect failed, not retrying", "err", err)
				return err
			}
			c.log.Warn("xmpp connect failed", "err", err)
			if c.cfg.OnDialFailed != nil {
				c.cfg.OnDialFailed(err)
			}
		} else {
			up := time.Now()
			c.setSession(s)
			c.log.Info("xmpp connected")
			c.notify(true)

			select {
			case <-ctx.Done():
				c.setSession(nil)
				_ = s.Close()
				c.log.Info("xmpp disconnected", "reason", "shutdown")
				c.notify(false)
				return nil
			case <-s.Done():
			}
			c.setSession(nil)
			_ = s.Close() // already dead: just waits for its goroutine
			c.log.Warn("xmpp disconnected", "err", s.Err())
			c.notify(false)
			// Only a session that lasted earns a quick redial: one that
			// dies at once (kicked on arrival, say) keeps backing off.
			if time.Since(up) >= maxB {
				backoff = minB
			}
		}

		delay := jitter(backoff)
		backoff = min(2*backoff, maxB)
		c.log.Info("xmpp reconnecting", "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (c *Conn) setSession(s *Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case s != nil && c.sess == nil:
		close(c.up)
	case s == nil && c.sess != nil:
		c.up = make(chan struct{})
	}
	c.sess = s
}

func (c *Conn) notify(up bool) {
	if c.cfg.OnStateChange != nil {
		c.cfg.OnStateChange(up)
	}
}

// jitter spreads redials over [d/2, d) so that many clients cut off
// together do not return together.
func jitter(d time.Duration) time.Duration {
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half)
}
