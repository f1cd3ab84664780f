package messages_test

import (
	"errors"
	"strings"
	"testing"

	"sniper/auction"
	"sniper/messages"
)

// FuzzDecodeAuctionEvent checks the SOL decoder on arbitrary bodies: the
// auction house is outside our control, so any chat message may arrive.
// Seeds live in testdata/fuzz/FuzzDecodeAuctionEvent.
func FuzzDecodeAuctionEvent(f *testing.F) {
	f.Add(messages.EncodePrice(1000, 98, "other bidder"))
	f.Add(messages.EncodeClose())
	f.Add(messages.EncodePriceClosing(1000, 98, "other bidder", 1767225600000))
	f.Fuzz(func(t *testing.T, body string) {
		ev, err := messages.DecodeAuctionEvent(body)
		if err != nil {
			if !errors.Is(err, messages.ErrMalformed) {
				t.Fatalf("error %q does not wrap ErrMalformed", err)
			}
			if ev != (messages.AuctionEvent{}) {
				t.Fatalf("error %q came with event %+v", err, ev)
			}
			return
		}
		switch ev.Kind {
		case "CLOSE":
			if ev != (messages.AuctionEvent{Kind: "CLOSE"}) {
				t.Fatalf("CLOSE with fields: %+v", ev)
			}
		case "PRICE":
			if ev.CurrentPrice < 0 || ev.Increment < 0 {
				t.Fatalf("negative amounts: %+v", ev)
			}
			if ev.Bidder == "" {
				t.Fatalf("PRICE without bidder: %+v", ev)
			}
			if strings.Contains(ev.Bidder, ";") || strings.TrimSpace(ev.Bidder) != ev.Bidder {
				// EncodePrice does not escape; such a bidder cannot round trip
				// (and the decoder should never produce one).
				t.Fatalf("decoder produced a bidder that cannot be re-encoded: %q", ev.Bidder)
			}
			if ev.CloseTime < 0 {
				t.Fatalf("negative close time: %+v", ev)
			}
			encoded := messages.EncodePrice(ev.CurrentPrice, ev.Increment, ev.Bidder)
			if ev.CloseTime != 0 {
				encoded = messages.EncodePriceClosing(ev.CurrentPrice, ev.Increment, ev.Bidder, ev.CloseTime)
			}
			again, err := messages.DecodeAuctionEvent(encoded)
			if err != nil {
				t.Fatalf("re-encoded %+v does not decode: %v", ev, err)
			}
			if again != ev {
				t.Fatalf("round trip changed %+v into %+v", ev, again)
			}
		default:
			t.Fatalf("unknown kind %q in %+v", ev.Kind, ev)
		}
	})
}

// FuzzDecodeInput checks the decoding of stored inputs: whatever a subject
// and payload hold (a hand-written `nats pub`, a corrupted store), decoding
// must fail cleanly or give an input the core can trust.
func FuzzDecodeInput(f *testing.F) {
	f.Add("sniper.item-54321.cmd.start", []byte(`{"type":"start","item":"item-54321","stop_price":1100}`))
	f.Add("sniper.item-54321.in.price", []byte(`{"type":"price","item":"item-54321","current_price":1000,"increment":98,"bidder":"other","from_sniper":false}`))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		in, err := messages.DecodeInput(subject, data)
		if err != nil {
			if in != nil {
				t.Fatalf("error %q came with input %#v", err, in)
			}
			return
		}
		_, kind, typ, perr := messages.ParseSubject(subject)
		if perr != nil {
			t.Fatalf("decoded %#v from unparseable subject %q", in, subject)
		}
		if kind != messages.KindCmd && kind != messages.KindIn {
			t.Fatalf("decoded %#v from non-input subject %q", in, subject)
		}
		switch in := in.(type) {
		case auction.Start:
			if in.StopPrice <= 0 {
				t.Fatalf("start with stop price %d from %q", in.StopPrice, data)
			}
			if typ != messages.TypeStart {
				t.Fatalf("start from subject %q", subject)
			}
		case auction.Stop:
			if typ != messages.TypeStop {
				t.Fatalf("stop from subject %q", subject)
			}
		case auction.Price:
			if typ != messages.TypePrice {
				t.Fatalf("price from subject %q", subject)
			}
		case auction.Close:
			if typ != messages.TypeClose {
				t.Fatalf("close from subject %q", subject)
			}
		case auction.Malformed:
			if typ != messages.TypeMalformed {
				t.Fatalf("malformed from subject %q", subject)
			}
		default:
			t.Fatalf("unexpected input %#v", in)
		}
	})
}
