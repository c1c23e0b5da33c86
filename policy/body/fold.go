package body

import (
	"hash/maphash"
	"strings"
	"unicode"
	"unicode/utf8"
)

// foldPairwiseMax is the largest object whose member names are compared
// pair by pair; bigger objects (logit_bias, metadata maps) are hashed so the
// check stays linear.
const foldPairwiseMax = 16

// foldSeed keys the hashes of folded names; set once, never changed.
var foldSeed = maphash.MakeSeed()

// foldDuplicate returns the index of the first member whose name equals an
// earlier member's under the simple case folding encoding/json uses to
// match member names to struct fields ("model" and "Model", "sk" and
// "\u017fk", "k" and the Kelvin sign U+212A), or -1. Byte-equal names were
// already refused as duplicates.
func foldDuplicate(ms []member) int {
	if len(ms) <= foldPairwiseMax {
		// Only non-ASCII runes fold across byte values and lengths (the
		// Kelvin sign is 3 bytes, k one), so two ASCII names of different
		// lengths, or whose first bytes differ in more than case, differ.
		var ascii [foldPairwiseMax]bool
		for i := range ms {
			ascii[i] = isASCII(ms[i].key)
		}
		for i := 1; i < len(ms); i++ {
			a := ms[i].key
			for j := range i {
				b := ms[j].key
				if ascii[i] && ascii[j] && (len(a) != len(b) || a != "" && a[0]|0x20 != b[0]|0x20) {
					continue
				}
				if strings.EqualFold(a, b) {
					return i
				}
			}
		}
		return -1
	}
	seen := make(map[uint64]int, len(ms))
	var buf [64]byte
	for i := range ms {
		h := maphash.Bytes(foldSeed, AppendFold(buf[:0], ms[i].key))
		j, ok := seen[h]
		if !ok {
			seen[h] = i
			continue
		}
		if strings.EqualFold(ms[i].key, ms[j].key) {
			return i
		}
		// Two different names with one 64-bit hash: compare with every
		// earlier name rather than trust the map.
		for k := range i {
			if strings.EqualFold(ms[i].key, ms[k].key) {
				return i
			}
		}
	}
	return -1
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// AppendFold appends s folded so that two strings fold to the same bytes
// exactly when strings.EqualFold reports them equal: ASCII letters upper
// case, every other rune the smallest of its simple folding orbit. It is
// encoding/json's foldName (unexported there); the folding tables are the
// unicode package's.
func AppendFold(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		dst = utf8.AppendRune(dst, foldRune(r))
		i += n
	}
	return dst
}

// foldRune returns the smallest rune of r's simple folding orbit.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}
