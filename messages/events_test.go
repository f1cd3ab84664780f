package messages_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"sniper/auction"
	"sniper/messages"
)

func TestPayloadJSON(t *testing.T) {
	snap := auction.Snapshot{Item: "item-54321", State: auction.Bidding, LastPrice: 1000, LastBid: 1098, StopPrice: 1100}
	tests := []struct {
		name    string
		payload any
		typ     string
		// decode unmarshals JSON into a fresh value of the payload's type.
		decode func([]byte) (any, error)
	}{
		{"start", messages.NewStart("item-54321", 1100), "start", decodeAs[messages.StartCommand]},
		{"stop", messages.NewStop("item-54321"), "stop", decodeAs[messages.StopCommand]},
		{"price", messages.NewPrice("item-54321", 1000, 98, "other bidder", true), "price", decodeAs[messages.PriceEvent]},
		{"close", messages.NewClose("item-54321"), "close", decodeAs[messages.CloseEvent]},
		{"malformed", messages.NewMalformed("item-54321", "a broken message", "no ':'"), "malformed", decodeAs[messages.MalformedEvent]},
		{"join", mustDecision(t, snap, 7, auction.Join{}), "join", decodeAs[messages.DecisionEvent]},
		{"bid", mustDecision(t, snap, 8, auction.Bid{Price: 1098}), "bid", decodeAs[messages.DecisionEvent]},
		{"state", mustDecision(t, snap, 9), "state", decodeAs[messages.DecisionEvent]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := json.Marshal(tt.payload)
			if err != nil {
				t.Fatal(err)
			}
			var head map[string]any
			if err := json.Unmarshal(data, &head); err != nil {
				t.Fatal(err)
			}
			if head["type"] != tt.typ {
				t.Errorf("%s: type = %v, want %q", data, head["type"], tt.typ)
			}
			if head["item"] != "item-54321" {
				t.Errorf("%s: item = %v", data, head["item"])
			}
			back, err := tt.decode(data)
			if err != nil {
				t.Fatalf("decode %s: %v", data, err)
			}
			if !reflect.DeepEqual(back, tt.payload) {
				t.Errorf("round trip of %s = %+v, want %+v", data, back, tt.payload)
			}
		})
	}
}

func mustDecision(t *testing.T, s auction.Snapshot, seq uint64, outs ...auction.Output) messages.DecisionEvent {
	t.Helper()
	d, err := messages.NewDecision(s, seq, outs)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func decodeAs[T any](data []byte) (any, error) {
	var v T
	err := json.Unmarshal(data, &v)
	return v, err
}

// A decision's JSON is flat: the UI and `nats stream view` read it
// without knowing about the embedded struct.
func TestDecisionJSONIsFlat(t *testing.T) {
	snap := auction.Snapshot{Item: "i", State: auction.Failed, LastPrice: 1, LastBid: 2, StopPrice: 3, Reason: "why"}
	data, err := json.Marshal(mustDecision(t, snap, 42))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": "state", "item": "i", "state": "Failed", "last_price": 1.0, "last_bid": 2.0, "stop_price": 3.0, "reason": "why", "input_seq": 42.0}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("decision JSON %s, want fields %v", data, want)
	}
}

func TestSubject(t *testing.T) {
	tests := []struct {
		item, kind, typ, want string
	}{
		{"item-54321", messages.KindCmd, messages.TypeStart, "sniper.item-54321.cmd.start"},
		{"item-54321", messages.KindCmd, messages.TypeStop, "sniper.item-54321.cmd.stop"},
		{"a", messages.KindIn, messages.TypePrice, "sniper.a.in.price"},
		{"a", messages.KindIn, messages.TypeClose, "sniper.a.in.close"},
		{"a", messages.KindIn, messages.TypeMalformed, "sniper.a.in.malformed"},
		{"B_2", messages.KindOut, messages.TypeJoin, "sniper.B_2.out.join"},
		{"B_2", messages.KindOut, messages.TypeBid, "sniper.B_2.out.bid"},
		{"x", messages.KindDec, messages.TypeState, "sniper.x.dec.state"},
	}
	for _, tt := range tests {
		got := messages.Subject(tt.item, tt.kind, tt.typ)
		if got != tt.want {
			t.Errorf("Subject(%q, %q, %q) = %q, want %q", tt.item, tt.kind, tt.typ, got, tt.want)
		}
		item, kind, typ, err := messages.ParseSubject(got)
		if err != nil || item != tt.item || kind != tt.kind || typ != tt.typ {
			t.Errorf("ParseSubject(%q) = %q, %q, %q, %v", got, item, kind, typ, err)
		}
	}
	if got := messages.ItemFilter("item-54321"); got != "sniper.item-54321.>" {
		t.Errorf("ItemFilter = %q", got)
	}
}

func TestParseSubjectRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"sniper",
		"sniper.item",
		"sniper.item.cmd",
		"sniper.item.cmd.start.extra",
		"other.item.cmd.start",
		"SNIPER.item.cmd.start",
	} {
		if item, kind, typ, err := messages.ParseSubject(s); err == nil {
			t.Errorf("ParseSubject(%q) = %q, %q, %q, want an error", s, item, kind, typ)
		}
	}
}

func TestValidItem(t *testing.T) {
	for _, item := range []string{"a", "item-54321", "A_b-9", "_", "-", strings.Repeat("x", 64)} {
		if err := messages.ValidItem(item); err != nil {
			t.Errorf("ValidItem(%q) = %v, want nil", item, err)
		}
	}
	for _, item := range []string{
		"",
		strings.Repeat("x", 65),
		"item.1",
		"item*",
		"*",
		">",
		"item>",
		"item 1",
		" item",
		"item\n",
		"ïtem",
		"item-€",
		"item/1",
		"item@host",
	} {
		err := messages.ValidItem(item)
		if err == nil {
			t.Errorf("ValidItem(%q) = nil, want an error", item)
			continue
		}
		if !errors.Is(err, messages.ErrInvalidItem) {
			t.Errorf("ValidItem(%q) = %v, does not wrap ErrInvalidItem", item, err)
		}
	}
}

func TestInputSubjects(t *testing.T) {
	got := messages.InputSubjects("item-1")
	want := []string{"sniper.item-1.cmd.>", "sniper.item-1.in.>"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("InputSubjects = %v, want %v", got, want)
	}
	got = messages.InputSubjects("*")
	want = []string{"sniper.*.cmd.>", "sniper.*.in.>"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("InputSubjects(*) = %v, want %v", got, want)
	}
}

