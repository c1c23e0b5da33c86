package body

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unsafe"
)

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want any
	}{
		{"keys differing in more than case", `{"model":"a","modes":"b","Mode":"c","k":1,"ks":2,"\u212a\u212a":3}`,
			map[string]any{"model": "a", "modes": "b", "Mode": "c", "k": json.Number("1"), "ks": json.Number("2"), "\u212a\u212a": json.Number("3")}},
		{"same names in different objects", `{"a":{"model":1},"b":[{"Model":2},{"MODEL":3}]}`,
			map[string]any{"a": map[string]any{"model": json.Number("1")}, "b": []any{map[string]any{"Model": json.Number("2")}, map[string]any{"MODEL": json.Number("3")}}}},
		{"surrogate pair", `"\ud83d\ude00"`, "\U0001F600"},
		{"surrogate pair upper-case hex", `"x\uD834\uDD1Ey"`, "x\U0001D11Ey"},
		{"escapes", `"a\nb\u00e9\/\"\\\b\f\r\t"`, "a\nb\u00e9/\"\\\b\f\r\t"},
		{"escape after raw UTF-8 and before plain text", `"é\u0041😀 tail"`, "éA😀 tail"},
		{"escaped NUL", `"\u0000"`, "\x00"},
		{"escaped key equals plain value", `{"mod\u0065l":"model"}`, map[string]any{"model": "model"}},
		{"raw UTF-8", `"é€😀"`, "é€😀"},
		{"DEL is not a control character", "\"\x7f\"", "\x7f"},
		{"empty string", `""`, ""},
		{"empty key", `{"":1}`, map[string]any{"": json.Number("1")}},
		{"numbers keep their text", `[0,-0,1.5e-10,1E+2,2e-0,12345678901234567890123,1.7976931348623157e308,-1.7976931348623157e308]`,
			[]any{json.Number("0"), json.Number("-0"), json.Number("1.5e-10"), json.Number("1E+2"), json.Number("2e-0"),
				json.Number("12345678901234567890123"), json.Number("1.7976931348623157e308"), json.Number("-1.7976931348623157e308")}},
		{"a number and a string of the same text keep their types", `{"a":"64","b":64,"c":[64,"64",64,"0.5",0.5]}`,
			map[string]any{"a": "64", "b": json.Number("64"), "c": []any{json.Number("64"), "64", json.Number("64"), "0.5", json.Number("0.5")}}},
		{"underflow rounds to zero and is accepted", `1e-400`, json.Number("1e-400")},
		{"308-digit integer", strings.Repeat("9", 308), json.Number(strings.Repeat("9", 308))},
		{"literals", `[true,false,null]`, []any{true, false, nil}},
		{"empty containers", `{"a":{},"b":[]}`, map[string]any{"a": map[string]any{}, "b": []any{}}},
		{"whitespace everywhere", " \t\r\n{ \"a\" : [ 1 , 2 ] , \"b\" : null } \n", map[string]any{"a": []any{json.Number("1"), json.Number("2")}, "b": nil}},
		{"top-level scalar", `"just a string"`, "just a string"},
		{"same key in sibling objects", `[{"a":1},{"a":2}]`, []any{map[string]any{"a": json.Number("1")}, map[string]any{"a": json.Number("2")}}},
		{"same key at different depths", `{"a":{"a":{"a":1}}}`, map[string]any{"a": map[string]any{"a": map[string]any{"a": json.Number("1")}}}},
		{"nested arrays keep their own elements", `[[1,[2,3]],[4]]`,
			[]any{[]any{json.Number("1"), []any{json.Number("2"), json.Number("3")}}, []any{json.Number("4")}}},
		{"depth exactly at the limit", strings.Repeat("[", 64) + strings.Repeat("]", 64), nest(64)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in), Limits{})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

// nest returns n nested empty arrays as Parse represents them.
func nest(n int) any {
	var v any = []any{}
	for range n - 1 {
		v = []any{v}
	}
	return v
}

