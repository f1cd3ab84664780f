package testkit

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestProsodyStartRegisterRestart(t *testing.T) {
	p := StartProsody(t)
	if err := p.Register("alice", "secret"); err != nil {
		t.Fatalf("register: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addr := p.Addr()
	if err := p.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if p.Addr() != addr {
		t.Fatalf("restart moved from %s to %s", addr, p.Addr())
	}
	c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
	if err != nil {
		t.Fatalf("dial after restart: %v", err)
	}
	c.Close()
	if tail := p.LogTail(50); strings.Count(tail, "Activated service 'c2s'") != 2 {
		t.Fatalf("want two starts in the log:\n%s", tail)
	}
}

func TestProsodyNotInstalled(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := NewProsody(t.TempDir()); !errors.Is(err, ErrProsodyNotInstalled) {
		t.Fatalf("NewProsody without prosody on PATH = %v, want ErrProsodyNotInstalled", err)
	}
}
