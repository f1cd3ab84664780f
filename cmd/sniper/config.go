package main

// Settings come from the command line, the environment (SNIPER_<NAME>) and
// the TOML file named by --config, in that order (package config);
// `sniper config` prints the outcome for `sniper run`, with where each
// value came from.
import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"sniper/internal/clip"
	"sniper/internal/config"
)

// configFlag names the flag that names the config file.
const configFlag = "config"

// loader is how every sniper command reads its flags: SNIPER_<NAME> in
// the environment, and the --config file of the commands that have one.
var loader = config.Loader{EnvPrefix: "SNIPER", Env: map[string]string{"token": tokenEnv}, FileFlag: configFlag}

// parseFlags parses args and fills the flags not given from the
// environment and the config file (see package config).
func parseFlags(fs *flag.FlagSet, args []string) error {
	_, err := loader.Parse(fs, args)
	return err
}

func envName(flagName string) string { return loader.EnvName(flagName) }

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
		loader.PrintFlags(set.Output(), set, configFlag, "json")
		fmt.Fprint(set.Output(), "\nand every flag of 'sniper run' (see 'sniper help run').\n")
	}
	l := loader
	l.NotInFile = map[string]bool{"json": true}
	src, err := l.Parse(set, args)
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
		fmt.Fprintf(&b, "# Config file: %s (%s)\n", clip.Printable(o.config), clip.Printable(src[configFlag].String()))
	}
	lines := make([]string, len(settings))
	comments := make([]string, len(settings))
	width := 0
	for i, name := range settings {
		lines[i] = tomlLine(name, values[name])
		comments[i] = clip.Printable(src[name].String())
		if config.IsSecret(name) {
			if values[name] == config.Masked {
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
	if config.IsSecret(f.Name) {
		if s := fmt.Sprint(v); s == "" || s == "false" || s == "0" {
			return ""
		}
		return config.Masked
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
