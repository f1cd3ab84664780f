package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sniper/testkit"
)

// natsCLI finds the `nats` binary: on PATH, else in $(go env GOPATH)/bin.
// Operators inspect the log with it, so its absence fails the test.
func natsCLI(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	var dirs []string
	if gp := os.Getenv("GOPATH"); gp != "" {
		dirs = append(dirs, filepath.SplitList(gp)...)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		dirs = append(dirs, filepath.SplitList(strings.TrimSpace(string(out)))...)
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "bin", "nats")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	t.Fatalf("the nats CLI is not installed (not on PATH, not in $(go env GOPATH)/bin); install it with\n\tgo install github.com/nats-io/natscli/nats@v0.5.1")
	return ""
}

// runNATS runs the nats CLI against server, isolated from the user's
// saved contexts, and returns its stdout.
func runNATS(t *testing.T, cli, server string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, append([]string{"--server", server}, args...)...)
	cfg := t.TempDir()
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+cfg, "HOME="+cfg, "NATS_CONTEXT=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nats %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

func TestNATSCLIInspectsTheEmbeddedLog(t *testing.T) {
	cli := natsCLI(t)
	a := startApp(t, t.TempDir())
	const item = "item-54321"
	wantStatus(t, post(t, a, item, 1100), http.StatusCreated)
	url := a.NATSURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("NATSURL() = %q, want a loopback nats:// URL", url)
	}

	// stream info: the one stream holds every subject under sniper.>.
	out := runNATS(t, cli, url, "stream", "info", "SNIPER", "--json")
	var info struct {
		Config struct {
			Name     string   `json:"name"`
			Subjects []string `json:"subjects"`
		} `json:"config"`
		State struct {
			Messages uint64 `json:"messages"`
		} `json:"state"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("stream info --json is not JSON: %v\n%s", err, out)
	}
	if info.Config.Name != "SNIPER" || !slices.Equal(info.Config.Subjects, []string{"sniper.>"}) {
		t.Fatalf("stream info: name %q subjects %v, want SNIPER on [sniper.>]\n%s", info.Config.Name, info.Config.Subjects, out)
	}
	if info.State.Messages < 2 {
		t.Fatalf("stream info: %d messages, want at least the start and the decision to join\n%s", info.State.Messages, out)
	}

	// stream subjects: each kind of fact has its own subject.
	out = runNATS(t, cli, url, "stream", "subjects", "SNIPER", "--json")
	var subjects map[string]uint64
	if err := json.Unmarshal(out, &subjects); err != nil {
		t.Fatalf("stream subjects --json is not a subject->count map: %v\n%s", err, out)
	}
	for _, s := range []string{"sniper." + item + ".cmd.start", "sniper." + item + ".dec.join"} {
		if subjects[s] != 1 {
			t.Fatalf("stream subjects: %s has %d messages, want 1\n%s", s, subjects[s], out)
		}
	}

	// stream get 1: the start command, its payload readable JSON.
	out = runNATS(t, cli, url, "stream", "get", "SNIPER", "1", "--json")
	var msg struct {
		Subject string `json:"subject"`
		Seq     uint64 `json:"seq"`
		Data    string `json:"data"`
	}
	if err := json.Unmarshal(out, &msg); err != nil {
		t.Fatalf("stream get --json is not JSON: %v\n%s", err, out)
	}
	if msg.Subject != "sniper."+item+".cmd.start" || msg.Seq != 1 {
		t.Fatalf("stream get SNIPER 1: subject %q seq %d, want sniper.%s.cmd.start at 1\n%s", msg.Subject, msg.Seq, item, out)
	}
	data := []byte(msg.Data)
	if dec, err := base64.StdEncoding.DecodeString(msg.Data); err == nil {
		data = dec
	}
	var start struct {
		Type      string `json:"type"`
		Item      string `json:"item"`
		StopPrice int64  `json:"stop_price"`
	}
	if !bytes.Contains(data, []byte(`"stop_price"`)) {
		t.Fatalf("stream get SNIPER 1: data %q does not mention stop_price", data)
	}
	if err := json.Unmarshal(data, &start); err != nil || start.Type != "start" || start.Item != item || start.StopPrice != 1100 {
		t.Fatalf("stream get SNIPER 1: data %s, want the start command for %s at 1100 (%v)", data, item, err)
	}

	// The CLI's connections did the app no harm.
	wantStatus(t, get(t, a, "/api/snipers/"+item), http.StatusOK)
}

// TestNATSCLIGuide runs the rest of the README's inspection guide: the
// consumer report, a live feed of states, and stream view, which pages
// interactively and so runs under tmux.
func TestNATSCLIGuide(t *testing.T) {
	cli := natsCLI(t)
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Fatalf("tmux not installed (apt-get install -y tmux): %v", err)
	}
	a := startApp(t, t.TempDir())
	url := a.NATSURL()
	const item = "item-guide"
	wantStatus(t, post(t, a, item, 1100), http.StatusCreated)

	// One reader per follower of the log, whatever the number of auctions.
	report := string(runNATS(t, cli, url, "consumer", "report", "SNIPER"))
	for _, want := range []string{"inputs_", "notify_", "projection_"} {
		if !strings.Contains(report, want) {
			t.Fatalf("consumer report lacks %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, item) {
		t.Fatalf("consumer report has a consumer for %s; consumers must not grow with auctions:\n%s", item, report)
	}

	// nats sub as a live feed: it sees the decision of a stop made after
	// it subscribed.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sub := exec.CommandContext(ctx, cli, "--server", url, "sub", "sniper.*.dec.>", "--count", "1")
	feed := &lockedBuffer{}
	sub.Stdout, sub.Stderr = feed, feed
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return strings.Contains(feed.String(), "Subscribing") },
		"nats sub never said it subscribed: %s", feed)
	wantStatus(t, do(t, http.MethodDelete, a.HTTPURL()+"/api/snipers/"+item, "", nil), http.StatusOK)
	if err := sub.Wait(); err != nil {
		t.Fatalf("nats sub: %v\n%s", err, feed.String())
	}
	if !strings.Contains(feed.String(), `"state":"Stopped"`) {
		t.Fatalf("nats sub did not show the Stopped decision:\n%s", feed.String())
	}

	// stream view pages in a terminal: run it in a tmux pane and read it.
	// The pane must outlive the command (which may end once it has shown
	// everything), or there is no screen left to read: hence the sleep.
	session := fmt.Sprintf("sniper-view-%d", time.Now().UnixNano())
	cmdline := fmt.Sprintf("HOME=%s %s --server %s stream view SNIPER --subject 'sniper.%s.>' 2>&1; sleep 30", t.TempDir(), cli, url, item)
	if out, err := exec.Command(tmux, "new-session", "-d", "-s", session, "-x", "200", "-y", "50", cmdline).CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(tmux, "kill-session", "-t", session).Run() })
	screen := func() string {
		out, _ := exec.Command(tmux, "capture-pane", "-p", "-t", session).Output()
		return string(out)
	}
	var shown string
	testkit.Eventually(t, 15*time.Second, func() bool {
		shown = screen()
		return strings.Contains(shown, "sniper."+item+".cmd.start") && strings.Contains(shown, `"stop_price":1100`)
	}, "stream view never showed the start command; screen:\n%s", &shown)
}

// lockedBuffer collects a child process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
