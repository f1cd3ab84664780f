package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The sniper under test is the real binary, run as a process and spoken
// to only through its outside contract: flags, the HTTP API, XMPP, the
// SNIPER stream on its NATS port, /proc.

// buildSniper builds ./cmd/sniper (no -race: this measures speed).
func buildSniper(root, dir string) (string, error) {
	bin := filepath.Join(dir, "sniper")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/sniper")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/sniper: %v\n%s", err, lastLines(string(out), 10))
	}
	return bin, nil
}

// sniperConfig says how to run one sniper process.
type sniperConfig struct {
	bin           string
	dataDir       string
	fsync         string // "always" or a duration
	xmppAddr      string
	auctionDomain string
	logPath       string
	// passivateAfter is --passivate-after (0: the sniper's default).
	passivateAfter time.Duration
	// Ports are kept across restarts of the same data dir.
	httpPort, natsPort int
}

// sniperProc is a running `sniper run`.
type sniperProc struct {
	cfg     sniperConfig
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	waitErr error
	url     string
	natsURL string
}

var (
	procsMu sync.Mutex
	procs   = map[*sniperProc]bool{} // alive, for the backstop in killAll
)

// launch starts the process without waiting for it to serve.
func launch(cfg sniperConfig) (*sniperProc, error) {
	var err error
	if cfg.httpPort == 0 {
		if cfg.httpPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	if cfg.natsPort == 0 {
		if cfg.natsPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	args := []string{"run",
		"--data-dir", cfg.dataDir,
		"--fsync", cfg.fsync,
		"--http", "127.0.0.1:" + strconv.Itoa(cfg.httpPort),
		"--nats-listen", "127.0.0.1:" + strconv.Itoa(cfg.natsPort),
		"--xmpp-addr", cfg.xmppAddr,
		"--xmpp-jid", sniperUser + "@" + domain + "/" + resource,
		"--xmpp-password", sniperPassword,
		"--xmpp-tls", "skip-verify",
		"--auction-domain", cfg.auctionDomain,
		"--log-level", "warn",
	}
	if cfg.passivateAfter > 0 {
		args = append(args, "--passivate-after", cfg.passivateAfter.String())
	}
	logf, err := os.OpenFile(cfg.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "=== sniperbench: %s %s\n", cfg.bin, strings.Join(args, " "))
	cmd := exec.Command(cfg.bin, args...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	// Dies with the bench, whatever happens to the bench.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &sniperProc{cfg: cfg, cmd: cmd, done: make(chan struct{}),
		url:     "http://127.0.0.1:" + strconv.Itoa(cfg.httpPort),
		natsURL: "nats://127.0.0.1:" + strconv.Itoa(cfg.natsPort)}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start sniper: %w", err)
	}
	procsMu.Lock()
	procs[p] = true
	procsMu.Unlock()
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		procsMu.Lock()
		delete(procs, p)
		procsMu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// startSniper launches the process and waits until it serves HTTP.
func startSniper(ctx context.Context, cfg sniperConfig) (*sniperProc, error) {
	p, err := launch(cfg)
	if err != nil {
		return nil, err
	}
	if err := p.waitServing(ctx, 60*time.Second); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

func (p *sniperProc) waitServing(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/healthz", nil)
		resp, err := shortClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("sniper exited before serving (%v)\n%s", p.waitErr, tail(p.cfg.logPath, 15))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sniper not serving %s after %s\n%s", p.url, timeout, tail(p.cfg.logPath, 15))
		}
	}
}

// stop asks for a clean shutdown (SIGTERM) and kills after 30 s.
func (p *sniperProc) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(30 * time.Second):
		p.kill()
		return errors.New("sniper did not stop within 30 s of SIGTERM; killed")
	}
}

