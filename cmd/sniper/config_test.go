package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sniper/internal/config"
)

// writeConfig writes a config file into a temp dir and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sniper.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// parseRun parses args with the flags of `sniper run`.
func parseRun(t *testing.T, args ...string) (*runOptions, config.Sources, error) {
	t.Helper()
	fs := flag.NewFlagSet("sniper run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o := runFlags(fs)
	src, err := loader.Parse(fs, args)
	return o, src, err
}

// configJSON is the output of `sniper config --json`.
type configJSON struct {
	ConfigFile string            `json:"config_file"`
	Values     map[string]any    `json:"values"`
	Sources    map[string]string `json:"sources"`
}

func sniperConfigJSON(t *testing.T, args ...string) configJSON {
	t.Helper()
	code, out, errOut := runCLI(t, append([]string{"config", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("sniper config --json %v: exit %d, stderr %s", args, code, errOut)
	}
	var c configJSON
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("sniper config --json %v: %v\n%s", args, err, out)
	}
	return c
}

// TestConfigPrecedence sets --http at one more level each time: the
// default, then the file, the environment and the command line, each
// winning over those before.
func TestConfigPrecedence(t *testing.T) {
	clearSniperEnv(t)
	file := writeConfig(t, `
http = "127.0.0.1:1001"
replicas = 3
checkpoint-every = "2s"
`)
	steps := []struct {
		name string
		env  bool
		args []string
		want string
		src  config.Source
	}{
		{"default", false, nil, "127.0.0.1:8080", config.Source{Kind: config.FromDefault}},
		{"file", false, []string{"--config", file}, "127.0.0.1:1001", config.Source{Kind: config.FromFile, Detail: file}},
		{"env", true, []string{"--config", file}, "127.0.0.1:1002", config.Source{Kind: config.FromEnv, Detail: "SNIPER_HTTP"}},
		{"flag", true, []string{"--config", file, "--http", "127.0.0.1:1003"}, "127.0.0.1:1003", config.Source{Kind: config.FromFlag}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.env {
				t.Setenv("SNIPER_HTTP", "127.0.0.1:1002")
			}
			o, src, err := parseRun(t, s.args...)
			if err != nil {
				t.Fatal(err)
			}
			if o.httpAddr != s.want || src["http"] != s.src {
				t.Errorf("http = %q from %v, want %q from %v", o.httpAddr, src["http"], s.want, s.src)
			}
			// The same through `sniper config`.
			c := sniperConfigJSON(t, s.args...)
			if c.Values["http"] != s.want || c.Sources["http"] != s.src.String() {
				t.Errorf("sniper config: http = %v from %q, want %q from %q", c.Values["http"], c.Sources["http"], s.want, s.src)
			}
		})
	}
	// The file's other keys, with their types; untouched keys keep their
	// defaults.
	o, src, err := parseRun(t, "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	if o.replicas != 3 || o.checkpointEvery != 2*time.Second || o.dataDir != "./sniper-data" {
		t.Errorf("replicas %d, checkpoint-every %s, data-dir %q; want 3, 2s from the file and the default data dir", o.replicas, o.checkpointEvery, o.dataDir)
	}
	if src["replicas"].Kind != config.FromFile || src["data-dir"].Kind != config.FromDefault || src[configFlag].Kind != config.FromFlag {
		t.Errorf("sources %v", src)
	}
}

func TestConfigFileFromSNIPER_CONFIG(t *testing.T) {
	clearSniperEnv(t)
	envFile := writeConfig(t, `data-dir = "/from/env/file"`)
	flagFile := writeConfig(t, `data-dir = "/from/flag/file"`)
	t.Setenv("SNIPER_CONFIG", envFile)
	o, src, err := parseRun(t)
	if err != nil {
		t.Fatal(err)
	}
	if o.dataDir != "/from/env/file" || src["data-dir"] != (config.Source{Kind: config.FromFile, Detail: envFile}) || src[configFlag] != (config.Source{Kind: config.FromEnv, Detail: "SNIPER_CONFIG"}) {
		t.Errorf("SNIPER_CONFIG: data-dir %q from %v, config from %v", o.dataDir, src["data-dir"], src[configFlag])
	}
	// --config beats SNIPER_CONFIG like any flag its variable.
	o, _, err = parseRun(t, "--config", flagFile)
	if err != nil {
		t.Fatal(err)
	}
	if o.dataDir != "/from/flag/file" {
		t.Errorf("--config over SNIPER_CONFIG: data-dir %q, want the flag's file's", o.dataDir)
	}
	c := sniperConfigJSON(t)
	if c.ConfigFile != envFile || c.Values["data-dir"] != "/from/env/file" {
		t.Errorf("sniper config with SNIPER_CONFIG: %+v", c)
	}
	// An empty SNIPER_CONFIG is no file.
	t.Setenv("SNIPER_CONFIG", "")
	if o, _, err = parseRun(t); err != nil || o.dataDir != "./sniper-data" {
		t.Errorf("SNIPER_CONFIG= : data-dir %q, %v", o.dataDir, err)
	}
}

// wantRunError runs `sniper run` (which must fail before starting
// anything) and checks its stderr mentions every word.
func wantRunError(t *testing.T, args []string, words ...string) string {
	t.Helper()
	code, out, errOut := runCLI(t, append([]string{"run"}, args...)...)
	if code != 2 {
		t.Fatalf("sniper run %v: exit %d, want 2 (stdout %q, stderr %q)", args, code, out, errOut)
	}
	wantMentions(t, "sniper run's error", errOut, words...)
	return errOut
}

func TestConfigFileErrors(t *testing.T) {
	clearSniperEnv(t)
	t.Run("unknown key", func(t *testing.T) {
		f := writeConfig(t, "data-dri = \"/x\"\nhttp = \"127.0.0.1:0\"\n")
		wantRunError(t, []string{"--config", f}, f, `unknown key "data-dri"`, `did you mean "data-dir"?`)
		// Also when a flag sets what the key meant: a typo is a typo.
		wantRunError(t, []string{"--config", f, "--data-dir", "/y"}, `unknown key "data-dri"`)
	})
	t.Run("suggestions", func(t *testing.T) {
		for key, want := range map[string]string{
			"replica = 1":               `did you mean "replicas"?`,
			"SNIPER_DATA_DIR = \"x\"":   `did you mean "data-dir"?`,
			"xmpp_addr = \"x\"":         `did you mean "xmpp-addr"?`,
			"[xmpp]\naddr = \"h:5222\"": `did you mean "xmpp-addr"?`,
			"colour = \"blue\"":         `unknown key "colour"`,
		} {
			errOut := wantRunError(t, []string{"--config", writeConfig(t, key)}, want)
			if strings.Contains(key, "colour") && strings.Contains(errOut, "did you mean") {
				t.Errorf("%s: suggested something: %s", key, errOut)
			}
		}
	})
	t.Run("config in the file", func(t *testing.T) {
		f := writeConfig(t, `config = "other.toml"`)
		wantRunError(t, []string{"--config", f}, f, `"config" cannot be set in a config file`)
	})
	t.Run("wrong types", func(t *testing.T) {
		for text, want := range map[string][]string{
			`replicas = "three"`:        {"replicas", "want an integer", `"three"`},
			`replicas = 1.5`:            {"replicas", "want an integer", "a float"},
			`data-dir = 3`:              {"data-dir", "want a string", "an integer"},
			`checkpoint-every = 5`:      {"checkpoint-every", "want a duration", "an integer"},
			`checkpoint-every = "soon"`: {"checkpoint-every", "invalid duration"},
			`http = ["a", "b"]`:         {"http", "want a string", "an array"},
			`nats-url = 1979-05-27`:     {"nats-url", "want a string", "date"},
		} {
			f := writeConfig(t, text)
			wantRunError(t, []string{"--config", f}, append(want, f)...)
		}
		// Checked even where a flag overrides it.
		f := writeConfig(t, `replicas = "three"`)
		wantRunError(t, []string{"--config", f, "--replicas", "1"}, "replicas", "want an integer")
	})
	t.Run("not TOML", func(t *testing.T) {
		f := writeConfig(t, "data-dir: /x\n")
		wantRunError(t, []string{"--config", f}, f, "line 1")
	})
	t.Run("missing file", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nope.toml")
		wantRunError(t, []string{"--config", missing}, missing, "does not exist")
		t.Setenv("SNIPER_CONFIG", missing)
		wantRunError(t, nil, missing, "does not exist")
		code, _, errOut := runCLI(t, "config")
		if code != 2 || !strings.Contains(errOut, missing) {
			t.Errorf("sniper config with a missing SNIPER_CONFIG: exit %d, stderr %q", code, errOut)
		}
	})
	t.Run("bad value from the file", func(t *testing.T) {
		f := writeConfig(t, `fsync = "sometimes"`)
		wantRunError(t, []string{"--config", f}, "--fsync must be 'always' or a positive duration")
		code, _, errOut := runCLI(t, "config", "--config", f)
		if code != 2 || !strings.Contains(errOut, "--fsync") || !strings.Contains(errOut, "file "+f) {
			t.Errorf("sniper config with a bad fsync in the file: exit %d, stderr %q; want 2 naming --fsync and the file", code, errOut)
		}
	})
}

