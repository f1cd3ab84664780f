// Package cliflags prints a flag set's help the way the commands show it:
// each flag as --name, its default when it has a meaningful one, and the
// environment variable it can also be set from.
package cliflags

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// Print lists fs's flags on w; env names each flag's variable, and a
// non-empty only limits the list to those flags.
func Print(w io.Writer, fs *flag.FlagSet, env func(name string) string, only ...string) {
	fs.VisitAll(func(f *flag.Flag) {
		if len(only) > 0 && !contains(only, f.Name) {
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
		fmt.Fprintf(w, "\n    \t[env %s]\n", env(f.Name))
	})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
