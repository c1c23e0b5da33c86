package body

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// TestParseMatchesPrevious parses ~10,000 generated bodies, valid ones and
// ones with 1-3 byte-level mutations, with Parse and with the parser as it
// was before its allocation work (previous_test.go), under several Limits
// (with and without a Vocab),
// and requires the same value or the same refusal (status, reason,
// pointer, offset and message). It also requires every refusal the parser
// makes to have been reached, so that the comparison covers them all.
func TestParseMatchesPrevious(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 2026))
	reasons := map[string]int{}
	accepted := 0
	for i := range 10000 {
		data := []byte(genJSON(rng, 0))
		if i%2 == 1 {
			for range 1 + rng.IntN(3) {
				data = mutate(rng, data)
			}
		}
		for _, lim := range previousLimits {
			if reason := matchPrevious(t, data, lim); reason != "" {
				reasons[reason]++
			} else {
				accepted++
			}
		}
	}
	for _, r := range []string{
		ReasonTooLarge, ReasonNotJSON, ReasonInvalidUTF8, ReasonLoneSurrogate, ReasonInvalidEscape, ReasonControlCharacter,
		ReasonDuplicateKey, ReasonAmbiguousKey, ReasonTooDeep, ReasonTrailingData, ReasonNumberInvalid,
	} {
		if reasons[r] == 0 {
			t.Errorf("no generated body was refused with %s: the comparison does not cover it", r)
		}
	}
	if accepted < 5000 {
		t.Errorf("only %d of 50,000 parses accepted: the generator makes too few valid bodies", accepted)
	}
	t.Logf("accepted %d, refused %v", accepted, reasons)
}

// FuzzParseMatchesPrevious is TestParseMatchesPrevious's comparison on
// the fuzzer's inputs, seeded with FuzzParse's seeds.
func FuzzParseMatchesPrevious(f *testing.F) {
	for _, s := range parseSeeds {
		f.Add([]byte(s))
	}
	f.Add(chatBody(1 << 10))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, lim := range previousLimits {
			matchPrevious(t, data, lim)
		}
	})
}

// previousLimits are the Limits both parsers are compared under.
var previousLimits = []Limits{
	{},
	{MaxDepth: 4},
	{MaxBytes: 160},
	{Names: names{"model", "messages", "role", "content"}},
	// A Vocab changes where strings live, never what they are.
	{Vocab: NewVocab("model", "Model", "messages", "role", "content", "k", "s", "user", "assistant", "system",
		"gpt-4o-mini", "Hello", "", "\\u00e9", "\u00e9", strings.Repeat("long-key-", 8), "a string of exactly thirty-three b", "64")},
}

// matchPrevious fails t unless Parse and the previous parser give the same
// value or the same refusal for data; it returns the refusal's reason, or
// "" when both accept.
func matchPrevious(t *testing.T, data []byte, lim Limits) string {
	t.Helper()
	got, gotErr := Parse(data, lim)
	want, wantErr := prevParse(data, lim)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%q (limits %+v): Parse gives error %v, the previous parser %v", data, lim, gotErr, wantErr)
	}
	if gotErr != nil {
		var g, w *Error
		if !errors.As(gotErr, &g) || !errors.As(wantErr, &w) || *g != *w {
			t.Fatalf("%q (limits %+v): Parse refuses with %#v, the previous parser with %#v", data, lim, gotErr, wantErr)
		}
		return g.Reason
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q (limits %+v): Parse gives %#v, the previous parser %#v", data, lim, got, want)
	}
	return ""
}