func TestParseRefuses(t *testing.T) {
	longKey := strings.Repeat("k", 100)
	tests := []struct {
		name    string
		in      string
		lim     Limits
		status  int
		reason  string
		pointer string
	}{
		// The JSON rows of the security note.
		{"duplicate key", `{"model":"a","model":"b"}`, Limits{}, 400, ReasonDuplicateKey, "/model"},
		{"two documents", `{"model":"a"}{"model":"b"}`, Limits{}, 400, ReasonTrailingData, ""},
		{"document then junk", `{"model":"a"}xyz`, Limits{}, 400, ReasonTrailingData, ""},
		{"10,001 nested arrays", strings.Repeat("[", 10001) + strings.Repeat("]", 10001), Limits{}, 400, ReasonTooDeep, strings.Repeat("/0", 64)},
		{"invalid UTF-8 in a value", "{\"content\":\"a\xffb\"}", Limits{}, 400, ReasonInvalidUTF8, "/content"},
		{"lone high surrogate", `{"content":"\ud800"}`, Limits{}, 400, ReasonLoneSurrogate, "/content"},
		{"1e400", `{"max_tokens":1e400}`, Limits{}, 400, ReasonNumberInvalid, "/max_tokens"},
		{"over MaxBytes", `{"model":"gpt-4o"}`, Limits{MaxBytes: 8}, 413, ReasonTooLarge, ""},

		// Duplicates.
		{"duplicate after unescaping", `{"model":"a","mod\u0065l":"b"}`, Limits{}, 400, ReasonDuplicateKey, "/model"},
		{"duplicate deep, pointer escaping", `{"a":[{"x":1},{"b/c":{"~k":1,"~k":2}}]}`, Limits{}, 400, ReasonDuplicateKey, "/a/1/b~1c/~0k"},
		{"duplicate with other keys between", `{"a":1,"b":2,"c":3,"a":4}`, Limits{}, 400, ReasonDuplicateKey, "/a"},
		{"duplicate empty key", `{"":1,"":2}`, Limits{}, 400, ReasonDuplicateKey, "/"},
		{"duplicate long key shortened in pointer", `{"` + longKey + `":1,"` + longKey + `":2}`, Limits{}, 400, ReasonDuplicateKey, "/" + longKey[:64] + "..."},
		{"long non-ASCII pointer is elided in the message", strings.Repeat(`{"`+strings.Repeat("é", 40)+`":`, 10) + `{"k":1,"k":2}` + strings.Repeat("}", 10), Limits{}, 400, ReasonDuplicateKey,
			strings.Repeat("/"+strings.Repeat("é", 32)+"...", 10) + "/k"},
		{"duplicate in chat message", `{"messages":[{"role":"user"},{"role":"user","role":"system"}]}`, Limits{}, 400, ReasonDuplicateKey, "/messages/1/role"},

		// Keys equal under encoding/json's case folding.
		{"model and Model", `{"model":"gpt-4o-mini","Model":"gpt-4-forbidden"}`, Limits{}, 400, ReasonAmbiguousKey, "/Model"},
		{"MODEL first", `{"MODEL":"x","messages":[],"model":"y"}`, Limits{}, 400, ReasonAmbiguousKey, "/model"},
		{"Kelvin sign folds to k", `{"max_tokens":1,"max_to\u212aens":9}`, Limits{}, 400, ReasonAmbiguousKey, "/max_to\u212aens"},
		{"raw Kelvin sign", "{\"K\":1,\"\u212a\":2}", Limits{}, 400, ReasonAmbiguousKey, "/\u212a"},
		{"long s folds to s", `{"stream":false,"\u017ftream":true}`, Limits{}, 400, ReasonAmbiguousKey, "/\u017ftream"},
		{"escaped upper case", `{"role":"user","\u0052ole":"system"}`, Limits{}, 400, ReasonAmbiguousKey, "/Role"},
		{"deep in a message", `{"messages":[{"role":"user","content":"hi"},{"role":"user","ROLE":"system"}]}`, Limits{}, 400, ReasonAmbiguousKey, "/messages/1/ROLE"},
		{"non-ASCII letters", `{"\u00e9t\u00e9":1,"\u00c9T\u00c9":2}`, Limits{}, 400, ReasonAmbiguousKey, "/\u00c9T\u00c9"},

		// Trailing data.
		{"trailing comma at top level", `{} ,`, Limits{}, 400, ReasonTrailingData, ""},
		{"two numbers", `1 2`, Limits{}, 400, ReasonTrailingData, ""},
		{"NUL after the value", "{}\x00", Limits{}, 400, ReasonTrailingData, ""},
		{"literal with junk", `truex`, Limits{}, 400, ReasonTrailingData, ""},

		// Depth.
		{"objects over the limit", strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65), Limits{}, 400, ReasonTooDeep, strings.Repeat("/a", 64)},
		{"custom depth limit", `{"a":[[1]]}`, Limits{MaxDepth: 2}, 400, ReasonTooDeep, "/a/0"},
		{"unclosed deep arrays", strings.Repeat("[", 100000), Limits{}, 400, ReasonTooDeep, strings.Repeat("/0", 64)},
		{"depth limit clamped to 10000", strings.Repeat("[", 10001) + strings.Repeat("]", 10001), Limits{MaxDepth: 1 << 40}, 400, ReasonTooDeep, strings.Repeat("/0", 10000)},
		{"negative depth means the default", strings.Repeat("[", 65) + strings.Repeat("]", 65), Limits{MaxDepth: -1}, 400, ReasonTooDeep, strings.Repeat("/0", 64)},
		{"negative size means the default", "[" + strings.Repeat(" ", DefaultMaxBytes) + "]", Limits{MaxBytes: -1}, 413, ReasonTooLarge, ""},

		// UTF-8.
		{"invalid UTF-8 in a key", "{\"a\xff\":1}", Limits{}, 400, ReasonInvalidUTF8, ""},
		{"truncated sequence", "\"\xc3\"", Limits{}, 400, ReasonInvalidUTF8, ""},
		{"overlong encoding", "\"\xc0\xaf\"", Limits{}, 400, ReasonInvalidUTF8, ""},
		{"UTF-8 encoded surrogate", "\"\xed\xa0\x80\"", Limits{}, 400, ReasonInvalidUTF8, ""},
		{"invalid UTF-8 after an escape", "[\"\\n\xff\"]", Limits{}, 400, ReasonInvalidUTF8, "/0"},
		{"byte order mark", "\xef\xbb\xbf{}", Limits{}, 400, ReasonNotJSON, ""},
		{"invalid UTF-8 outside strings", "[\xff]", Limits{}, 400, ReasonNotJSON, "/0"},

		// Surrogates.
		{"high surrogate then text", `"\ud800x"`, Limits{}, 400, ReasonLoneSurrogate, ""},
		{"high surrogate then BMP escape", `"\ud800\u0041"`, Limits{}, 400, ReasonLoneSurrogate, ""},
		{"two high surrogates", `"\ud800\ud800"`, Limits{}, 400, ReasonLoneSurrogate, ""},
		{"lone low surrogate", `"\udc00"`, Limits{}, 400, ReasonLoneSurrogate, ""},
		{"reversed pair", `"\udfff\ud800"`, Limits{}, 400, ReasonLoneSurrogate, ""},
		{"high surrogate at end of input", `"\ud800`, Limits{}, 400, ReasonLoneSurrogate, ""},
		{"lone surrogate in a key", `{"\udc00":1}`, Limits{}, 400, ReasonLoneSurrogate, ""},

		// Numbers.
		{"leading zero", `01`, Limits{}, 400, ReasonNumberInvalid, ""},
		{"negative leading zero", `[-01]`, Limits{}, 400, ReasonNumberInvalid, "/0"},
		{"plus sign", `{"n":+1}`, Limits{}, 400, ReasonNumberInvalid, "/n"},
		{"leading dot", `.5`, Limits{}, 400, ReasonNumberInvalid, ""},
		{"trailing dot", `1.`, Limits{}, 400, ReasonNumberInvalid, ""},
		{"lone minus", `-`, Limits{}, 400, ReasonNumberInvalid, ""},
		{"empty exponent", `1e`, Limits{}, 400, ReasonNumberInvalid, ""},
		{"signed empty exponent", `1e+`, Limits{}, 400, ReasonNumberInvalid, ""},
		{"NaN", `NaN`, Limits{}, 400, ReasonNumberInvalid, ""},
		{"Infinity", `Infinity`, Limits{}, 400, ReasonNumberInvalid, ""},
		{"-Infinity", `-Infinity`, Limits{}, 400, ReasonNumberInvalid, ""},
		{"hex", `0x10`, Limits{}, 400, ReasonTrailingData, ""},
		{"two dots", `1.5.3`, Limits{}, 400, ReasonNumberInvalid, ""},
		{"-1e400", `-1e400`, Limits{}, 400, ReasonNumberInvalid, ""},
		{"just over MaxFloat64", `1.7976931348623159e308`, Limits{}, 400, ReasonNumberInvalid, ""},
		{"huge exponent", `1e99999999999999999999`, Limits{}, 400, ReasonNumberInvalid, ""},
		{"309-digit integer", "9" + strings.Repeat("0", 308), Limits{}, 400, ReasonNumberInvalid, ""},
		{"400-digit integer", "1" + strings.Repeat("0", 399), Limits{}, 400, ReasonNumberInvalid, ""},

		// Strings.
		{"raw NUL in a string", "\"a\x00b\"", Limits{}, 400, ReasonControlCharacter, ""},
		{"raw newline in a string", "{\"a\":\"x\ny\"}", Limits{}, 400, ReasonControlCharacter, "/a"},
		{"raw tab after an escape", "\"\\n\t\"", Limits{}, 400, ReasonControlCharacter, ""},
		{"unknown escape", `"\x41"`, Limits{}, 400, ReasonInvalidEscape, ""},
		{"single-quote escape", `"\'"`, Limits{}, 400, ReasonInvalidEscape, ""},
		{"short u escape", `"\u12"`, Limits{}, 400, ReasonInvalidEscape, ""},
		{"non-hex u escape", `"\u12g4"`, Limits{}, 400, ReasonInvalidEscape, ""},
		{"unterminated string", `"abc`, Limits{}, 400, ReasonNotJSON, ""},
		{"backslash at end", `"abc\`, Limits{}, 400, ReasonNotJSON, ""},

		// Syntax.
		{"empty", ``, Limits{}, 400, ReasonNotJSON, ""},
		{"whitespace only", " \n\t\r ", Limits{}, 400, ReasonNotJSON, ""},
		{"unclosed object", `{`, Limits{}, 400, ReasonNotJSON, ""},
		{"key without value", `{"a"}`, Limits{}, 400, ReasonNotJSON, ""},
		{"missing value", `{"a":}`, Limits{}, 400, ReasonNotJSON, "/a"},
		{"trailing comma in object", `{"a":1,}`, Limits{}, 400, ReasonNotJSON, ""},
		{"trailing comma in array", `[1,]`, Limits{}, 400, ReasonNotJSON, "/1"},
		{"missing comma", `[1 2]`, Limits{}, 400, ReasonNotJSON, ""},
		{"single quotes", `{'a':1}`, Limits{}, 400, ReasonNotJSON, ""},
		{"unquoted key", `{a:1}`, Limits{}, 400, ReasonNotJSON, ""},
		{"number key", `{1:2}`, Limits{}, 400, ReasonNotJSON, ""},
		{"truncated literal", `tru`, Limits{}, 400, ReasonNotJSON, ""},
		{"wrong literal case", `True`, Limits{}, 400, ReasonNotJSON, ""},
		{"comment", `{"a":1 /* x */}`, Limits{}, 400, ReasonNotJSON, ""},
		{"unclosed nested array", `{"a":[[[[1}`, Limits{}, 400, ReasonNotJSON, "/a/0/0/0"},
		{"form feed is not whitespace", "\f{}", Limits{}, 400, ReasonNotJSON, ""},
		{"object ends early", `{"a":1`, Limits{}, 400, ReasonNotJSON, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Parse([]byte(tc.in), tc.lim)
			if v != nil {
				t.Errorf("value %#v returned with an error", v)
			}
			checkError(t, err, tc.status, tc.reason)
			var e *Error
			if errors.As(err, &e) && e.Pointer != tc.pointer {
				t.Errorf("pointer %q, want %q", e.Pointer, tc.pointer)
			}
		})
	}
}

// checkError asserts that err is an *Error with the status and reason and a
// well-formed message.
func checkError(t *testing.T, err error, status int, reason string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want *Error", err, err)
	}
	if e.Status != status || e.Reason != reason {
		t.Errorf("got %d %s (%s), want %d %s", e.Status, e.Reason, e.Message, status, reason)
	}
	if !strings.HasPrefix(e.Message, messagePrefix) || len(e.Message) > 300 {
		t.Errorf("message %q: want a short message starting with %q", e.Message, messagePrefix)
	}
	for _, r := range e.Message {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) {
			t.Errorf("message %q has a non-printable or non-ASCII character", e.Message)
			break
		}
	}
	if e.Error() != e.Reason+": "+e.Message {
		t.Errorf("Error() = %q", e.Error())
	}
}

// A deep body is refused after MaxDepth levels, not after walking it all:
// refusing 10 MiB of "[" must cost about as much as refusing 100 bytes of it.
// Compared by work done (bytes examined), not by time.
func TestParseDepthStopsEarly(t *testing.T) {
	huge := []byte(strings.Repeat("[", 10<<20))
	_, err := Parse(huge, Limits{MaxBytes: 16 << 20})
	var e *Error
	if !errors.As(err, &e) || e.Reason != ReasonTooDeep {
		t.Fatalf("err = %v, want %s", err, ReasonTooDeep)
	}
	if e.Offset != 64 {
		t.Errorf("stopped at byte %d, want 64 (the 65th '[')", e.Offset)
	}
}

func TestParseValueSurvivesLaterParses(t *testing.T) {
	// Keys and short values are shared within one parse; a value must not
	// change when the scratch buffers are reused for later strings.
	in := `{"role":"user","x":"a\nb","y":"c\td","role2":"user","k":["a\nb","user"]}`
	v, err := Parse([]byte(in), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"role": "user", "x": "a\nb", "y": "c\td", "role2": "user", "k": []any{"a\nb", "user"}}
	if _, err := Parse([]byte(`{"role":"assistant","x":"zzzzzz"}`), Limits{}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("got %#v, want %#v", v, want)
	}
}

func TestParseBigDocuments(t *testing.T) {
	for _, size := range []int{64 << 10, 1 << 20} {
		data := chatBody(size)
		got, err := Parse(data, Limits{MaxBytes: 2 << 20})
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		var want any
		dec := json.NewDecoder(strings.NewReader(string(data)))
		dec.UseNumber()
		if err := dec.Decode(&want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%d bytes: Parse and encoding/json disagree", size)
		}
	}

	// Many keys in one object: linear duplicate detection, and a duplicate
	// at the very end is still found.
	var b strings.Builder
	b.WriteString("{")
	for i := range 50000 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"k` + strconv.Itoa(i) + `":` + strconv.Itoa(i))
	}
	many := b.String()
	v, err := Parse([]byte(many+"}"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if m := v.(map[string]any); len(m) != 50000 || m["k49999"] != json.Number("49999") {
		t.Errorf("got %d keys", len(m))
	}
	_, err = Parse([]byte(many+`,"k17":0}`), Limits{})
	checkError(t, err, 400, ReasonDuplicateKey)
	if e := new(Error); errors.As(err, &e) && e.Pointer != "/k17" {
		t.Errorf("pointer %q", e.Pointer)
	}
	// Big objects are hashed rather than compared pair by pair: a name
	// differing only in case, or by a Kelvin sign, is still found.
	for _, key := range []string{"K17", "\u212a17"} {
		_, err = Parse([]byte(many+`,"`+key+`":0}`), Limits{})
		checkError(t, err, 400, ReasonAmbiguousKey)
	}
}

// names is a Names of a fixed list.
type names []string

func (n names) Named(name string) bool { return slices.Contains(n, name) }

// Messages show the member names Limits.Names allows and "*" for the
// caller's; Pointer keeps the real names for operators.
func TestMessageHidesCallerNames(t *testing.T) {
	tests := []struct {
		in, shown string
		names     Names
	}{
		{`{"metadata":{"sk-secret":1,"sk-secret":2}}`, `"/metadata/*"`, names{"metadata"}},
		{`{"model":"a","Model":"b"}`, `"/*"`, names{"model"}},
		{`{"messages":[{"role":"user","role":"x"}]}`, `"/messages/0/role"`, names{"messages", "role"}},
		{`{"messages":[{"role":"user","role":"x"}]}`, `"/*/0/*"`, nil},
	}
	for _, tc := range tests {
		_, err := Parse([]byte(tc.in), Limits{Names: tc.names})
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if !strings.Contains(e.Message, tc.shown) {
			t.Errorf("%s: message %q, want it to show %s", tc.in, e.Message, tc.shown)
		}
		if strings.Contains(e.Pointer, "*") {
			t.Errorf("%s: pointer %q hides names", tc.in, e.Pointer)
		}
	}
}

// Messages name the rule and place, never the body's text.
func TestErrorsNeverEchoBody(t *testing.T) {
	const secret = "sk-live-9f8e7d6c5b4a39281706"
	bodies := []string{
		`{"api_key":"` + secret + `","api_key":"` + secret + `"}`,
		`{"a":"` + secret + `"} ` + secret,
		`{"a":"` + secret + "\xff" + `"}`,
		`{"a":"` + secret + `\ud800"}`,
		`{"a":"` + secret + `\q"}`,
		`{"a":"` + secret + "\x01" + `"}`,
		`{"a":` + secret + `}`,
		`{"a":1` + secret + `}`,
		`{"a":1e400, "b":"` + secret + `"}`,
		`{"a":"` + secret,
		`{"` + strings.Repeat("x", 70) + secret + `":1,"` + strings.Repeat("x", 70) + secret + `":2}`,
		secret,
	}
	for _, in := range bodies {
		_, err := Parse([]byte(in), Limits{})
		if err == nil {
			t.Fatalf("%q parsed", in)
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("%T", err)
		}
		for _, s := range []string{e.Message, e.Error(), e.Pointer} {
			if strings.Contains(s, secret[:10]) {
				t.Errorf("error text %q echoes the body", s)
			}
		}
	}
	for _, ce := range []string{"br, " + secret, secret} {
		_, err := Decode([]byte(`{}`), false, ce, Limits{})
		if err == nil || strings.Contains(err.Error(), secret[:10]) {
			t.Errorf("Content-Encoding %q: err %v", ce, err)
		}
	}
}

// plainRun's 8-byte test must stop exactly where the byte-wise test does,
// for every byte value at every position of a word.
func TestPlainRun(t *testing.T) {
	naive := func(d []byte, i int) int {
		for i < len(d) && isPlain[d[i]] {
			i++
		}
		return i
	}
	for c := range 256 {
		for pos := range 20 {
			d := bytes.Repeat([]byte("a"), 24)
			d[pos] = byte(c)
			for start := range 4 {
				if got, want := plainRun(d, start), naive(d, start); got != want {
					t.Fatalf("byte %#x at %d, start %d: plainRun %d, want %d", c, pos, start, got, want)
				}
			}
		}
	}
}

func TestClosingQuote(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{`\n"`, 2},
		{`\"x"`, 3},
		{`\\"`, 2},
		{`\\\"x"`, 5},
		{`\\\\"`, 4},
		{`\"`, 2},
		{`\n`, 2},
	}
	for _, tc := range tests {
		if got := closingQuote([]byte(tc.in), 0); got != tc.want {
			t.Errorf("closingQuote(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestParseReturnsVocabStrings(t *testing.T) {
	vocab := NewVocab("role", "content", "user", "gpt-4o-mini", strings.Repeat("m", 64), strings.Repeat("n", 65))
	in := `{"role":"user","content":"user","model":"gpt-4o-mini","mmm":"` + strings.Repeat("m", 64) + `","nnn":"` + strings.Repeat("n", 65) + `"}`
	v, err := Parse([]byte(in), Limits{Vocab: vocab})
	if err != nil {
		t.Fatal(err)
	}
	same := func(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }
	word := func(s string) string { return vocab.words[s].s }
	m := v.(map[string]any)
	for k, val := range m {
		s := val.(string)
		switch k {
		case "role", "content":
			if !same(k, word(k)) || !same(s, word("user")) {
				t.Errorf("%q: %q is not the vocabulary's string", k, s)
			}
		case "model", "mmm":
			if !same(s, word(s)) {
				t.Errorf("%q: %q is not the vocabulary's string", k, s)
			}
		case "nnn": // longer than a Vocab holds
			if _, ok := vocab.words[s]; ok {
				t.Errorf("NewVocab kept a %d-byte word", len(s))
			}
		}
	}
	if m["nnn"] != strings.Repeat("n", 65) {
		t.Errorf("nnn = %q", m["nnn"])
	}
}

// TestScratchReleaseClears leaves a refused parse's values on the scratch
// stacks and in the intern table: release must clear them all, so that a
// pooled scratch keeps nothing of a body alive.
func TestScratchReleaseClears(t *testing.T) {
	for _, in := range []string{
		`{"a":"x","b":["y",{"c":"z","c":1}]}`,
		`[["u","v",{"w":"w"}],"t",`,
		`{"role":"user","content":"hi"}`,
	} {
		sc := &scratch{}
		p := parser{data: []byte(in), maxDepth: DefaultMaxDepth, scratch: sc}
		p.value(0)
		if sc.nused == 0 {
			t.Fatalf("%s: nothing was interned", in)
		}
		sc.release()
		if slices.ContainsFunc(sc.elems[:cap(sc.elems)], func(v any) bool { return v != nil }) ||
			slices.ContainsFunc(sc.members[:cap(sc.members)], func(m member) bool { return m.key != "" || m.val != nil || m.offset != 0 }) ||
			sc.intern != [internSlots]internEntry{} || sc.nused != 0 {
			t.Errorf("%s: release left values behind", in)
		}
	}
}
