// Package config fills a command's flag set from, for each flag, the first
// of these that sets it:
//
//  1. the command line (--data-dir /x)
//  2. the environment (SNIPER_DATA_DIR=/x, with the Loader's prefix)
//  3. the TOML file the Loader's FileFlag names (data-dir = "/x"), for
//     commands that have one
//  4. the flag's default
//
// It also prints a flag set's help the way the commands show it. sniper
// and auctionhouse both load their settings with it.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Masked stands for a secret's value wherever settings are shown.
const Masked = "********"

// Source says where a flag's value came from.
type Source struct {
	Kind   string // FromFlag, FromEnv, FromFile or FromDefault
	Detail string // the variable (env) or the file (file)
}

// The kinds of Source.
const (
	FromFlag    = "flag"
	FromEnv     = "env"
	FromFile    = "file"
	FromDefault = "default"
)

func (s Source) String() string {
	if s.Detail == "" {
		return s.Kind
	}
	return s.Kind + " " + s.Detail
}

// Sources maps each flag's name to where its value came from.
type Sources map[string]Source

// IsSecret reports whether a flag holds a secret, never to be shown.
func IsSecret(flagName string) bool {
	return strings.Contains(flagName, "password") || strings.Contains(flagName, "token") || strings.Contains(flagName, "secret")
}

// Loader is how one command reads its settings.
type Loader struct {
	// EnvPrefix makes a flag's variable: "SNIPER" reads --data-dir from
	// SNIPER_DATA_DIR.
	EnvPrefix string
	// Env names the variables of the flags whose variable is not
	// <EnvPrefix>_<NAME>.
	Env map[string]string
	// FileFlag names the flag that names the config file; empty: the
	// command reads no file.
	FileFlag string
	// NotInFile lists the flags a config file cannot set: options of the
	// command, not settings.
	NotInFile map[string]bool
}

// EnvName is the variable flagName is read from.
func (l Loader) EnvName(flagName string) string {
	if v, ok := l.Env[flagName]; ok {
		return v
	}
	return strings.ToUpper(strings.ReplaceAll(l.EnvPrefix+"_"+flagName, "-", "_"))
}

// Parse parses args (which may hold no positional argument), then fills
// every flag not given on the command line from the environment and, if
// the file flag names a file (on the command line or in the environment),
// every flag still not set from that file. It returns where each flag's
// value came from; the error joins every problem found, each naming its
// variable or key.
func (l Loader) Parse(set *flag.FlagSet, args []string) (Sources, error) {
	if err := set.Parse(args); err != nil {
		return nil, err
	}
	if set.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", set.Arg(0))
	}
	return l.Fill(set)
}

// Fill is Parse for a flag set already parsed: it fills what the command
// line did not set.
func (l Loader) Fill(set *flag.FlagSet) (Sources, error) {
	src := Sources{}
	set.VisitAll(func(f *flag.Flag) { src[f.Name] = Source{Kind: FromDefault} })
	set.Visit(func(f *flag.Flag) { src[f.Name] = Source{Kind: FromFlag} })
	var errs []error
	set.VisitAll(func(f *flag.Flag) {
		if src[f.Name].Kind == FromFlag {
			return
		}
		env := l.EnvName(f.Name)
		v, ok := os.LookupEnv(env)
		if !ok {
			return
		}
		if err := set.Set(f.Name, v); err != nil {
			if IsSecret(f.Name) {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			} else {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
			return
		}
		src[f.Name] = Source{Kind: FromEnv, Detail: env}
	})
	if l.FileFlag != "" {
		if cf := set.Lookup(l.FileFlag); cf != nil && cf.Value.String() != "" {
			if err := l.applyFile(set, cf.Value.String(), src); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return src, errors.Join(errs...)
}

// applyFile sets from the TOML file at path every flag src says is
// still at its default. Every key of the file is checked, also those a
// flag or variable overrides: an unknown key (a typo) or a value of the
// wrong type is an error naming the key and the file.
func (l Loader) applyFile(set *flag.FlagSet, path string, src Sources) error {
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
		case name == l.FileFlag:
			errs = append(errs, fmt.Errorf("config file %s: %q cannot be set in a config file", path, name))
			continue
		case f == nil || l.NotInFile[name]:
			msg := fmt.Sprintf("config file %s: unknown key %q", path, name)
			if s := l.suggestKey(set, name, values[name]); s != "" {
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
		if k := src[name].Kind; k == FromFlag || k == FromEnv {
			continue // overridden
		}
		if err := set.Set(name, text); err != nil {
			errs = append(errs, fmt.Errorf("config file %s: %s: %w", path, name, err))
			continue
		}
		src[name] = Source{Kind: FromFile, Detail: path}
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
		if !IsSecret(f.Name) {
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
func (l Loader) suggestKey(set *flag.FlagSet, key string, value any) string {
	settable := func(name string) bool {
		f := set.Lookup(name)
		return f != nil && name != l.FileFlag && !l.NotInFile[name]
	}
	// xmpp_addr, SNIPER_XMPP_ADDR, --xmpp-addr
	norm := strings.ToLower(strings.TrimLeft(key, "-"))
	norm = strings.TrimPrefix(strings.ReplaceAll(norm, "_", "-"), strings.ToLower(l.EnvPrefix)+"-")
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

// PrintFlags lists fs's flags on w the way the commands' help shows them:
// each as --name, its default when it has a meaningful one, and its
// variable. A non-empty only limits the list to those flags.
func (l Loader) PrintFlags(w io.Writer, fs *flag.FlagSet, only ...string) {
	fs.VisitAll(func(f *flag.Flag) {
		if len(only) > 0 && !slices.Contains(only, f.Name) {
			return
		}
		typ, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s", f.Name)
		if typ != "" {
			fmt.Fprintf(w, " %s", typ)
		}
		fmt.Fprintf(w, "\n    \t%s", strings.ReplaceAll(usage, "\n", "\n    \t"))
		switch {
		case f.DefValue == "" || f.DefValue == "false" || f.DefValue == "0":
			// Zero defaults say nothing a reader needs.
		case typ == "string":
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		default:
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "\n    \t[env %s]\n", l.EnvName(f.Name))
	})
}