func TestConfigMasksSecrets(t *testing.T) {
	clearSniperEnv(t)
	const fileSecret, envSecret = "file-s3cr3t-pw", "env-s3cr3t-pw"
	f := writeConfig(t, fmt.Sprintf("xmpp-password = %q\ndata-dir = \"/d\"\n", fileSecret))
	check := func(what, out, errOut string) {
		t.Helper()
		for _, secret := range []string{fileSecret, envSecret} {
			if strings.Contains(out+errOut, secret) {
				t.Errorf("%s shows the secret %q:\n%s%s", what, secret, out, errOut)
			}
		}
	}
	// Text: from the file, then from the environment.
	for _, env := range []bool{false, true} {
		if env {
			t.Setenv("SNIPER_XMPP_PASSWORD", envSecret)
		}
		code, out, errOut := runCLI(t, "config", "--config", f)
		if code != 0 {
			t.Fatalf("sniper config: exit %d, stderr %s", code, errOut)
		}
		check("sniper config", out, errOut)
		wantSrc := "file " + f
		if env {
			wantSrc = "env SNIPER_XMPP_PASSWORD"
		}
		wantMentions(t, "sniper config", out, `#xmpp-password = "********"`, wantSrc, `data-dir = "/d"`)

		c := sniperConfigJSON(t, "--config", f)
		data, _ := json.Marshal(c)
		check("sniper config --json", string(data), "")
		if c.Values["xmpp-password"] != config.Masked || c.Sources["xmpp-password"] != wantSrc {
			t.Errorf("sniper config --json: xmpp-password %v from %q, want %q from %q", c.Values["xmpp-password"], c.Sources["xmpp-password"], config.Masked, wantSrc)
		}
	}
	// Also on the command line, and in error messages.
	code, out, errOut := runCLI(t, "config", "--xmpp-password", envSecret, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	check("sniper config --xmpp-password", out, errOut)
	bad := writeConfig(t, fmt.Sprintf("xmpp-password = [%q]\n", fileSecret))
	code, out, errOut = runCLI(t, "config", "--config", bad)
	if code != 2 {
		t.Fatalf("a password that is an array: exit %d", code)
	}
	check("the error for a badly typed password", out, errOut)

	// Unset, a secret shows as empty, and says so.
	os.Unsetenv("SNIPER_XMPP_PASSWORD")
	_, out, _ = runCLI(t, "config")
	wantMentions(t, "sniper config without a password", out, `xmpp-password = ""`, "(not set)")

	// Every secret flag `sniper run` has, now or later (--http-token).
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	runFlags(fs)
	var secrets []string
	fs.VisitAll(func(f *flag.Flag) {
		if config.IsSecret(f.Name) {
			value := "s3cr3t-of-" + f.Name
			secrets = append(secrets, value)
			t.Setenv(envName(f.Name), value)
		}
	})
	if len(secrets) == 0 {
		t.Fatal("sniper run has no secret flag: isSecret finds none")
	}
	for _, args := range [][]string{{"config"}, {"config", "--json"}} {
		_, out, errOut := runCLI(t, args...)
		for _, secret := range secrets {
			if strings.Contains(out+errOut, secret) {
				t.Errorf("sniper %v shows %q:\n%s", args, secret, out)
			}
		}
	}

	for name, secret := range map[string]bool{"xmpp-password": true, "http-token": true, "token": true, "notify-secret": true, "notify-url": false, "data-dir": false, "http": false} {
		if config.IsSecret(name) != secret {
			t.Errorf("config.IsSecret(%q) = %v", name, !secret)
		}
	}
}

// TestConfigOutputIsAConfigFile saves `sniper config`'s output and reads
// it back: the same configuration.
func TestConfigOutputIsAConfigFile(t *testing.T) {
	clearSniperEnv(t)
	f := writeConfig(t, `
data-dir = "/tmp/with \"quotes\", back\\slash and ünïcødé"
replicas = 3
checkpoint-every = "1m30s"
log-format = "json"
`)
	t.Setenv("SNIPER_NATS_URL", "nats://a:4222,nats://b:4222")
	t.Setenv("SNIPER_XMPP_PASSWORD", "pw") // config.Masked: its line is commented out
	args := []string{"--config", f, "--fsync", "250ms", "--xmpp-tls", "off"}
	code, out, errOut := runCLI(t, append([]string{"config"}, args...)...)
	if code != 0 {
		t.Fatalf("sniper config: exit %d, stderr %s", code, errOut)
	}
	lines := 0
	for line := range strings.Lines(out) {
		if strings.Contains(line, " = ") {
			lines++
		}
	}
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	runFlags(fs)
	want := -1 // every flag of `sniper run` but --config
	fs.VisitAll(func(*flag.Flag) { want++ })
	if lines != want {
		t.Errorf("%d key = value lines, want %d:\n%s", lines, want, out)
	}
	saved := writeConfig(t, out)
	orig := sniperConfigJSON(t, args...)
	again := sniperConfigJSON(t, "--config", saved)
	if !reflect.DeepEqual(orig.Values, again.Values) {
		t.Errorf("read back:\n%v\nwant\n%v\nsaved file:\n%s", again.Values, orig.Values, out)
	}
	if orig.Values["data-dir"] != "/tmp/with \"quotes\", back\\slash and ünïcødé" || orig.Values["replicas"] != 3.0 || orig.Values["fsync"] != "250ms" {
		t.Errorf("values %v", orig.Values)
	}
	// Read back, everything but what the environment still sets comes
	// from the saved file.
	for name, src := range again.Sources {
		want := "file " + saved
		if name == "xmpp-password" || name == "nats-url" {
			want = "env " + envName(name)
		}
		if src != want {
			t.Errorf("read back, %s comes from %q, want %q", name, src, want)
		}
	}
}

func TestConfigHelp(t *testing.T) {
	clearSniperEnv(t)
	for _, args := range [][]string{{"help", "config"}, {"config", "--help"}} {
		code, out, errOut := runCLI(t, args...)
		if code != 0 || errOut != "" {
			t.Fatalf("sniper %v: exit %d, stderr %q", args, code, errOut)
		}
		wantMentions(t, "sniper "+strings.Join(args, " "), out, "--config", "--json", "SNIPER_CONFIG", "TOML", "********", "beats")
	}
	_, out, _ := runCLI(t, "run", "--help")
	wantMentions(t, "sniper run --help", out, "--config FILE", "SNIPER_CONFIG", "TOML")
	_, out, _ = runCLI(t, "help")
	wantMentions(t, "sniper help", out, "sniper config", "--config", "SNIPER_CONFIG")
	code, _, errOut := runCLI(t, "config", "extra")
	if code != 2 || !strings.Contains(errOut, `unexpected argument "extra"`) {
		t.Errorf("sniper config extra: exit %d, stderr %q", code, errOut)
	}
	// --json is an option of `sniper config`, not a setting.
	f := writeConfig(t, "json = true\n")
	code, _, errOut = runCLI(t, "config", "--config", f)
	if code != 2 || !strings.Contains(errOut, `unknown key "json"`) {
		t.Errorf("json in the file: exit %d, stderr %q", code, errOut)
	}
}

// TestRunUsesTheConfigFile starts the real service in this process with
// its data dir, HTTP address and log format from a config file, and
// reaches the API there.
func TestRunUsesTheConfigFile(t *testing.T) {
	clearSniperEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dataDir := filepath.Join(t.TempDir(), "data")
	f := writeConfig(t, fmt.Sprintf(`
data-dir = %q
http = %q
nats-listen = "127.0.0.1:0"
log-format = "json"
`, dataDir, addr))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"run", "--config", f}, stdout, stderr) }()

	base := "http://" + addr
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := client.Get(base + "/api/snipers")
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `"snipers"`) {
				t.Fatalf("GET %s/api/snipers: %d %s", base, res.StatusCode, body)
			}
			break
		}
		select {
		case code := <-done:
			t.Fatalf("sniper run exited %d before serving on %s:\n%s", code, addr, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing serving on %s (the file's http) within 30s:\n%s", addr, stderr.String())
		}
	}
	if entries, err := os.ReadDir(dataDir); err != nil || len(entries) == 0 {
		t.Errorf("the file's data-dir %s: %d entries, %v", dataDir, len(entries), err)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("sniper run: exit %d after the context ended\n%s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("sniper run still running 15s after its context ended")
	}
	logs := stderr.String()
	if !strings.Contains(logs, `"msg":"sniper running"`) {
		t.Errorf("logs are not JSON (the file's log-format):\n%s", logs)
	}
}

// TestRunRefusesBadNotifySettings: --notify-url must be an absolute
// http(s) URL and --notify-on final or all, for run and config alike.
func TestRunRefusesBadNotifySettings(t *testing.T) {
	for _, args := range [][]string{
		{"--notify-url", "ftp://hooks.example.com/x"},
		{"--notify-url", "/relative"},
		{"--notify-on", "some"},
	} {
		for _, verb := range []string{"run", "config"} {
			code, _, errOut := runCLI(t, append([]string{verb, "--data-dir", t.TempDir()}, args...)...)
			if code == 0 || !strings.Contains(errOut, args[0]) {
				t.Errorf("sniper %s %v: exit %d, stderr %q; want an error naming %s", verb, args, code, errOut, args[0])
			}
		}
	}
}
