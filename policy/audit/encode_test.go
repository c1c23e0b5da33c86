package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestAppendString(t *testing.T) {
	tests := []struct {
		in, want string
		decoded  string // what a JSON decoder reads back; "" means in
	}{
		{"plain", `"plain"`, ""},
		{`q"b\`, `"q\"b\\"`, ""},
		{"a\nb\rc\td", `"a\nb\rc\td"`, ""},
		{"\x00\x01\x1f", `"\u0000\u0001\u001f"`, ""},
		{"<html>&'", `"<html>&'"`, ""},
		{"\x7f", "\"\x7f\"", ""},
		{"héllo ✓ \u2028", "\"héllo ✓ \u2028\"", ""},
		{"bad\xffutf8", "\"bad\uFFFDutf8\"", "bad\uFFFDutf8"},
		{"\xed\xa0\x80", "\"\uFFFD\uFFFD\uFFFD\"", "\uFFFD\uFFFD\uFFFD"}, // a UTF-8 encoded surrogate is invalid
	}
	for _, tt := range tests {
		got := string(appendString(nil, tt.in))
		if got != tt.want {
			t.Errorf("appendString(%q) = %s, want %s", tt.in, got, tt.want)
			continue
		}
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Errorf("%s does not decode: %v", got, err)
			continue
		}
		want := tt.decoded
		if want == "" {
			want = tt.in
		}
		if back != want {
			t.Errorf("%s decodes to %q, want %q", got, back, want)
		}
		if again := string(appendString(nil, back)); again != got {
			t.Errorf("not stable: %s re-encodes as %s", got, again)
		}
	}
}

func fullEvent() Event {
	return Event{
		Time: time.Date(2026, 3, 4, 5, 6, 7, 891234567, time.FixedZone("x", 3600)), Kind: KindDecision,
		DecisionID: "d1", RequestID: "r1", Gateway: "envoy", Subject: "alice \"the\" admin", AuthMethod: "jwt",
		KeyID: "k1", Issuer: "https://idp", Model: "gpt-4o-mini", Operation: "chat", Method: "POST",
		Path: "/v1/chat/completions", SourceAddress: "10.0.0.7:51000", Result: "allow", Status: 200,
		Reason: "allowed", PolicyRevision: "rev1", LatencyMicros: 42, BodySHA256: strings.Repeat("ab", 32),
		RateLimit: "per-user", RateLimitKey: "subject+model",
		TraceID: strings.Repeat("0af7651916cd43dd", 2), SpanID: "b7ad6b7169203331",
		ShadowResult: "deny", ShadowReason: "role_missing", ShadowRevision: "rev2",
		Outcome: "ok", Detail: "line1\nline2", File: "/etc/x",
	}
}

// A completion record carries only its link and what the log phase learnt,
// and verifies like any other record.
func TestCompletionEncoding(t *testing.T) {
	e := Event{Time: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), Kind: KindCompletion, DecisionID: "d1", Gateway: "kong",
		Status: 502, Reason: "allowed", LatencyMicros: 1234}
	var prev digest
	line, _ := appendRecord(nil, &e, 2, &prev, newChainHash(nil))
	wantBody := `{"seq":2,"prev":"` + strings.Repeat("0", 64) + `","time":"2026-03-04T05:06:07.000000Z","kind":"completion",` +
		`"decision_id":"d1","gateway":"kong","status":502,"reason":"allowed","latency_us":1234,"hash":"`
	if !strings.HasPrefix(string(line), wantBody) {
		t.Fatalf("line %s, want it to start %s", line, wantBody)
	}
	back, _, _, err := checkLine(line, newChainHash(nil), nil)
	if err != nil || back.Kind != KindCompletion || back.Status != 502 || back.DecisionID != "d1" {
		t.Fatalf("checkLine: %+v, %v", back, err)
	}
}

// The encoding is the one the package documentation defines, byte for byte,
// and the hash is computed over it as documented, checked here with an
// independent computation.
func TestRecordEncoding(t *testing.T) {
	e := fullEvent()
	prev := digest{1, 2, 3}
	line, sum := appendRecord(nil, &e, 7, &prev, newChainHash(nil))
	wantBody := `{"seq":7,"prev":"0102030000000000000000000000000000000000000000000000000000000000","time":"2026-03-04T04:06:07.891234Z","kind":"decision",` +
		`"decision_id":"d1","request_id":"r1","gateway":"envoy","subject":"alice \"the\" admin","auth_method":"jwt","key_id":"k1",` +
		`"issuer":"https://idp","model":"gpt-4o-mini","operation":"chat","method":"POST","path":"/v1/chat/completions",` +
		`"source_address":"10.0.0.7:51000","result":"allow","status":200,"reason":"allowed","policy_revision":"rev1","latency_us":42,` +
		`"body_sha256":"` + strings.Repeat("ab", 32) + `","rate_limit":"per-user","rate_limit_key":"subject+model",` +
		`"trace_id":"` + strings.Repeat("0af7651916cd43dd", 2) + `","span_id":"b7ad6b7169203331",` +
		`"shadow_result":"deny","shadow_reason":"role_missing","shadow_revision":"rev2",` +
		`"outcome":"ok","detail":"line1\nline2","file":"/etc/x"`
	want := sha256.Sum256([]byte(wantBody + "}"))
	if sum != want {
		t.Errorf("hash is not SHA-256 of the line without its hash member")
	}
	if got, wantLine := string(line), wantBody+`,"hash":"`+hex.EncodeToString(want[:])+"\"}\n"; got != wantLine {
		t.Errorf("line:\n got  %s\n want %s", got, wantLine)
	}

	key := bytes.Repeat([]byte("k"), 32)
	_, keyed := appendRecord(nil, &e, 7, &prev, newChainHash(key))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(wantBody + "}"))
	if !bytes.Equal(keyed[:], mac.Sum(nil)) {
		t.Errorf("keyed hash is not HMAC-SHA256 of the line without its hash member")
	}

	// Only seq, prev, time and kind are always present.
	line, _ = appendRecord(nil, &Event{Time: e.Time, Kind: KindStart}, 1, &digest{}, newChainHash(nil))
	if !strings.HasPrefix(string(line), `{"seq":1,"prev":"`+strings.Repeat("0", 64)+`","time":"2026-03-04T04:06:07.891234Z","kind":"start","hash":"`) {
		t.Errorf("minimal record: %s", line)
	}
}

func TestCheckLine(t *testing.T) {
	e := fullEvent()
	prev := digest{9}
	c := newChainHash(nil)
	line, sum := appendRecord(nil, &e, 3, &prev, c)
	got, gotSum, _, err := checkLine(line, c, nil)
	if err != nil || gotSum != sum || got.Seq != 3 || got.Prev != hex.EncodeToString(prev[:]) || got.Subject != e.Subject {
		t.Fatalf("checkLine of a good line: %+v %v", got, err)
	}
	hashAt := bytes.LastIndex(line, []byte(`"hash":"`)) + len(`"hash":"`)
	tests := []struct {
		name string
		edit func([]byte) []byte
		want error
	}{
		{"result edited", func(b []byte) []byte { return bytes.Replace(b, []byte(`"allow"`), []byte(`"deny!"`), 1) }, errHashMismatch},
		{"space added", func(b []byte) []byte { return bytes.Replace(b, []byte(`,"gateway"`), []byte(`, "gateway"`), 1) }, errNotCanonical},
		{"member reordered", func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"request_id":"r1","gateway":"envoy"`), []byte(`"gateway":"envoy","request_id":"r1"`), 1)
		}, errNotCanonical},
		{"unknown member", func(b []byte) []byte { return bytes.Replace(b, []byte(`,"file"`), []byte(`,"x":1,"file"`), 1) }, errNotCanonical},
		{"duplicate member", func(b []byte) []byte { return bytes.Replace(b, []byte(`,"file"`), []byte(`,"seq":3,"file"`), 1) }, errNotCanonical},
		{"key case", func(b []byte) []byte { return bytes.Replace(b, []byte(`"model"`), []byte(`"MODEL"`), 1) }, errNotCanonical},
		{"escaped letter", func(b []byte) []byte { return bytes.Replace(b, []byte(`"d1"`), []byte(`"\u00641"`), 1) }, errNotCanonical},
		{"upper-case hash", func(b []byte) []byte {
			b = bytes.Clone(b)
			copy(b[hashAt:], bytes.ToUpper(b[hashAt:hashAt+64]))
			return b
		}, errNotCanonical},
		{"hash edited", func(b []byte) []byte {
			// Another lower-case hex digit, whatever the hash is.
			b = bytes.Clone(b)
			// another hex digit, whatever the hash is
			if b[hashAt] == '0' {
				b[hashAt] = '1'
			} else {
				b[hashAt] = '0'
			}
			return b
		}, errHashMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			edited := tt.edit(bytes.Clone(line))
			_, _, _, err := checkLine(edited, c, nil)
			if err != tt.want {
				t.Errorf("checkLine(%s) = %v, want %v", edited, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "\n", "{}\n", "not json at all, but long enough to pass the length check of one record line......\n", string(line[:len(line)-1])} {
		if _, _, _, err := checkLine([]byte(bad), c, nil); err == nil {
			t.Errorf("checkLine(%q) accepted", bad)
		}
	}
}

func TestLineSeqHash(t *testing.T) {
	prev := digest{}
	line, sum := appendRecord(nil, &Event{Kind: KindStart, Time: time.Unix(1, 0)}, 12345, &prev, newChainHash(nil))
	seq, got, err := lineSeqHash(line)
	if err != nil || seq != 12345 || got != sum {
		t.Fatalf("lineSeqHash = %d %x %v", seq, got, err)
	}
	if _, _, err := lineSeqHash([]byte("garbage\n")); err == nil {
		t.Fatal("garbage accepted")
	}
}

// appendTime writes what AppendFormat writes with timeLayout, in UTC.
func TestAppendTime(t *testing.T) {
	times := []time.Time{
		{},
		time.Date(2026, 3, 4, 5, 6, 7, 891234567, time.FixedZone("x", 3600)),
		time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(1999, 1, 1, 0, 0, 0, 999, time.FixedZone("y", -5*3600)),
		time.Date(9999, 12, 31, 23, 59, 59, 1000, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(42, 7, 8, 9, 10, 11, 12000, time.UTC),
		time.Now(),
	}
	for i := range 2000 {
		times = append(times, time.Unix(int64(i)*48271*7919, int64(i)*104729%1e9).In(time.FixedZone("z", (i%27-13)*3600)))
	}
	for _, tm := range times {
		if got, want := string(appendTime(nil, tm)), tm.UTC().Format(timeLayout); got != want {
			t.Errorf("appendTime(%v) = %s, want %s", tm, got, want)
		}
	}
}

// appendString on random strings of the bytes that matter: what a JSON
// decoder reads back is s with each invalid byte as U+FFFD, and encoding
// that again gives the same bytes.
func TestAppendStringRandom(t *testing.T) {
	alphabet := []string{"a", "Z", " ", `"`, `\`, "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "é", "✓", "\U0001F600", "\xff", "\xe2\x9c", "\uFFFD", "<"}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		s := b.String()
		var want strings.Builder
		for i := 0; i < len(s); {
			r, size := utf8.DecodeRuneInString(s[i:])
			want.WriteRune(r) // RuneError for an invalid byte
			i += size
		}
		enc := appendString(nil, s)
		var back string
		if err := json.Unmarshal(enc, &back); err != nil || back != want.String() {
			t.Fatalf("appendString(%q) = %s, decodes to %q (%v), want %q", s, enc, back, err, want.String())
		}
		if again := appendString(nil, back); !bytes.Equal(again, enc) {
			t.Fatalf("appendString(%q) = %s, but %s again", s, enc, again)
		}
	}
}
