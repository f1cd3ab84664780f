package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// reexecEnv makes the test binary act as the sniper binary: the end-to-end
// test runs `sniper run` as a real process without a separate go build.
const reexecEnv = "SNIPER_TEST_REEXEC_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(reexecEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// clearSniperEnv unsets every SNIPER_ variable for the test, so the
// developer's environment cannot change what the tests see.
func clearSniperEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "SNIPER_") {
			t.Setenv(name, "") // restored when the test ends
			os.Unsetenv(name)
		}
	}
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func wantMentions(t *testing.T, what, text string, words ...string) {
	t.Helper()
	for _, w := range words {
		if !strings.Contains(text, w) {
			t.Errorf("%s does not mention %q:\n%s", what, w, text)
		}
	}
}

func TestHelp(t *testing.T) {
	clearSniperEnv(t)
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, out, errOut := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("sniper %v: exit %d, want 0 (stderr %s)", args, code, errOut)
		}
		wantMentions(t, "sniper "+strings.Join(args, " "), out, "Usage:", "sniper run", "--data-dir", "SNIPER_", "help run")
	}
	// The service's help lists every flag as --name and its variable.
	for _, args := range [][]string{{"help", "run"}, {"run", "--help"}, {"run", "-h"}} {
		code, out, errOut := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("sniper %v: exit %d, want 0 (stderr %s)", args, code, errOut)
		}
		if errOut != "" {
			t.Errorf("sniper %v wrote to stderr: %s", args, errOut)
		}
		wantMentions(t, "sniper "+strings.Join(args, " "), out,
			"--data-dir", "--nats-url", "--nats-listen", "--http", "--fsync",
			"SNIPER_", "SNIPER_DATA_DIR", "SNIPER_NATS_URL", "SNIPER_HTTP")
	}
}

// `sniper version` names the build; a binary built in a git checkout
// also names its revision (the test binary has none stamped).
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, errOut := runCLI(t, args...)
		if code != 0 || errOut != "" {
			t.Fatalf("sniper %v: exit %d, stderr %q", args, code, errOut)
		}
		if !strings.HasPrefix(out, "sniper ") || !strings.Contains(out, runtime.Version()) || strings.Count(out, "\n") != 1 {
			t.Errorf("sniper %v = %q, want one line: sniper <version> [revision] %s", args, out, runtime.Version())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	clearSniperEnv(t)
	cases := []struct {
		args []string
		want string
	}{
		{nil, "Usage:"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"help", "bogus"}, `unknown command "bogus"`},
		{[]string{"run", "--bogus"}, "bogus"},
		{[]string{"run", "extra"}, `unexpected argument "extra"`},
		{[]string{"run", "--fsync", "sometimes"}, "--fsync must be 'always' or a positive duration"},
		{[]string{"run", "--fsync", "-1s"}, "--fsync"},
		{[]string{"run", "--fsync", "0s"}, "--fsync"},
		{[]string{"run", "--replicas", "three"}, "replicas"},
		{[]string{"run", "--log-level", "loud"}, "--log-level"},
		{[]string{"run", "--log-format", "xml"}, "--log-format"},
	}
	for _, c := range cases {
		code, out, errOut := runCLI(t, c.args...)
		if code != 2 {
			t.Errorf("sniper %v: exit %d, want 2 (stdout %q, stderr %q)", c.args, code, out, errOut)
			continue
		}
		if !strings.Contains(errOut, c.want) {
			t.Errorf("sniper %v: stderr %q does not say %q", c.args, errOut, c.want)
		}
	}
}

// newRunFlags declares flags as `sniper run` does, for parseFlags.
func newRunFlags() (*flag.FlagSet, map[string]*string) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	v := map[string]*string{}
	for _, name := range []string{"data-dir", "nats-url", "nats-listen", "http", "fsync"} {
		v[name] = fs.String(name, "default-"+name, "")
	}
	return fs, v
}

