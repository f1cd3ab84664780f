package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// version says which build this is: the module version and the VCS
// revision Go stamped into the binary (go build in a git checkout), so a
// bug report names the code that ran.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "sniper (no build information)"
	}
	v := info.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, at, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	out := "sniper " + v
	// Go >= 1.24 puts the revision in the version of a stamped build
	// (v0.0.0-<time>-<rev>[+dirty]); older ones, or -buildvcs builds of a
	// tagged module, do not.
	if short := fmt.Sprintf("%.12s", rev); rev != "" && !strings.Contains(v, short) {
		out += " " + short + dirty
	}
	if at != "" {
		out += " " + at
	}
	return out + " " + info.GoVersion
}

func cmdVersion(stdout io.Writer) int {
	fmt.Fprintln(stdout, version())
	return 0
}
