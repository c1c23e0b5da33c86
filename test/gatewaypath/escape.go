// Package gatewaypath holds what Envoy's and Kong's path normalisation have
// in common, for the gateway harnesses (test/envoyharness,
// test/kongharness): reading a percent-escape. Each harness keeps its own
// gateway's rules for what it then does with the byte.
//
// It is deliberately not policy/models' normaliser: a harness models the
// gateway, so sharing modelguard's own code would hide the very mismatches
// the end-to-end tests are there to find.
package gatewaypath

import "strconv"

// Escaped reports whether s[i:] starts with a percent-escape (% and two hex
// digits, either case, as both gateways accept) and returns the byte it
// stands for.
func Escaped(s string, i int) (byte, bool) {
	if s[i] != '%' || i+2 >= len(s) {
		return 0, false
	}
	// ParseUint takes no sign, and underscores only with base 0, so it
	// accepts exactly two hex digits here.
	v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
	return byte(v), err == nil
}
