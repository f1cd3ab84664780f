package main

// Settings come from four places. For each flag, the first of these that
// sets it wins:
//
//  1. the command line (--data-dir /x)
//  2. the environment (SNIPER_DATA_DIR=/x)
//  3. the TOML file named by --config or SNIPER_CONFIG (data-dir = "/x"),
//     for commands that have a --config flag
//  4. the flag's default
//
// parseFlags does this for every command; `sniper config` prints the
// outcome for `sniper run`, with where each value came from.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"sniper/internal/cliflags"
)

// configFlag names the flag that names the config file.
const configFlag = "config"

// masked stands for a secret's value in `sniper config`.
const masked = "********"

// source says where a flag's value came from.
type source struct {
	kind   string // sourceFlag, sourceEnv, sourceFile or sourceDefault
	detail string // the variable (env) or the file (file)
}

const (
	sourceFlag    = "flag"
	sourceEnv     = "env"
	sourceFile    = "file"
	sourceDefault = "default"
)

func (s source) String() string {
	if s.detail == "" {
		return s.kind
	}
	return s.kind + " " + s.detail
}

// isSecret reports whether a flag holds a secret, never to be shown.
func isSecret(flagName string) bool {
	return strings.Contains(flagName, "password") || strings.Contains(flagName, "token")
}

// parseFlags parses args, then fills every flag not given on the command
// line from SNIPER_<NAME> in the environment and, if fs has a --config
// flag naming a file (on the command line or as SNIPER_CONFIG), every flag
// still not set from that TOML file.
func parseFlags(fs *flag.FlagSet, args []string) error {
	_, err := parseFlagsFrom(fs, args, nil)
	return err
}

// parseFlagsFrom is parseFlags, also returning where each flag's value
// came from. The config file cannot set the flags in notInFile (nor
// --config itself): they are options of the command, not settings.
func parseFlagsFrom(set *flag.FlagSet, args []string, notInFile map[string]bool) (map[string]source, error) {
	if err := set.Parse(args); err != nil {
		return nil, err
	}
	if set.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", set.Arg(0))
	}
	src := map[string]source{}
	set.VisitAll(func(f *flag.Flag) { src[f.Name] = source{kind: sourceDefault} })
	set.Visit(func(f *flag.Flag) { src[f.Name] = source{kind: sourceFlag} })
	var errs []error
	set.VisitAll(func(f *flag.Flag) {
		if src[f.Name].kind == sourceFlag {
			return
		}
		env := envName(f.Name)
		v, ok := os.LookupEnv(env)
		if !ok {
			return
		}
		if err := set.Set(f.Name, v); err != nil {
			if isSecret(f.Name) {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			} else {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
			return
		}
		src[f.Name] = source{kind: sourceEnv, detail: env}
	})
	if cf := set.Lookup(configFlag); cf != nil && cf.Value.String() != "" {
		if err := applyConfigFile(set, cf.Value.String(), src, notInFile); err != nil {
			errs = append(errs, err)
		}
	}
	return src, errors.Join(errs...)
}

// applyConfigFile sets from the TOML file at path every flag src says is
// still at its default. Every key of the file is checked, also those a
// flag or variable overrides: an unknown key (a typo) or a value of the
// wrong type is an error naming the key and the file.
func applyConfigFile(set *flag.FlagSet, path string, src map[string]source, notInFile map[string]bool) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("config file %s does not exist", path)
	}
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var values map[string]any
	md, err := toml.Decode(string(data), &values)
	if err != nil {
		return fmt.Errorf("config file %s: %v", path, err)
	}
	var errs []error
	for _, key := range md.Keys() { // in the file's order
		if len(key) != 1 {
			continue // inside a table, which is an error itself
		}
		name := key[0]
		f := set.Lookup(name)
		switch {
		case name == configFlag:
			errs = append(errs, fmt.Errorf("config file %s: %q cannot be set in a config file", path, name))
			continue
		case f == nil || notInFile[name]:
			msg := fmt.Sprintf("config file %s: unknown key %q", path, name)
			if s := suggestKey(set, name, values[name], notInFile); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			errs = append(errs, errors.New(msg))
			continue
		}
		text, err := flagText(f, values[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("config file %s: %s: %w", path, name, err))
			continue
		}
		if k := src[name].kind; k == sourceFlag || k == sourceEnv {
			continue // overridden
		}
		if err := set.Set(name, text); err != nil {
			errs = append(errs, fmt.Errorf("config file %s: %s: %w", path, name, err))
			continue
		}
		src[name] = source{kind: sourceFile, detail: path}
	}
	return errors.Join(errs...)
}

