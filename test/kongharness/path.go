package kongharness

import (
	"fmt"
	"strings"
)

// Escape is kong/tools/uri.lua escape: what the router sends upstream
// escapes every byte outside the reserved and unreserved sets.
func Escape(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&'()*+,/:;=?@[]-_.~%", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}
