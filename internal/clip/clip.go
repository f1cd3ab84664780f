// Package clip shortens text from outside (an auction's message, a
// response body) for logs and errors, so that a huge or hostile input
// cannot flood them.
package clip

import "unicode/utf8"

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
