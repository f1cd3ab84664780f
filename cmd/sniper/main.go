// Command sniper is the auction sniper: `sniper run` starts the service;
// the other verbs talk to a running one.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `sniper bids in online auctions on your behalf, up to a stop price.

Usage:
  sniper run [flags]                   start the sniper service (embedded NATS, HTTP API)
  sniper config [flags]                the configuration 'sniper run' would use, secrets masked
  sniper join ITEM --stop-price N      join the auction for ITEM, bidding up to N
  sniper list                          every sniper's state, as a table
  sniper stop ITEM                     stop bidding on ITEM
  sniper set ITEM --stop-price N       change the stop price (a stopped sniper resumes)
  sniper group G --win N ITEM=STOP...  snipe several equal items, win at most N of them
  sniper history ITEM [--at SEQ]       ITEM's events from the log; --at: its state after event SEQ
  sniper watch                         every sniper, live, until Ctrl-C
  sniper version                       the build: module version, VCS revision, Go version
  sniper help [command]                show help

join, list, stop, set, group, history and watch talk to a running 'sniper run' over its
JSON API: --api URL (default http://127.0.0.1:8080, env SNIPER_API),
--token TOKEN (env SNIPER_HTTP_TOKEN), --json for scripts. They exit 1 on
failure, 2 on a bad command line.

Every flag of a command can also be set in the environment as
SNIPER_<FLAG NAME>, e.g. --data-dir as SNIPER_DATA_DIR. 'sniper run' also
reads a TOML config file, --config sniper.toml (or SNIPER_CONFIG), whose
keys are its flag names: data-dir = "/var/lib/sniper". Flags win over the
environment, which wins over the file.

Run 'sniper help run' for the service's flags, 'sniper help config' for the
config file, 'sniper help join' and so on for the others.
`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "--help", "help":
		if len(rest) > 0 {
			return run(ctx, []string{rest[0], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	case "version", "--version":
		return cmdVersion(stdout)
	case "run":
		ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runService(ctx, rest, stdout, stderr)
	case "config":
		return cmdConfig(ctx, rest, stdout, stderr)
	case "join":
		return cmdJoin(ctx, rest, stdout, stderr)
	case "list":
		return cmdList(ctx, rest, stdout, stderr)
	case "stop":
		return cmdStop(ctx, rest, stdout, stderr)
	case "set":
		return cmdSet(ctx, rest, stdout, stderr)
	case "group":
		return cmdGroup(ctx, rest, stdout, stderr)
	case "history":
		return cmdHistory(ctx, rest, stdout, stderr)
	case "watch":
		ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		return cmdWatch(ctx, rest, stdout, stderr)
	}
	fmt.Fprintf(stderr, "sniper: unknown command %q\n\n%s", cmd, usage)
	return 2
}
