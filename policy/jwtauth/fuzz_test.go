package jwtauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzScanObject checks the allocation-free pre-scan against encoding/json:
// for JSON that encoding/json accepts as an object, an accepted scan reports
// the same members, in order, with the same keys once unescaped, so "iss"
// and the header fields are read as golang-jwt will read them.
func FuzzScanObject(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { "a" : 1 , "b":"x" } `, `{"a":{"b":[1,"}",{"c":"]"}]},"d":true}`,
		`{"a\"b":"c\\"}`, `{"iss":"x"}junk`, `{"iss":"x",}`, `{"i\u0073s":"https:\/\/idp"}`,
		`{"iss":"a","iss":"b"}`, `{"alg":"RS256","typ":"JWT","kid":"k1"}`, `{"a":-1.5e3,"b":null,"c":[]}`,
		"{\"iss\":\"\xff\"}", `{"iss":"\ud800"}`, `[]`, ``, `{"a":{"b":{"c":{}}}}`, `{"\0":0`,
		"{\"\x8b\":\"\"}", "{\"iss\":\"https://idp\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		type member struct{ key, val string }
		var got []member
		err := scanObject(data, func(k, v []byte) error {
			// Members are reported as they are scanned, before the rest of
			// the object is checked: a key with a bad escape reaches here
			// in an object encoding/json refuses, and keyIs never matches it.
			key, _ := jsonString(k)
			got = append(got, member{string(key), string(v)})
			return nil
		})
		want, ok := stdMembers(data)
		if err != nil || !ok {
			return // refusing what encoding/json accepts is safe (401)
		}
		if len(got) != len(want) {
			t.Fatalf("%q: scanner saw %d members, encoding/json %d", data, len(got), len(want))
		}
		for i := range got {
			if got[i].key != want[i].key {
				t.Fatalf("%q: member %d key %q, encoding/json reads %q", data, i, got[i].key, want[i].key)
			}
			var a, b bytes.Buffer
			if json.Compact(&a, []byte(got[i].val)) != nil || json.Compact(&b, []byte(want[i].val)) != nil || a.String() != b.String() {
				t.Fatalf("%q: member %q value %q, encoding/json reads %q", data, got[i].key, got[i].val, want[i].val)
			}
		}
	})
}

// stdMembers lists a JSON object's top-level members as encoding/json reads
// them; ok is false when encoding/json refuses data or it is not an object.
func stdMembers(data []byte) (members []struct{ key, val string }, ok bool) {
	if !json.Valid(data) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, false
		}
		members = append(members, struct{ key, val string }{tok.(string), string(raw)})
	}
	return members, true
}

// FuzzVerify feeds arbitrary tokens to a verifier with static keys: the only
// tokens it may accept are the ones signed here (the seeds); every other
// input, however malformed, is refused with a reason and never panics.
func FuzzVerify(f *testing.F) {
	k := keys(f)
	cfg, dir := staticConfig(f)
	v := newVerifier(f, cfg, dir, Options{})
	valid := map[string]bool{}
	for _, tok := range []string{
		sign(f, "HS256", k.secret, nil, claimsFor(issHS, nil)),
		sign(f, "RS256", k.rsa, nil, claimsFor(issRSA, nil)),
		sign(f, "ES256", k.ec256, nil, claimsFor(issES, nil)),
		sign(f, "RS256", k.rsa2, map[string]any{"kid": "b1"}, claimsFor(issKid, nil)),
	} {
		valid[tok] = true
		f.Add(tok)
	}
	for _, s := range []string{
		sign(f, "HS256", k.secret, nil, claimsFor(issHS, map[string]any{"exp": nil})),
		sign(f, "HS256", k.secret, map[string]any{"crit": []string{"x"}}, claimsFor(issHS, nil)),
		signRaw(f, "HS256", k.secret, `{"alg":"HS256","alg":"none"}`, mustJSON(f, claimsFor(issHS, nil))),
		signRaw(f, "HS256", k.secret, `{"alg":"HS256"}`, `{"iss":"`+issHS+`","iss":"x"}`),
		"e30.e30.", "a.b.c", "..", "eyJhbGciOiJub25lIn0.e30.",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, err := v.Verify(context.Background(), token)
		if err == nil && !valid[token] {
			t.Fatalf("accepted a token not signed here: %q (subject %q)", token, id.Subject)
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Reason == "" {
				t.Fatalf("%q: error without a reason: %v", token, err)
			}
		}
	})
}
