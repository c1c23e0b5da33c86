package body

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzLimits keeps the depth cap small so the fuzzer reaches it.
var fuzzLimits = Limits{MaxDepth: 16}

// FuzzParse compares Parse with encoding/json, the reference for syntax:
//   - whenever Parse accepts, encoding/json accepts and decodes the same value;
//   - whenever encoding/json accepts an input that breaks none of the rules
//     Parse adds (duplicate keys, invalid UTF-8, lone surrogates, depth,
//     overflowing numbers, size), Parse accepts it.
//
// The rule checks below are written independently of the parser: they work
// on encoding/json's token stream and a plain scan of the raw bytes.
func FuzzParse(f *testing.F) {
	for _, s := range parseSeeds {
		f.Add([]byte(s))
	}
	f.Add(chatBody(1 << 10))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkAgainstEncodingJSON(t, data)
	})
}

// parseSeeds start the parser's fuzz targets: each rule's refusals and
// the edge cases next to them.
var parseSeeds = []string{
	`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
	`{"model":"a","model":"b"}`,
	`{"model":"cheap","MODEL":"expensive"}`,
	`{"a":1}{"b":2}`, `{"a":1}xyz`, `[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]`,
	"\"\xff\"", `"\ud800"`, `"\udc00"`, `"\ud83d\ude00"`, `"\ud800\u0041"`,
	`1e400`, `-1e400`, `1e-400`, `01`, `-0`, `+1`, `.5`, `1.`, `NaN`, `1.5.3`, `0x10`,
	`{"a":{"b":{"c":1,"c":2}}}`, `{"mod\u0065l":1,"model":2}`, `{"~/":[true,false,null]}`,
	`"a\nb\u00e9\/\"\\\b\f\r\t"`, "\"\x7f\"", "\"\x01\"", `""`, `{}`, `[]`, ``, " ",
	"\xef\xbb\xbf{}", `{"a":[1,2,{"b":null}],"c":"é😀"}`, `12345678901234567890123`,
	strings.Repeat("9", 309), `1.7976931348623159e308`, `{"x":"\ud83d\ude00\u00e9\n"}`,
	strings.Repeat("[", 17) + strings.Repeat("]", 17), strings.Repeat("[", 16) + strings.Repeat("]", 16),
	`{"model":"a","Model":"b"}`, `{"k":1,"\u212a":2}`, "{\"s\":1,\"\u017f\":2}", `{"a":{"Ss":1,"s\u017f":2}}`,
	`{"\u00e9":1,"\u00c9":2}`, `{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"ka":10,"kb":11,"kc":12,"kd":13,"ke":14,"kf":15,"kg":16,"KA":17}`,
}

func checkAgainstEncodingJSON(t *testing.T, data []byte) {
	t.Helper()
	got, err := Parse(data, fuzzLimits)
	want, stdOK := stdDecode(data)
	if err == nil {
		if !stdOK {
			t.Fatalf("Parse accepted %q, encoding/json refuses it", data)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: Parse gives %#v, encoding/json %#v", data, got, want)
		}
		return
	}
	var e *Error
	if !errors.As(err, &e) || e.Status != 400 || !strings.HasPrefix(e.Message, messagePrefix) {
		t.Fatalf("%q: malformed error %#v", data, err)
	}
	if stdOK {
		if why := breaksRule(data); why == "" {
			t.Fatalf("Parse refused %q (%v), but encoding/json accepts it and it breaks no rule", data, err)
		}
	}
}

// stdDecode is encoding/json's verdict: exactly one value, then only
// whitespace; numbers as json.Number.
func stdDecode(data []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return v, true
}

// breaksRule names the first rule of Parse's that input accepted by
// encoding/json breaks, or "".
func breaksRule(data []byte) string {
	if len(data) > fuzzLimits.maxBytes() {
		return "size"
	}
	if !utf8.Valid(data) {
		return "invalid UTF-8"
	}
	if hasLoneSurrogate(data) {
		return "lone surrogate"
	}
	// Strings now decode exactly, so the token stream shows the real keys.
	type frame struct {
		object  bool
		wantKey bool
		keys    map[string]bool
	}
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return "" // io.EOF: the whole value was read
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if top != nil && top.object {
					top.wantKey = true
				}
				stack = append(stack, &frame{object: v == '{', wantKey: true, keys: map[string]bool{}})
				if len(stack) > fuzzLimits.maxDepth() {
					return "depth"
				}
			default:
				stack = stack[:len(stack)-1]
			}
		case string:
			if top != nil && top.object && top.wantKey {
				if top.keys[v] {
					return "duplicate key"
				}
				for k := range top.keys {
					if strings.EqualFold(k, v) {
						return "keys equal under case folding"
					}
				}
				top.keys[v] = true
				top.wantKey = false
				continue
			}
			if top != nil && top.object {
				top.wantKey = true
			}
		default:
			if n, ok := v.(json.Number); ok {
				if f, _ := strconv.ParseFloat(string(n), 64); math.IsInf(f, 0) {
					return "number overflow"
				}
			}
			if top != nil && top.object {
				top.wantKey = true
			}
		}
	}
}

// hasLoneSurrogate scans the string literals of syntactically valid JSON for
// \u escapes of unpaired UTF-16 surrogates.
func hasLoneSurrogate(data []byte) bool {
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if !inString {
			inString = c == '"'
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if data[i+1] != 'u' {
				i++
				continue
			}
			r, _ := strconv.ParseUint(string(data[i+2:i+6]), 16, 32)
			i += 5
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return true
			case r >= 0xD800 && r <= 0xDBFF:
				if i+6 >= len(data) || data[i+1] != '\\' || data[i+2] != 'u' {
					return true
				}
				lo, _ := strconv.ParseUint(string(data[i+3:i+7]), 16, 32)
				if lo < 0xDC00 || lo > 0xDFFF {
					return true
				}
				i += 6
			}
		}
	}
	return false
}

// The oracle itself must see each rule, or the second property is vacuous.
func TestBreaksRule(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"a":[1,{"b":"x"}],"c":"\ud83d\ude00"}`, ""},
		{`{"a":1,"a":2}`, "duplicate key"},
		{`{"a":{"b":1},"c":{"b":2}}`, ""},
		{`{"a":"x","b":{"a":1,"a":2}}`, "duplicate key"},
		{`{"a":"b","b":"a"}`, ""},
		{`{"model":1,"MODEL":2}`, "keys equal under case folding"},
		{`{"a":{"k":1},"b":[{"\u212a":2}]}`, ""},
		{`{"a":[{"k":1,"\u212a":2}]}`, "keys equal under case folding"},
		{"\"\xff\"", "invalid UTF-8"},
		{`"\\ud800"`, ""},
		{`"\ud800"`, "lone surrogate"},
		{`"\ud800\u0041"`, "lone surrogate"},
		{`"\udc00"`, "lone surrogate"},
		{strings.Repeat("[", 17) + strings.Repeat("]", 17), "depth"},
		{strings.Repeat("[", 16) + strings.Repeat("]", 16), ""},
		{`[1e400]`, "number overflow"},
		{`[1e-400]`, ""},
		{strings.Repeat(" ", DefaultMaxBytes+1), "size"},
	}
	for _, tc := range tests {
		if got := breaksRule([]byte(tc.in)); got != tc.want {
			t.Errorf("breaksRule(%.40q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzDecode feeds arbitrary bodies and Content-Encoding values to Decode
// with a small cap: the output never passes the cap, a success decodes what
// the standard library decodes (the whole stream, nothing after it), and
// every refusal is an *Error with one of the documented statuses.
func FuzzDecode(f *testing.F) {
	small := []byte(`{"model":"m","messages":[]}`)
	bomb := bytes.Repeat([]byte{'a'}, 64<<10)
	for _, s := range []struct {
		raw      []byte
		encoding string
	}{
		{small, ""}, {small, "identity"}, {gz(f, small), "gzip"}, {gz(f, small), "x-gzip"},
		{zl(f, small), "deflate"}, {rawDeflate(f, small), "deflate"}, {gz(f, bomb), "GZIP"},
		{append(gz(f, small), gz(f, small)...), "gzip"}, {append(zl(f, small), 'x'), "deflate"},
		{gz(f, small), "gzip, gzip"}, {small, "br"}, {small, " , identity,"}, {nil, "gzip"},
	} {
		f.Add(s.raw, s.encoding)
	}
	const limit = 4 << 10
	f.Fuzz(func(t *testing.T, raw []byte, encoding string) {
		out, err := Decode(raw, false, encoding, Limits{MaxBytes: limit})
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is %T, want *Error", err, err)
			}
			switch e.Status {
			case 400, 413, 415:
			default:
				t.Fatalf("status %d for %v", e.Status, err)
			}
			return
		}
		if len(out) > limit {
			t.Fatalf("%d bytes out, over the cap of %d", len(out), limit)
		}
		coding, _ := singleCoding(encoding)
		var want []byte
		switch coding {
		case "":
			want = raw
		case "gzip", "x-gzip":
			zr, err := gzip.NewReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatalf("Decode accepted a stream gzip refuses: %v", err)
			}
			if want, err = io.ReadAll(zr); err != nil {
				t.Fatalf("Decode accepted a stream gzip refuses: %v", err)
			}
		case "deflate":
			src := bytes.NewReader(raw)
			zr, err := zlib.NewReader(src)
			if err != nil {
				t.Fatalf("Decode accepted a stream zlib refuses: %v", err)
			}
			if want, err = io.ReadAll(zr); err != nil || src.Len() != 0 {
				t.Fatalf("Decode accepted a stream zlib refuses (or trailing data): %v", err)
			}
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("Decode gives %q, the standard library %q", out, want)
		}
	})
}