func TestDecodeInput(t *testing.T) {
	tests := []struct {
		name    string
		subject string
		payload any
		want    auction.Input
	}{
		{"start", "sniper.i.cmd.start", messages.NewStart("i", 1100), auction.Start{StopPrice: 1100}},
		{"stop", "sniper.i.cmd.stop", messages.NewStop("i"), auction.Stop{}},
		{"price", "sniper.i.in.price", messages.NewPrice("i", 1000, 98, "other bidder", false),
			auction.Price{Current: 1000, Increment: 98, Bidder: "other bidder"}},
		{"price from sniper", "sniper.i.in.price", messages.NewPrice("i", 1098, 97, "sniper", true),
			auction.Price{Current: 1098, Increment: 97, Bidder: "sniper", FromSniper: true}},
		{"close", "sniper.i.in.close", messages.NewClose("i"), auction.Close{}},
		{"malformed", "sniper.i.in.malformed", messages.NewMalformed("i", "a broken message", "no ':'"),
			auction.Malformed{Body: "a broken message", Reason: "no ':'"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := json.Marshal(tt.payload)
			if err != nil {
				t.Fatal(err)
			}
			got, err := messages.DecodeInput(tt.subject, data)
			if err != nil {
				t.Fatalf("DecodeInput(%q, %s): %v", tt.subject, data, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DecodeInput(%q, %s) = %#v, want %#v", tt.subject, data, got, tt.want)
			}
		})
	}
}

func TestDecodeInputRejects(t *testing.T) {
	tests := []struct {
		name    string
		subject string
		data    string
		// mention is a part of the error message.
		mention string
	}{
		{"type does not match subject", "sniper.i.in.close", `{"type":"price","item":"i","current_price":1,"increment":1,"bidder":"b"}`, "does not match"},
		{"start labelled stop", "sniper.i.cmd.stop", `{"type":"start","item":"i","stop_price":5}`, "does not match"},
		{"missing type", "sniper.i.cmd.stop", `{"item":"i"}`, "does not match"},
		{"zero stop price", "sniper.i.cmd.start", `{"type":"start","item":"i","stop_price":0}`, "stop_price"},
		{"missing stop price", "sniper.i.cmd.start", `{"type":"start","item":"i"}`, "stop_price"},
		{"negative stop price", "sniper.i.cmd.start", `{"type":"start","item":"i","stop_price":-100}`, "stop_price"},
		{"fractional stop price", "sniper.i.cmd.start", `{"type":"start","item":"i","stop_price":10.5}`, "sniper.i.cmd.start"},
		{"not JSON", "sniper.i.cmd.start", `SOLVersion: 1.1; Event: CLOSE;`, "sniper.i.cmd.start"},
		{"output subject", "sniper.i.out.bid", `{"type":"bid","item":"i","price":5}`, "not an input"},
		{"join subject", "sniper.i.out.join", `{"type":"join","item":"i"}`, "not an input"},
		{"decision subject", "sniper.i.dec.state", `{"type":"state","item":"i"}`, "not an input"},
		{"unknown command", "sniper.i.cmd.pause", `{"type":"pause","item":"i"}`, "not an input"},
		{"in.start", "sniper.i.in.start", `{"type":"start","item":"i","stop_price":5}`, "not an input"},
		{"short subject", "sniper.i.start", `{"type":"start","item":"i","stop_price":5}`, "sniper.i.start"},
		{"foreign subject", "auction.i.cmd.start", `{"type":"start","item":"i","stop_price":5}`, "auction.i.cmd.start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := messages.DecodeInput(tt.subject, []byte(tt.data))
			if err == nil {
				t.Fatalf("DecodeInput(%q, %s) = %#v, want an error", tt.subject, tt.data, got)
			}
			if got != nil {
				t.Errorf("got %#v with the error", got)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not mention %q", err, tt.mention)
			}
		})
	}
}

func TestNewDecisionNamesWhatItSends(t *testing.T) {
	snap := auction.Snapshot{Item: "item-54321", State: auction.Bidding}
	tests := []struct {
		outs     []auction.Output
		wantType string
		wantSend []messages.Request
	}{
		{nil, "state", nil},
		{[]auction.Output{auction.Join{}}, "join", []messages.Request{{Type: "join"}}},
		{[]auction.Output{auction.Bid{Price: 1098}}, "bid", []messages.Request{{Type: "bid", Price: 1098}}},
		{[]auction.Output{auction.Join{}, auction.Bid{Price: 7}}, "join", []messages.Request{{Type: "join"}, {Type: "bid", Price: 7}}},
	}
	for _, tt := range tests {
		d, err := messages.NewDecision(snap, 12, tt.outs)
		if err != nil {
			t.Fatal(err)
		}
		if d.Type != tt.wantType || !reflect.DeepEqual(d.Send, tt.wantSend) || d.InputSeq != 12 || d.Snapshot != snap {
			t.Errorf("NewDecision(%v) = %+v, want type %q sending %v", tt.outs, d, tt.wantType, tt.wantSend)
		}
	}
	if _, err := messages.NewDecision(snap, 1, []auction.Output{auction.Join{}, bogusOutput{}}); err == nil {
		t.Error("NewDecision accepted an output it has no request for")
	}
}

func TestRequestBody(t *testing.T) {
	for _, tt := range []struct {
		r    messages.Request
		want string
	}{
		{messages.Request{Type: "join"}, messages.EncodeJoin()},
		{messages.Request{Type: "bid", Price: 1098}, messages.EncodeBid(1098)},
	} {
		if got, err := tt.r.Body(); err != nil || got != tt.want {
			t.Errorf("%+v.Body() = %q, %v; want %q", tt.r, got, err, tt.want)
		}
	}
	for _, bad := range []messages.Request{{Type: "bid", Price: 0}, {Type: "bid", Price: -5}, {Type: "retract"}} {
		if _, err := bad.Body(); err == nil {
			t.Errorf("%+v.Body() sent something", bad)
		}
	}
}

// bogusOutput satisfies auction.Output through embedding, as a future
// output kind the messages package does not know yet would.
type bogusOutput struct{ auction.Join }
