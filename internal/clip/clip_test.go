package clip

import (
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"a longer message", 8, "a longer..."},
		{"prix: 100€", 9, "prix: 100..."}, // "€" is 3 bytes: not cut in half
		{"€€", 4, "€..."},
		{"anything", 0, "..."},
	} {
		got := String(c.in, c.n)
		if got != c.want || !utf8.ValidString(got) {
			t.Errorf("String(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"item-1 bidder":   "item-1 bidder",
		"ünïcødé":         "ünïcødé",
		"a\x1b[2Jb":       `a\x1b[2Jb`,
		"two\nlines\r":    `two\nlines\r`,
		"tab\there\u200b": `tab\there\u200b`,
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}
