package auctionhouse

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"sniper/messages"
)

// errBadCommand is wrapped by every error of parseCommand.
var errBadCommand = errors.New("not a SOL 1.1 command")

// command is what a bidder asks the auction house: JOIN, or BID at Price.
type command struct {
	Kind  string // "JOIN" or "BID"
	Price int64  // BID only, > 0
}

// parseCommand reads the bidder's side of SOL 1.1 ("SOLVersion: 1.1;
// Command: JOIN;" and "SOLVersion: 1.1; Command: BID; Price: N;"). The
// codec in messages is the sniper's side (it encodes commands and decodes
// events); the house needs the opposite direction.
func parseCommand(body string) (command, error) {
	fields := map[string]string{}
	for part := range strings.SplitSeq(body, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, ":")
		if !ok {
			return command{}, fmt.Errorf("%w: field %q has no ':'", errBadCommand, part)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if _, dup := fields[k]; dup {
			return command{}, fmt.Errorf("%w: field %q appears twice", errBadCommand, k)
		}
		fields[k] = v
	}
	if v := fields["SOLVersion"]; v != messages.SOLVersion {
		return command{}, fmt.Errorf("%w: SOLVersion %q", errBadCommand, v)
	}
	switch cmd := fields["Command"]; cmd {
	case "JOIN":
		return command{Kind: "JOIN"}, nil
	case "BID":
		p, err := strconv.ParseInt(fields["Price"], 10, 64)
		if err != nil || p <= 0 {
			return command{}, fmt.Errorf("%w: BID with Price %q", errBadCommand, fields["Price"])
		}
		return command{Kind: "BID", Price: p}, nil
	default:
		return command{}, fmt.Errorf("%w: Command %q", errBadCommand, cmd)
	}
}
