package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// machine describes where the bench runs: cores, CPU, kernel and the
// filesystem the data dirs are on (fsync on tmpfs would be free).
func machine(dataRoot string) string {
	cpu := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
		f.Close()
	}
	kernel := "?"
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		kernel = utsString(u.Release[:])
	}
	return fmt.Sprintf("nproc %d, %s, Linux %s, data dirs on %s (%s)", runtime.NumCPU(), cpu, kernel, fsType(dataRoot), dataRoot)
}

func utsString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

// fsType finds the mount holding dir in /proc/mounts.
func fsType(dir string) string {
	dir, _ = filepath.Abs(dir)
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "?"
	}
	best, typ := "", "?"
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/") || mp == "/") && len(mp) >= len(best) {
			best, typ = mp, f[2]
		}
	}
	return typ
}

// versions names what was measured: Go, nats-server and nats.go as go.mod
// resolves them, Prosody, the nats CLI.
func versions(root, natsBin string) string {
	mod := func(path string) string {
		out, err := exec.Command("go", "list", "-C", root, "-m", "-f", "{{.Version}}", path).Output()
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(string(out))
	}
	prosody := "?"
	if out, err := exec.Command("prosodyctl", "about").CombinedOutput(); err == nil || len(out) > 0 {
		for _, line := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(line, "Prosody "); ok && v != "" && v[0] >= '0' && v[0] <= '9' {
				prosody = strings.TrimSpace(line)
				break
			}
		}
	}
	cli := "?"
	if out, err := exec.Command(natsBin, "--version").CombinedOutput(); err == nil {
		cli = strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("%s, nats-server %s and nats.go %s (go.mod), %s (stock network settings: Nagle on), nats CLI %s",
		runtime.Version(), mod("github.com/nats-io/nats-server/v2"), mod("github.com/nats-io/nats.go"), prosody, cli)
}

// moduleRoot is the directory of the sniper module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the sniper module (run from the repository)")
	}
	return filepath.Dir(gomod), nil
}

// natsCLI finds the nats CLI: the flag, then PATH, then $(go env GOPATH)/bin.
func natsCLI(flagValue string) (string, error) {
	if flagValue != "" {
		return exec.LookPath(flagValue)
	}
	if p, err := exec.LookPath("nats"); err == nil {
		return p, nil
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "nats")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("the nats CLI is not installed: run scripts/install-deps.sh (go install github.com/nats-io/natscli/nats@v0.5.1)")
}
