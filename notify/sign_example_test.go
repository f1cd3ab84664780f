package notify_test

import (
	"fmt"

	"sniper/notify"
)

// The signature of a body, as a receiver computes it; the same as
// printf %s "$BODY" | openssl dgst -sha256 -hmac "$SECRET" (the README).
func ExampleSign() {
	fmt.Println(notify.Sign("k", []byte(`{"item":"x"}`)))
	// Output: sha256=847ecda8823c10d51378c9beb29b1f10a5070ced00f6f64ccc6eb8e4c1cc26f0
}
