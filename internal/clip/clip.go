// Package clip shortens text from outside (an auction's message, a
// response body) for logs and errors, so that a huge or hostile input
// cannot flood them, and makes it safe to print on a terminal.
package clip

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// String returns s if it is at most n bytes long, else its first n bytes,
// cut back to a whole UTF-8 character, followed by "...".
func String(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := max(n, 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// Printable escapes what must not reach a terminal as is: control
// characters (an escape sequence in a bidder's name, a newline in a
// message body) are written as Go escapes ("\x1b", "\n").
func Printable(s string) string {
	ok := true
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsPrint(r) || r == ' ' {
			b.WriteRune(r)
			continue
		}
		q := strconv.QuoteRune(r) // '\x1b'
		b.WriteString(q[1 : len(q)-1])
	}
	return b.String()
}