// flagText turns a TOML value into the text f.Value.Set takes, if it has
// the type f wants: a string for a string flag, an integer for an integer,
// a boolean for a boolean, a string such as "2s" for a duration.
func flagText(f *flag.Flag, v any) (string, error) {
	var cur any = ""
	if g, ok := f.Value.(flag.Getter); ok {
		cur = g.Get()
	}
	wrong := func(want string) (string, error) {
		got := tomlType(v)
		if !isSecret(f.Name) {
			switch v.(type) {
			case string:
				got += fmt.Sprintf(" (%q)", v)
			case int64, float64, bool:
				got += fmt.Sprintf(" (%v)", v)
			}
		}
		return "", fmt.Errorf("want %s, got %s", want, got)
	}
	switch cur.(type) {
	case bool:
		b, ok := v.(bool)
		if !ok {
			return wrong("a boolean (true or false)")
		}
		return strconv.FormatBool(b), nil
	case int, int64:
		i, ok := v.(int64)
		if !ok {
			return wrong("an integer")
		}
		return strconv.FormatInt(i, 10), nil
	case uint, uint64:
		i, ok := v.(int64)
		if !ok || i < 0 {
			return wrong("an integer, 0 or more")
		}
		return strconv.FormatInt(i, 10), nil
	case float64:
		switch n := v.(type) {
		case float64:
			return strconv.FormatFloat(n, 'g', -1, 64), nil
		case int64:
			return strconv.FormatInt(n, 10), nil
		}
		return wrong("a number")
	case time.Duration:
		s, ok := v.(string)
		if !ok {
			return wrong(`a duration string such as "2s" or "1m30s"`)
		}
		if _, err := time.ParseDuration(s); err != nil {
			return "", err
		}
		return s, nil
	}
	s, ok := v.(string)
	if !ok {
		return wrong("a string")
	}
	return s, nil
}

// tomlType names the type of a decoded TOML value.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date or time"
}

