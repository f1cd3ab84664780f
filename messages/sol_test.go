package messages_test

import (
	"errors"
	"strings"
	"testing"

	"sniper/messages"
)

func TestEncodeCommands(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"join", messages.EncodeJoin(), "SOLVersion: 1.1; Command: JOIN;"},
		{"bid", messages.EncodeBid(1098), "SOLVersion: 1.1; Command: BID; Price: 1098;"},
		{"bid zero", messages.EncodeBid(0), "SOLVersion: 1.1; Command: BID; Price: 0;"},
		{"bid large", messages.EncodeBid(9223372036854775807), "SOLVersion: 1.1; Command: BID; Price: 9223372036854775807;"},
		{"price", messages.EncodePrice(1000, 98, "other bidder"), "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 1000; Increment: 98; Bidder: other bidder;"},
		{"close", messages.EncodeClose(), "SOLVersion: 1.1; Event: CLOSE;"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestDecodeAuctionEvent(t *testing.T) {
	price := messages.AuctionEvent{Kind: "PRICE", CurrentPrice: 1000, Increment: 98, Bidder: "other bidder"}
	closed := messages.AuctionEvent{Kind: "CLOSE"}
	tests := []struct {
		name string
		body string
		want messages.AuctionEvent
	}{
		{"price", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 1000; Increment: 98; Bidder: other bidder;", price},
		{"close", "SOLVersion: 1.1; Event: CLOSE;", closed},
		{"close without trailing semicolon", "SOLVersion: 1.1; Event: CLOSE", closed},
		{"price without trailing semicolon", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 1000; Increment: 98; Bidder: other bidder", price},
		{"no spaces", "SOLVersion:1.1;Event:PRICE;CurrentPrice:1000;Increment:98;Bidder:other bidder;", price},
		{"extra spaces", "  SOLVersion :  1.1 ;   Event :PRICE ;CurrentPrice:   1000;Increment :98  ;  Bidder:   other bidder   ;  ", price},
		{"tabs and newlines", "SOLVersion:\t1.1;\nEvent: CLOSE;\r\n", closed},
		{"fields in another order", "Bidder: other bidder; Increment: 98; CurrentPrice: 1000; Event: PRICE; SOLVersion: 1.1;", price},
		{"empty fields between semicolons", ";;SOLVersion: 1.1;; Event: CLOSE;;", closed},
		{"no version", "Event: CLOSE;", closed},
		{"unknown fields ignored", "SOLVersion: 1.1; Event: CLOSE; Reason: time is up;", closed},
		{"bidder with colon", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 5; Increment: 1; Bidder: sniper@localhost/Auction;",
			messages.AuctionEvent{Kind: "PRICE", CurrentPrice: 5, Increment: 1, Bidder: "sniper@localhost/Auction"}},
		{"zero price and increment", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 0; Increment: 0; Bidder: x;",
			messages.AuctionEvent{Kind: "PRICE", Bidder: "x"}},
		{"leading zeros", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 007; Increment: 0010; Bidder: x;",
			messages.AuctionEvent{Kind: "PRICE", CurrentPrice: 7, Increment: 10, Bidder: "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := messages.DecodeAuctionEvent(tt.body)
			if err != nil {
				t.Fatalf("DecodeAuctionEvent(%q): %v", tt.body, err)
			}
			if got != tt.want {
				t.Errorf("DecodeAuctionEvent(%q) = %+v, want %+v", tt.body, got, tt.want)
			}
		})
	}
}

func TestDecodeAuctionEventErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		// field is what the error message must name.
		field string
	}{
		{"missing Event", "SOLVersion: 1.1; CurrentPrice: 1000;", "Event"},
		{"unknown Event", "SOLVersion: 1.1; Event: OPEN;", "Event"},
		{"lower-case Event", "SOLVersion: 1.1; Event: price;", "Event"},
		{"empty Event", "SOLVersion: 1.1; Event: ;", "Event"},
		{"missing CurrentPrice", "SOLVersion: 1.1; Event: PRICE; Increment: 98; Bidder: x;", "CurrentPrice"},
		{"non-numeric CurrentPrice", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: lots; Increment: 98; Bidder: x;", "CurrentPrice"},
		{"fractional CurrentPrice", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 10.5; Increment: 98; Bidder: x;", "CurrentPrice"},
		{"empty CurrentPrice", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: ; Increment: 98; Bidder: x;", "CurrentPrice"},
		{"negative CurrentPrice", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: -1; Increment: 98; Bidder: x;", "CurrentPrice"},
		{"overflowing CurrentPrice", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 9223372036854775808; Increment: 98; Bidder: x;", "CurrentPrice"},
		{"missing Increment", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 1000; Bidder: x;", "Increment"},
		{"non-numeric Increment", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 1000; Increment: 9 8; Bidder: x;", "Increment"},
		{"negative Increment", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 1000; Increment: -98; Bidder: x;", "Increment"},
		{"missing Bidder", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 1000; Increment: 98;", "Bidder"},
		{"empty Bidder", "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 1000; Increment: 98; Bidder:   ;", "Bidder"},
		{"field without colon", "SOLVersion: 1.1; Event CLOSE;", "Event CLOSE"},
		{"field without name", "SOLVersion: 1.1; : CLOSE;", ": CLOSE"},
		{"duplicate field", "SOLVersion: 1.1; Event: CLOSE; Event: PRICE;", "Event"},
		{"duplicate field after trimming", "SOLVersion: 1.1; Event: CLOSE;  Event :CLOSE;", "Event"},
		{"empty body", "", "empty"},
		{"blank body", "  ; ;\n ", "empty"},
		{"wrong SOLVersion", "SOLVersion: 1.0; Event: CLOSE;", "SOLVersion"},
		{"empty SOLVersion", "SOLVersion: ; Event: CLOSE;", "SOLVersion"},
		{"GOOS broken message", "a broken message", "a broken message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := messages.DecodeAuctionEvent(tt.body)
			if err == nil {
				t.Fatalf("DecodeAuctionEvent(%q) = %+v, want an error", tt.body, got)
			}
			if !errors.Is(err, messages.ErrMalformed) {
				t.Errorf("error %q does not wrap ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %q", err, tt.field)
			}
			if got != (messages.AuctionEvent{}) {
				t.Errorf("got %+v with the error, want the zero event", got)
			}
		})
	}
}

func TestEncodePriceRoundTrip(t *testing.T) {
	tests := []struct {
		price, increment int64
		bidder           string
	}{
		{1000, 98, "other bidder"},
		{0, 0, "x"},
		{1, 2, "sniper@localhost/Auction"},
		{9223372036854775807, 9223372036854775807, "max"},
		{199, 1, "bidder: with colon"},
		{5, 5, "ünïcödé bidder"},
	}
	for _, tt := range tests {
		body := messages.EncodePrice(tt.price, tt.increment, tt.bidder)
		got, err := messages.DecodeAuctionEvent(body)
		if err != nil {
			t.Errorf("DecodeAuctionEvent(%q): %v", body, err)
			continue
		}
		want := messages.AuctionEvent{Kind: "PRICE", CurrentPrice: tt.price, Increment: tt.increment, Bidder: tt.bidder}
		if got != want {
			t.Errorf("round trip of %q = %+v, want %+v", body, got, want)
		}
	}
	got, err := messages.DecodeAuctionEvent(messages.EncodeClose())
	if err != nil || got != (messages.AuctionEvent{Kind: "CLOSE"}) {
		t.Errorf("round trip of EncodeClose = %+v, %v", got, err)
	}
}

// The CloseTime extension: optional, read strictly when present, and
// ignored by nothing else (an old decoder ignores fields it does not know;
// see docs/sol-closetime.md).
func TestPriceCloseTime(t *testing.T) {
	ev, err := messages.DecodeAuctionEvent("SOLVersion: 1.1; Event: PRICE; CurrentPrice: 1000; Increment: 98; Bidder: other; CloseTime: 1767225600000;")
	if err != nil || ev.CloseTime != 1767225600000 || ev.CurrentPrice != 1000 {
		t.Fatalf("got %+v, %v", ev, err)
	}
	ev, err = messages.DecodeAuctionEvent(messages.EncodePrice(1000, 98, "other"))
	if err != nil || ev.CloseTime != 0 {
		t.Fatalf("without the field: %+v, %v", ev, err)
	}
	for _, bad := range []string{"soon", "-5", "1.5e12", ""} {
		body := "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 1000; Increment: 98; Bidder: other; CloseTime: " + bad + ";"
		if _, err := messages.DecodeAuctionEvent(body); err == nil || !strings.Contains(err.Error(), `"CloseTime"`) {
			t.Errorf("CloseTime %q: %v, want an error naming the field", bad, err)
		}
	}
	if got := messages.EncodePriceClosing(5, 1, "b", 42); got != "SOLVersion: 1.1; Event: PRICE; CurrentPrice: 5; Increment: 1; Bidder: b; CloseTime: 42;" {
		t.Errorf("EncodePriceClosing = %q", got)
	}
}