func TestParseFlagsReadsTheEnvironmentAndFlagsWin(t *testing.T) {
	clearSniperEnv(t)
	t.Setenv("SNIPER_HTTP", "127.0.0.1:9999")
	t.Setenv("SNIPER_DATA_DIR", "/from/env")
	t.Setenv("SNIPER_NATS_URL", "nats://env:4222")
	t.Setenv("SNIPER_NATS_LISTEN", "127.0.0.1:5222")

	fs, v := newRunFlags()
	if err := parseFlags(fs, []string{"--data-dir", "/from/flag", "--nats-url=nats://flag:4222"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"http":        "127.0.0.1:9999",   // env
		"nats-listen": "127.0.0.1:5222",   // env
		"data-dir":    "/from/flag",       // flag beats env
		"nats-url":    "nats://flag:4222", // flag beats env
		"fsync":       "default-fsync",    // neither
	}
	for name, w := range want {
		if got := *v[name]; got != w {
			t.Errorf("--%s = %q, want %q", name, got, w)
		}
	}
	// An empty variable is a value too (e.g. SNIPER_NATS_URL= for the
	// embedded server).
	t.Setenv("SNIPER_NATS_URL", "")
	fs, v = newRunFlags()
	if err := parseFlags(fs, nil); err != nil {
		t.Fatal(err)
	}
	if *v["nats-url"] != "" {
		t.Errorf("SNIPER_NATS_URL= gave --nats-url %q, want empty", *v["nats-url"])
	}
}

func TestBadEnvironmentValueIsAUsageError(t *testing.T) {
	clearSniperEnv(t)
	t.Setenv("SNIPER_FSYNC", "sometimes")
	code, _, errOut := runCLI(t, "run")
	if code != 2 || !strings.Contains(errOut, "--fsync") {
		t.Fatalf("SNIPER_FSYNC=sometimes: exit %d, stderr %q; want exit 2 naming --fsync", code, errOut)
	}
	t.Setenv("SNIPER_FSYNC", "always")
	t.Setenv("SNIPER_REPLICAS", "many")
	code, _, errOut = runCLI(t, "run")
	if code != 2 || !strings.Contains(errOut, "SNIPER_REPLICAS") {
		t.Fatalf("SNIPER_REPLICAS=many: exit %d, stderr %q; want exit 2 naming SNIPER_REPLICAS", code, errOut)
	}
	// A flag beats a bad variable, as it beats a good one.
	os.Unsetenv("SNIPER_REPLICAS")
	t.Setenv("SNIPER_FSYNC", "sometimes")
	code, _, errOut = runCLI(t, "run", "--fsync", "always", "--log-level", "loud")
	if code != 2 || !strings.Contains(errOut, "--log-level") || strings.Contains(errOut, "fsync") {
		t.Fatalf("--fsync over a bad SNIPER_FSYNC: exit %d, stderr %q; want only the --log-level error", code, errOut)
	}
}

// TestRunServesAndStopsOnSIGTERM runs `sniper run` as its own process on
// a temp dir and free ports, uses the API, and stops it with SIGTERM.
func TestRunServesAndStopsOnSIGTERM(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(exe, "run",
		"--data-dir", dir,
		"--nats-listen", "127.0.0.1:0",
		"--log-format", "json")
	// The HTTP address comes from the environment, as a deployment would
	// set it.
	clearSniperEnv(t)
	// GORACE: a -race binary otherwise sleeps a second before exiting.
	cmd.Env = append(os.Environ(), reexecEnv+"=1", "SNIPER_HTTP=127.0.0.1:0", "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var logMu sync.Mutex
	var logLines []string
	httpURL := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			logMu.Lock()
			logLines = append(logLines, line)
			logMu.Unlock()
			var rec struct {
				Msg string `json:"msg"`
				URL string `json:"url"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "http api listening" {
				select {
				case httpURL <- rec.URL:
				default:
				}
			}
		}
	}()
	logs := func() string {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Join(logLines, "\n")
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		<-scanned // all output read before Wait closes the pipe
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-finished:
		default:
			_ = cmd.Process.Kill()
			<-finished
		}
	})

	var base string
	select {
	case base = <-httpURL:
	case err := <-exited:
		t.Fatalf("sniper run exited before serving: %v\n%s", err, logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("sniper run did not log its HTTP address within 30s\n%s", logs())
	}
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("HTTP API at %q, want loopback (SNIPER_HTTP ignored?)", base)
	}

	client := &http.Client{Timeout: 10 * time.Second}
	res, err := client.Post(base+"/api/snipers", "application/json", strings.NewReader(`{"item":"item-54321","stop_price":1100}`))
	if err != nil {
		t.Fatalf("POST /api/snipers: %v\n%s", err, logs())
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated || !strings.Contains(string(body), `"state":"Joining"`) {
		t.Fatalf("POST /api/snipers: %d %s, want 201 Joining", res.StatusCode, body)
	}

	began := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("sniper run after SIGTERM: %v, want exit code 0\n%s", err, logs())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("sniper run still running 10s after SIGTERM\n%s", logs())
	}
	t.Logf("stopped %s after SIGTERM", time.Since(began).Round(time.Millisecond))
	if !strings.Contains(logs(), `"msg":"sniper stopped"`) {
		t.Fatalf("no \"sniper stopped\" log line:\n%s", logs())
	}
}