// suggestKey is the flag an unknown key probably meant, or "".
func suggestKey(set *flag.FlagSet, key string, value any, notInFile map[string]bool) string {
	settable := func(name string) bool {
		f := set.Lookup(name)
		return f != nil && name != configFlag && !notInFile[name]
	}
	// xmpp_addr, SNIPER_XMPP_ADDR, --xmpp-addr
	norm := strings.ToLower(strings.TrimLeft(key, "-"))
	norm = strings.TrimPrefix(strings.ReplaceAll(norm, "_", "-"), "sniper-")
	if norm != key && settable(norm) {
		return norm
	}
	// [xmpp] addr = ... for xmpp-addr
	if table, ok := value.(map[string]any); ok {
		for sub := range table {
			if settable(norm + "-" + sub) {
				return norm + "-" + sub
			}
		}
	}
	best, bestDist := "", 0
	set.VisitAll(func(f *flag.Flag) {
		if !settable(f.Name) {
			return
		}
		d := editDistance(norm, f.Name)
		if d <= max(2, len(f.Name)/4) && (best == "" || d < bestDist) {
			best, bestDist = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// ---- sniper config ----

const configUsage = `Usage: sniper config [--config FILE] [--json] [any flag of 'sniper run']

Prints the configuration 'sniper run' would run with, given the same flags,
environment and config file: one line per setting, key = value in TOML, each
with where its value comes from (flag, env SNIPER_<NAME>, file FILE or
default). Saved to a file, the output is a config file for --config.

Secrets (--xmpp-password, any flag whose name contains "password" or
"token") are never shown: a set secret prints as "********" on a line left
commented out, so that a saved copy does not set it to that; keep it in the
environment or add it to the file yourself.

Config files are TOML; the keys are the flag names and the values have the
flags' types:

    data-dir = "/var/lib/sniper"
    http = "127.0.0.1:8080"
    replicas = 3
    checkpoint-every = "1s"

Where a setting comes from: a flag beats the environment, which beats the
file, which beats the default. An unknown key or a value of the wrong type
in the file is an error, even where a flag or variable overrides it.

Exits 2, saying why, when the command line, the environment or the file is
not valid.

Flags:
`

func cmdConfig(_ context.Context, args []string, stdout, stderr io.Writer) int {
	set := flag.NewFlagSet("sniper config", flag.ContinueOnError)
	var usageOut bytes.Buffer
	set.SetOutput(&usageOut)
	o := runFlags(set)
	var settings []string // the flags of `sniper run` but --config, sorted
	set.VisitAll(func(f *flag.Flag) {
		if f.Name != configFlag {
			settings = append(settings, f.Name)
		}
	})
	asJSON := set.Bool("json", false, "print a JSON object, for scripts: {\"config_file\", \"values\", \"sources\"}")
	set.Usage = func() {
		fmt.Fprint(set.Output(), configUsage)
		cliflags.Print(set.Output(), set, envName, configFlag, "json")
		fmt.Fprint(set.Output(), "\nand every flag of 'sniper run' (see 'sniper help run').\n")
	}
	src, err := parseFlagsFrom(set, args, map[string]bool{"json": true})
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			_, _ = stdout.Write(usageOut.Bytes())
			return 0
		}
		_, _ = stderr.Write(usageOut.Bytes())
		printErr(stderr, "sniper config", err)
		return 2
	}
	if name, err := o.check(); err != nil {
		fmt.Fprintf(stderr, "sniper config: %v (from %s)\n", err, src[name])
		return 2
	}
	values := map[string]any{}
	for _, name := range settings {
		values[name] = shownValue(set.Lookup(name))
	}
	if *asJSON {
		sources := map[string]string{}
		for _, name := range settings {
			sources[name] = src[name].String()
		}
		if err := writeJSONLine(stdout, struct {
			ConfigFile string            `json:"config_file"`
			Values     map[string]any    `json:"values"`
			Sources    map[string]string `json:"sources"`
		}{o.config, values, sources}); err != nil {
			fmt.Fprintf(stderr, "sniper config: %v\n", err)
			return 1
		}
		return 0
	}
	var b strings.Builder
	b.WriteString("# The configuration of 'sniper run'; saved to FILE, use it with --config FILE.\n")
	b.WriteString("# A flag beats the environment, which beats the config file, which beats the default.\n")
	if o.config != "" {
		fmt.Fprintf(&b, "# Config file: %s (%s)\n", clean(o.config), clean(src[configFlag].String()))
	}
	lines := make([]string, len(settings))
	comments := make([]string, len(settings))
	width := 0
	for i, name := range settings {
		lines[i] = tomlLine(name, values[name])
		comments[i] = clean(src[name].String())
		if isSecret(name) {
			if values[name] == masked {
				// Commented out: a saved copy must not set the secret to
				// the mask.
				lines[i] = "#" + lines[i]
				comments[i] += " (secret, masked)"
			} else {
				comments[i] += " (not set)"
			}
		}
		width = max(width, min(len(lines[i]), 40))
	}
	for i := range lines {
		fmt.Fprintf(&b, "%-*s  # %s\n", width, lines[i], comments[i])
	}
	if _, err := io.WriteString(stdout, b.String()); err != nil {
		return 1
	}
	return 0
}

// shownValue is f's value as `sniper config` shows it: the TOML type a
// config file gives it, secrets masked.
func shownValue(f *flag.Flag) any {
	var v any = f.Value.String()
	if g, ok := f.Value.(flag.Getter); ok {
		switch x := g.Get().(type) {
		case string, bool, float64, int64:
			v = x
		case int:
			v = int64(x)
		case uint:
			v = int64(x)
		case uint64:
			v = int64(x)
		case time.Duration:
			v = x.String()
		}
	}
	if isSecret(f.Name) {
		if s := fmt.Sprint(v); s == "" || s == "false" || s == "0" {
			return ""
		}
		return masked
	}
	return v
}

// tomlLine is `name = value` in TOML.
func tomlLine(name string, value any) string {
	data, err := toml.Marshal(map[string]any{name: value})
	if err != nil { // cannot happen for the types shownValue returns
		return fmt.Sprintf("%s = %q", name, fmt.Sprint(value))
	}
	return strings.TrimRight(string(data), "\n")
}

// printErr writes err to w, each of its lines (errors.Join puts one error
// a line) prefixed with the command.
func printErr(w io.Writer, cmd string, err error) {
	for line := range strings.Lines(err.Error()) {
		fmt.Fprintf(w, "%s: %s\n", cmd, strings.TrimRight(line, "\n"))
	}
}
