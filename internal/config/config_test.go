package config

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newSet() (*flag.FlagSet, *string, *time.Duration, *string) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	items := fs.String("items", "3", "items")
	dur := fs.Duration("duration", time.Minute, "duration")
	file := fs.String("config", "", "config file")
	return fs, items, dur, file
}

// TestPrecedence: a flag beats the environment, which beats the file,
// which beats the default; each source is reported.
func TestPrecedence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(path, []byte("items = \"from-file\"\nduration = \"5s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := Loader{EnvPrefix: "HOUSE", FileFlag: "config"}
	t.Setenv("HOUSE_ITEMS", "from-env")
	fs, items, dur, _ := newSet()
	src, err := l.Parse(fs, []string{"--config", path})
	if err != nil {
		t.Fatal(err)
	}
	if *items != "from-env" || *dur != 5*time.Second {
		t.Errorf("items %q duration %v, want from-env and 5s", *items, *dur)
	}
	if src["items"] != (Source{FromEnv, "HOUSE_ITEMS"}) || src["duration"] != (Source{FromFile, path}) || src["config"].Kind != FromFlag {
		t.Errorf("sources %v", src)
	}
	fs, items, _, _ = newSet()
	if _, err := l.Parse(fs, []string{"--items", "from-flag", "--config", path}); err != nil || *items != "from-flag" {
		t.Errorf("items %q (%v), want the flag's", *items, err)
	}
}

// TestNoFileFlag: a loader without a FileFlag reads no file, even where
// the flag set has a flag of that name.
func TestNoFileFlag(t *testing.T) {
	l := Loader{EnvPrefix: "HOUSE"}
	fs, _, _, _ := newSet()
	if _, err := l.Parse(fs, []string{"--config", "/does/not/exist"}); err != nil {
		t.Fatalf("read a file it was not told to: %v", err)
	}
}

// TestErrorsNameTheirSource: a bad variable names itself, a bad key in
// the file names the file and suggests the key meant (the prefix, as
// someone pasting a variable name would write it, is dropped); a secret's
// value is never repeated.
func TestErrorsNameTheirSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(path, []byte("house_items = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := Loader{EnvPrefix: "HOUSE", FileFlag: "config", Env: map[string]string{"duration": "OTHER_DURATION"}}
	t.Setenv("OTHER_DURATION", "soon")
	fs, _, _, _ := newSet()
	_, err := l.Parse(fs, []string{"--config", path})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`OTHER_DURATION="soon"`, path, `unknown key "house_items"`, `did you mean "items"?`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	fs = flag.NewFlagSet("secret", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Int("db-password", 0, "")
	t.Setenv("HOUSE_DB_PASSWORD", "hunter2")
	if _, err := l.Parse(fs, nil); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v: want one that hides the secret", err)
	}
}

func TestPrintFlagsNamesTheVariable(t *testing.T) {
	l := Loader{EnvPrefix: "HOUSE", Env: map[string]string{"duration": "OTHER_DURATION"}}
	fs, _, _, _ := newSet()
	var b strings.Builder
	l.PrintFlags(&b, fs, "items", "duration")
	out := b.String()
	for _, want := range []string{"--items string", `(default "3")`, "[env HOUSE_ITEMS]", "[env OTHER_DURATION]"} {
		if !strings.Contains(out, want) {
			t.Errorf("help does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "--config") {
		t.Errorf("help lists a flag it was not asked for:\n%s", out)
	}
}
