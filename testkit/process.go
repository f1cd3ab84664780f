package testkit

import (
	"errors"
	"sniper/api/client"

	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// SniperBinary builds cmd/sniper once per test process and returns its
// path: the fault tests run the real binary, not the wiring in-process.
func SniperBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		dir, err := os.MkdirTemp("", "sniper-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "sniper")
		cmd := exec.Command("go", "build", "-race", "-o", buildPath, "./cmd/sniper")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/sniper: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// SniperProcess is a running `sniper run` child process.
type SniperProcess struct {
	t   testing.TB
	cmd *exec.Cmd
	URL string // the HTTP API, once started

	clientMu sync.Mutex
	client   *client.Client
	LogPath  string

	done     chan struct{}
	exitCode int
	started  chan string

	mu    sync.Mutex
	lines []map[string]any
}

// StartSniperProcess runs the binary with `run`, args and extra env (the
// process gets --log-format json and --http 127.0.0.1:0 unless args say
// otherwise), and waits until it serves its API; it fails the test if the
// process exits first.
func StartSniperProcess(t testing.TB, args []string, env ...string) *SniperProcess {
	t.Helper()
	p := LaunchSniper(t, args, env...)
	if err := p.WaitServing(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	return p
}

// LaunchSniper starts the process without waiting for it: for tests in
// which it may be killed while starting. See WaitServing.
func LaunchSniper(t testing.TB, args []string, env ...string) *SniperProcess {
	t.Helper()
	bin := SniperBinary(t)
	logFile, err := os.CreateTemp(t.TempDir(), "sniper-*.log")
	if err != nil {
		t.Fatal(err)
	}
	full := append([]string{"run", "--log-format", "json", "--log-level", "debug", "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0"}, args...)
	cmd := exec.Command(bin, full...)
	cmd.Env = append(cleanEnv(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = logFile
	p := &SniperProcess{t: t, cmd: cmd, LogPath: logFile.Name(), done: make(chan struct{}), started: make(chan string, 1)}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sniper: %v", err)
	}
	go p.readLogs(stderr, logFile, p.started)
	go func() {
		_ = cmd.Wait()
		p.exitCode = cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.exitCode = -int(ws.Signal())
		}
		logFile.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.Kill() })
	return p
}

// WaitServing waits until the process serves its API (then URL is set), or
// says why not: it exited, or did not start in time.
func (p *SniperProcess) WaitServing(timeout time.Duration) error {
	select {
	case url := <-p.started:
		p.URL = url
		return nil
	case <-p.done:
		return fmt.Errorf("sniper exited (%d) before serving; log:\n%s", p.exitCode, p.LogTail(40))
	case <-time.After(timeout):
		return fmt.Errorf("sniper did not start within %s; log:\n%s", timeout, p.LogTail(40))
	}
}

// cleanEnv is the test's environment without SNIPER_ settings, so a
// developer's shell cannot change what the tests run.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SNIPER_") {
			env = append(env, kv)
		}
	}
	return env
}

func (p *SniperProcess) readLogs(r io.Reader, copyTo io.Writer, started chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		_, _ = copyTo.Write(append(line, '\n'))
		var rec map[string]any
		if json.Unmarshal(line, &rec) != nil {
			continue
		}
		p.mu.Lock()
		p.lines = append(p.lines, rec)
		p.mu.Unlock()
		if rec["msg"] == "sniper running" {
			if url, ok := rec["http"].(string); ok {
				select {
				case started <- url:
				default:
				}
			}
		}
	}
}

// Logged returns the structured log lines whose msg is msg.
func (p *SniperProcess) Logged(msg string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, l := range p.lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// LogTail returns the last n lines of the process's log.
func (p *SniperProcess) LogTail(n int) string {
	data, _ := os.ReadFile(p.LogPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *SniperProcess) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Signal sends sig.
func (p *SniperProcess) Signal(sig os.Signal) { _ = p.cmd.Process.Signal(sig) }

// Done is closed when the process has exited.
func (p *SniperProcess) Done() <-chan struct{} { return p.done }

// ExitCode is the exit status once Done (negative: killed by that signal).
func (p *SniperProcess) ExitCode() int {
	<-p.done
	return p.exitCode
}

// Exited reports whether the process has ended.
func (p *SniperProcess) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Client is a client of the process's API; an error before WaitServing
// has found where it serves.
func (p *SniperProcess) Client() (*client.Client, error) {
	if p.URL == "" {
		return nil, errors.New("the sniper is not serving its API (yet)")
	}
	p.clientMu.Lock()
	defer p.clientMu.Unlock()
	if p.client == nil || p.client.Base() != p.URL {
		c, err := client.New(p.URL, "")
		if err != nil {
			return nil, err
		}
		p.client = c // one, so that its connections are reused
	}
	return p.client, nil
}

// Get fetches path from the API and decodes the JSON answer (a 2xx) into v.
func (p *SniperProcess) Get(ctx context.Context, path string, v any) error {
	c, err := p.Client()
	if err != nil {
		return err
	}
	_, err = c.GetJSON(ctx, path, v)
	return err
}

// Post sends a JSON body and returns the status code.
func (p *SniperProcess) Post(ctx context.Context, path, body string) (int, error) {
	c, err := p.Client()
	if err != nil {
		return 0, err
	}
	status, _, err := c.Send(ctx, http.MethodPost, path, []byte(body))
	return status, err
}