// Pieces of generated JSON text. Keys include ones that collide after
// unescaping or under case folding; strings include escapes, surrogate
// pairs, non-ASCII text and strings longer than the parser's short-string
// handling; numbers include ones at and over float64's range.
var (
	genKeys = []string{
		"model", "Model", "MODEL", "messages", "role", "content", "mod\\u0065l", "k", "\u212a", "s", "\u017f",
		"max_tokens", "temperature", "stream", "tools", "name", "", "a~/b", "\\u00e9", "\u00c9", "x\\ny",
		"user", "metadata", strings.Repeat("long-key-", 8), "\\ud83d\\ude00",
	}
	genStrings = []string{
		"user", "assistant", "system", "gpt-4o-mini", "Hello", "", "caf\u00e9", "\u6771\u4eac", "\U0001F642",
		"line\\nbreak", "quote \\\"here\\\"", "back\\\\slash", "\\/", "\\b\\f\\r\\t", "\\u00e9\\u0041", "\\ud83d\\ude00",
		"What is the weather like in Paris today? What is the weather like in Paris today?",
		"a string of exactly thirty-two b", "a string of exactly thirty-three b", "64", "0.7",
	}
	genNumbers = []string{
		"0", "-0", "1", "64", "256", "0.7", "-1.5e-3", "1e3", "1E+2", "2.0", "12345678901234567890",
		"1e400", "-1e400", "1e-400", strings.Repeat("9", 309), strings.Repeat("9", 308), "1.7976931348623159e308",
	}
	genSpace = []string{"", "", "", " ", "\n", "\t", "\r\n  "}
	// genNoise are the mutations' insertions: structure, escapes, bad
	// UTF-8, control characters, number parts, a byte order mark.
	genNoise = []string{
		`"`, `\`, "{", "}", "[", "]", ",", ":", `\u`, `\ud800`, `\udc00`, `\x`, "\x01", "\x1f", "\xff", "\xc3",
		"\xe2\x82", "\xed\xa0\x80", "01", "-", "e", "+", ".", " ", "\ufeff", "null", "tru", "NaN", `"model":1,`,
		`"Model":2,`, "[[[[[", "1e999",
	}
)

func pick(rng *rand.Rand, xs []string) string { return xs[rng.IntN(len(xs))] }

// genJSON returns valid JSON text (duplicate or case-ambiguous keys, deep
// nesting and overflowing numbers aside, which the parser refuses).
func genJSON(rng *rand.Rand, depth int) string {
	var b strings.Builder
	b.WriteString(pick(rng, genSpace))
	genValue(rng, &b, depth)
	b.WriteString(pick(rng, genSpace))
	return b.String()
}

func genValue(rng *rand.Rand, b *strings.Builder, depth int) {
	k := rng.IntN(10)
	if depth > 6 {
		k = 4 + rng.IntN(6) // scalars only
	}
	switch {
	case k < 2:
		b.WriteByte('{')
		n := rng.IntN(6)
		if rng.IntN(8) == 0 {
			n = 17 + rng.IntN(10) // past the pairwise case check
		}
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(pick(rng, genSpace) + `"`)
			if n > 8 && rng.IntN(2) == 0 {
				b.WriteString("key" + string(rune('a'+i)))
			} else {
				b.WriteString(pick(rng, genKeys))
			}
			b.WriteString(`"` + pick(rng, genSpace) + ":" + pick(rng, genSpace))
			genValue(rng, b, depth+1)
		}
		b.WriteByte('}')
	case k < 4:
		b.WriteByte('[')
		for i := range rng.IntN(5) {
			if i > 0 {
				b.WriteString("," + pick(rng, genSpace))
			}
			genValue(rng, b, depth+1)
		}
		b.WriteByte(']')
	case k < 7:
		b.WriteString(`"`)
		for range 1 + rng.IntN(2) {
			b.WriteString(pick(rng, genStrings))
		}
		b.WriteString(`"`)
	case k < 9:
		b.WriteString(pick(rng, genNumbers))
	default:
		b.WriteString(pick(rng, []string{"true", "false", "null"}))
	}
}

// mutate inserts noise, deletes or duplicates a range, or flips the case
// of a letter.
func mutate(rng *rand.Rand, data []byte) []byte {
	i := rng.IntN(len(data) + 1)
	switch rng.IntN(4) {
	case 0:
		return append(data[:i:i], append([]byte(pick(rng, genNoise)), data[i:]...)...)
	case 1:
		j := min(len(data), i+1+rng.IntN(4))
		return append(data[:i:i], data[j:]...)
	case 2:
		j := min(len(data), i+rng.IntN(16))
		return append(data[:j:j], append(append([]byte{}, data[i:j]...), data[j:]...)...)
	default:
		out := append([]byte{}, data...)
		if i < len(out) && (out[i]|0x20 >= 'a' && out[i]|0x20 <= 'z') {
			out[i] ^= 0x20
		}
		return out
	}
}