func (p *sniperProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// killAll kills every sniper process still alive: the backstop after a
// stage that failed or overran.
func killAll() {
	procsMu.Lock()
	var alive []*sniperProc
	for p := range procs {
		alive = append(alive, p)
	}
	procsMu.Unlock()
	for _, p := range alive {
		p.kill()
	}
}

func (p *sniperProc) pid() int { return p.cmd.Process.Pid }

// procCPU is utime+stime of a process (all its threads), from /proc.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("bad /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// After the comm: state is field 3, utime 14, stime 15 (1-based).
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// procRSS is VmRSS in bytes.
func procRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// heapInuse reads go_memstats_heap_inuse_bytes from /metrics after a
// garbage collection (asked for through /debug/pprof/heap?gc=1), so that
// it counts what is live, not what is waiting to be collected.
func (p *sniperProc) heapInuse(ctx context.Context) (float64, bool) {
	if req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/debug/pprof/heap?gc=1", nil); err == nil {
		if resp, err := shortClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	v, err := p.metric(ctx, "go_memstats_heap_inuse_bytes")
	return v, err == nil && v > 0
}

var (
	shortClient = &http.Client{Timeout: 5 * time.Second}
	apiClient   = &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 16, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext},
	}
)

// sniperView is one sniper as GET /api/snipers shows it.
type sniperView struct {
	Item      string `json:"item"`
	State     string `json:"state"`
	LastPrice int64  `json:"last_price"`
	LastBid   int64  `json:"last_bid"`
}

// list is GET /api/snipers.
func (p *sniperProc) list(ctx context.Context) ([]sniperView, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/api/snipers", nil)
	resp, err := apiClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET /api/snipers: %s %s", resp.Status, b)
	}
	var out struct {
		Snipers []sniperView `json:"snipers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("GET /api/snipers: %w", err)
	}
	return out.Snipers, nil
}

// post is POST /api/snipers; it returns the status code.
func (p *sniperProc) post(ctx context.Context, item string, stop int64) (int, error) {
	body, _ := json.Marshal(map[string]any{"item": item, "stop_price": stop})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/api/snipers", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := apiClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusCreated, http.StatusOK, http.StatusAccepted:
		return resp.StatusCode, nil
	}
	return resp.StatusCode, fmt.Errorf("POST /api/snipers %s: %s %s", item, resp.Status, strings.TrimSpace(string(b)))
}

// waitListed polls GET /api/snipers until done(list) holds. It fails at
// the deadline, or earlier when progress (the count of done snipers)
// has not grown for stall.
func (p *sniperProc) waitListed(ctx context.Context, what string, every, stall, timeout time.Duration, progress func([]sniperView) (int, bool)) error {
	start := time.Now()
	best, bestAt := -1, time.Now()
	last := ""
	for {
		l, err := p.list(ctx)
		if err == nil {
			n, ok := progress(l)
			if ok {
				return nil
			}
			if n > best {
				best, bestAt = n, time.Now()
			}
			last = fmt.Sprintf("%d done", n)
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s: sniper exited (%v); %s\n%s", what, p.waitErr, last, tail(p.cfg.logPath, 10))
		case <-ctx.Done():
			return fmt.Errorf("%s: %w; %s", what, ctx.Err(), last)
		case <-time.After(every):
		}
		if time.Since(bestAt) > stall {
			return fmt.Errorf("%s: no progress for %s (%s after %s)", what, stall, last, time.Since(start).Round(time.Second))
		}
		if time.Since(start) > timeout {
			return fmt.Errorf("%s: not done within %s (%s)", what, timeout, last)
		}
	}
}

// cleanEnv drops SNIPER_* so that the bench's flags are the only settings.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SNIPER_") {
			env = append(env, kv)
		}
	}
	return env
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return "--- " + path + " ---\n" + lastLines(string(b), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// metric reads one sample of /metrics, by its full name with labels as
// the exposition writes them (e.g. `x{follower="outbound"}`); absent: 0.
func (p *sniperProc) metric(ctx context.Context, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/metrics", nil)
	resp, err := shortClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, sc.Err()
}

// waitOutboundIdle waits until the outbound bridge has read and finished
// every decision that sends something.
func (p *sniperProc) waitOutboundIdle(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		unread, err1 := p.metric(ctx, `sniper_follower_unread_messages{follower="outbound"}`)
		undone, err2 := p.metric(ctx, `sniper_follower_undone_messages{follower="outbound"}`)
		if err1 == nil && err2 == nil && unread == 0 && undone == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the outbound bridge still has %v unread and %v unsent decisions after %s", unread, undone, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
