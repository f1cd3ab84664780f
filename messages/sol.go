package messages

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// SOL 1.1 is the auction house's chat protocol from GOOS: "Key: value;"
// fields in a single message body.

// SOLVersion is the protocol version the sniper speaks and expects.
const SOLVersion = "1.1"

// ErrMalformed is wrapped by every SOL decoding error.
var ErrMalformed = errors.New("malformed SOL message")

// AuctionEvent is a decoded message from the auction house: exactly one of
// Price or Close.
type AuctionEvent struct {
	// Kind is "PRICE" or "CLOSE".
	Kind         string
	CurrentPrice int64
	Increment    int64
	Bidder       string
	// CloseTime is when the auction closes, in Unix milliseconds: an
	// optional PRICE field ("CloseTime: 1767225600000;"), our extension
	// of SOL 1.1 (docs/sol-closetime.md); 0 when absent.
	CloseTime int64
}

// EncodeJoin is the sniper's request to join an auction.
func EncodeJoin() string { return solHeader + "Command: JOIN;" }

// solHeader opens every message: the version field.
const solHeader = "SOLVersion: " + SOLVersion + "; "

// EncodeBid is the sniper's bid at price.
func EncodeBid(price int64) string {
	return solHeader + "Command: BID; Price: " + strconv.FormatInt(price, 10) + ";"
}

// EncodePrice and EncodeClose are the auction house's side of SOL, used by
// the simulated auction house and by tests.
func EncodePrice(price, increment int64, bidder string) string {
	return fmt.Sprintf(solHeader+"Event: PRICE; CurrentPrice: %d; Increment: %d; Bidder: %s;", price, increment, bidder)
}

// EncodePriceClosing is EncodePrice with the CloseTime extension: the
// close as Unix milliseconds.
func EncodePriceClosing(price, increment int64, bidder string, closeMS int64) string {
	return fmt.Sprintf(solHeader+"Event: PRICE; CurrentPrice: %d; Increment: %d; Bidder: %s; CloseTime: %d;", price, increment, bidder, closeMS)
}

// EncodeClose announces the end of an auction.
func EncodeClose() string { return solHeader + "Event: CLOSE;" }

// DecodeAuctionEvent parses a message from the auction house. Every error
// wraps ErrMalformed and names the field at fault, because the text ends up
// in the log as the reason a sniper failed.
func DecodeAuctionEvent(body string) (AuctionEvent, error) {
	fields, err := parseFields(body)
	if err != nil {
		return AuctionEvent{}, err
	}
	if v, ok := fields["SOLVersion"]; ok && v != SOLVersion {
		return AuctionEvent{}, fmt.Errorf("%w: unsupported SOLVersion %q", ErrMalformed, v)
	}
	event, ok := fields["Event"]
	if !ok {
		return AuctionEvent{}, fmt.Errorf("%w: missing field \"Event\"", ErrMalformed)
	}
	switch event {
	case "CLOSE":
		return AuctionEvent{Kind: "CLOSE"}, nil
	case "PRICE":
		price, err := amount(fields, "CurrentPrice")
		if err != nil {
			return AuctionEvent{}, err
		}
		inc, err := amount(fields, "Increment")
		if err != nil {
			return AuctionEvent{}, err
		}
		bidder, ok := fields["Bidder"]
		if !ok || bidder == "" {
			return AuctionEvent{}, fmt.Errorf("%w: missing field \"Bidder\"", ErrMalformed)
		}
		ev := AuctionEvent{Kind: "PRICE", CurrentPrice: price, Increment: inc, Bidder: bidder}
		if _, ok := fields["CloseTime"]; ok {
			// Optional, but when it is there it is read as strictly as
			// a price: a misread close time would snipe at the wrong time.
			if ev.CloseTime, err = amount(fields, "CloseTime"); err != nil {
				return AuctionEvent{}, err
			}
		}
		return ev, nil
	}
	return AuctionEvent{}, fmt.Errorf("%w: unknown Event %q", ErrMalformed, event)
}

func parseFields(body string) (map[string]string, error) {
	fields := make(map[string]string)
	for _, part := range strings.Split(body, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		key, value, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("%w: field %q has no ':'", ErrMalformed, part)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if key == "" {
			return nil, fmt.Errorf("%w: field %q has no name", ErrMalformed, part)
		}
		if _, dup := fields[key]; dup {
			return nil, fmt.Errorf("%w: field %q appears twice", ErrMalformed, key)
		}
		fields[key] = value
	}
	if len(fields) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	return fields, nil
}

func amount(fields map[string]string, name string) (int64, error) {
	v, ok := fields[name]
	if !ok {
		return 0, fmt.Errorf("%w: missing field %q", ErrMalformed, name)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: field %q is not a non-negative integer: %q", ErrMalformed, name, v)
	}
	return n, nil
}
