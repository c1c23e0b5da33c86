package jwtauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/testkit"
)

const (
	issRSA = "https://rsa.example"   // RS256, PS256; kid-less RSA key; audiences api, api2
	issKid = "https://kid.example"   // RS256; second RSA key with kid "b1"
	issES  = "https://es.example"    // ES256
	issEd  = "https://ed.example"    // EdDSA
	issHS  = "https://hs.example"    // HS256
	issMix = "https://mixed.example" // RS256 and HS256 allowed, only an RSA key
	issTyp = "https://typ.example"   // RS256, typ at+jwt
)

// staticConfig writes the fixture keys to a temporary directory and returns
// a configuration naming them by relative path.
func staticConfig(t testing.TB) (Settings, string) {
	t.Helper()
	k := keys(t)
	dir := t.TempDir()
	testkit.WriteFile(t, dir, "rsa.pem", pemOf(t, &k.rsa.PublicKey))
	testkit.WriteFile(t, dir, "rsa2.pem", pemOf(t, &k.rsa2.PublicKey))
	testkit.WriteFile(t, dir, "ec.pem", pemOf(t, &k.ec256.PublicKey))
	testkit.WriteFile(t, dir, "ed.pem", pemOf(t, k.ed.Public()))
	testkit.WriteFile(t, dir, "hs.secret", append(append([]byte(nil), k.secret...), '\n'))
	iss := func(name string, algs []string, key StaticKey) IssuerSettings {
		return IssuerSettings{Issuer: name, Audiences: []string{"api"}, Algorithms: algs, Keys: []StaticKey{key}}
	}
	rsaIss := iss(issRSA, []string{"RS256", "PS256"}, StaticKey{PEMFile: "rsa.pem"})
	rsaIss.Audiences = []string{"api", "api2"}
	typIss := iss(issTyp, []string{"RS256"}, StaticKey{PEMFile: "rsa.pem"})
	typIss.Typ = "at+jwt"
	return Settings{Issuers: []IssuerSettings{
		rsaIss,
		iss(issKid, []string{"RS256"}, StaticKey{KID: "b1", PEMFile: "rsa2.pem"}),
		iss(issES, []string{"ES256"}, StaticKey{PEMFile: "ec.pem"}),
		iss(issEd, []string{"EdDSA"}, StaticKey{PEMFile: "ed.pem"}),
		iss(issHS, []string{"HS256"}, StaticKey{SecretFile: "hs.secret"}),
		iss(issMix, []string{"RS256", "HS256"}, StaticKey{PEMFile: "rsa.pem"}),
		typIss,
	}}, dir
}

// nonCanonical sets unused low bits of seg's last character: the decoded
// bytes stay the same, so only strict decoding notices.
func nonCanonical(t testing.TB, seg string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	if len(seg)%4 == 0 {
		t.Fatalf("segment of length %d has no unused bits", len(seg))
	}
	i := strings.IndexByte(alphabet, seg[len(seg)-1])
	if i&1 != 0 {
		t.Fatalf("segment %q is already non-canonical", seg)
	}
	return seg[:len(seg)-1] + string(alphabet[i|1])
}

func TestVerify(t *testing.T) {
	k := keys(t)
	cfg, dir := staticConfig(t)
	v := newVerifier(t, cfg, dir, Options{})
	rsaPEM := pemOf(t, &k.rsa.PublicKey)

	rs := func(over map[string]any) func(t *testing.T) string {
		return func(t *testing.T) string { return sign(t, "RS256", k.rsa, nil, claimsFor(issRSA, over)) }
	}
	rsHdr := func(hdr map[string]any, iss string) func(t *testing.T) string {
		return func(t *testing.T) string { return sign(t, "RS256", k.rsa, hdr, claimsFor(iss, nil)) }
	}
	raw := func(alg string, key any, header, payload string) func(t *testing.T) string {
		return func(t *testing.T) string { return signRaw(t, alg, key, header, payload) }
	}
	fixed := func(s string) func(t *testing.T) string { return func(*testing.T) string { return s } }
	valid := func(t *testing.T) string { return rs(nil)(t) }
	edit := func(f func(string) string) func(t *testing.T) string {
		return func(t *testing.T) string { return f(valid(t)) }
	}
	ago := func(d time.Duration) int64 { return testNow.Add(-d).Unix() }
	payloadRSA := mustJSON(t, claimsFor(issRSA, nil))

	tests := []struct {
		name  string
		token func(t *testing.T) string
		want  string // reason; "" = valid
		check func(t *testing.T, id *Identity)
	}{
		{name: "valid RS256", token: valid, check: func(t *testing.T, id *Identity) {
			if id.Subject != "alice" || id.Issuer != issRSA || id.Claims["aud"] != "api" {
				t.Errorf("identity %+v", id)
			}
			if id.Roles == nil || len(id.Roles) != 0 {
				t.Errorf("roles %#v, want empty non-nil", id.Roles)
			}
		}},
		{name: "valid PS256", token: func(t *testing.T) string { return sign(t, "PS256", k.rsa, nil, claimsFor(issRSA, nil)) }},
		{name: "valid ES256", token: func(t *testing.T) string { return sign(t, "ES256", k.ec256, nil, claimsFor(issES, nil)) }},
		{name: "valid EdDSA", token: func(t *testing.T) string { return sign(t, "EdDSA", k.ed, nil, claimsFor(issEd, nil)) }},
		{name: "valid HS256 (secret file newline trimmed)", token: func(t *testing.T) string { return sign(t, "HS256", k.secret, nil, claimsFor(issHS, nil)) }},
		{name: "HS256 with the newline in the secret", token: func(t *testing.T) string {
			return sign(t, "HS256", append(append([]byte(nil), k.secret...), '\n'), nil, claimsFor(issHS, nil))
		}, want: ReasonBadSignature},

		// Time claims, leeway 30s by default.
		{name: "expired", token: rs(map[string]any{"exp": ago(time.Hour)}), want: ReasonExpired},
		{name: "expired within leeway", token: rs(map[string]any{"exp": ago(20 * time.Second)})},
		{name: "expired just past leeway", token: rs(map[string]any{"exp": ago(31 * time.Second)}), want: ReasonExpired},
		{name: "nbf in the future", token: rs(map[string]any{"nbf": ago(-time.Hour)}), want: ReasonNotYetValid},
		{name: "nbf within leeway", token: rs(map[string]any{"nbf": ago(-20 * time.Second)})},
		{name: "iat in the future", token: rs(map[string]any{"iat": ago(-time.Hour)}), want: ReasonIssuedInFuture},
		{name: "iat within leeway", token: rs(map[string]any{"iat": ago(-20 * time.Second)})},
		{name: "missing exp", token: rs(map[string]any{"exp": nil}), want: ReasonMissingExp},
		{name: "exp 0", token: rs(map[string]any{"exp": 0}), want: ReasonMissingExp},
		{name: "exp as string", token: rs(map[string]any{"exp": "9999999999"}), want: ReasonInvalidClaimType},
		{name: "exp negative", token: rs(map[string]any{"exp": -1}), want: ReasonExpired},

		// Issuer and audience.
		{name: "unknown iss", token: rs(map[string]any{"iss": "https://evil.example"}), want: ReasonUnknownIssuer},
		{name: "iss with trailing slash", token: rs(map[string]any{"iss": issRSA + "/"}), want: ReasonUnknownIssuer},
		{name: "missing iss", token: rs(map[string]any{"iss": nil}), want: ReasonUnknownIssuer},
		{name: "iss not a string", token: rs(map[string]any{"iss": 42}), want: ReasonMalformed},
		{name: "iss twice", token: raw("RS256", k.rsa, `{"alg":"RS256"}`,
			`{"iss":"`+issRSA+`","iss":"`+issKid+`","sub":"a","aud":"api","exp":9999999999}`), want: ReasonMalformed},
		{name: "iss twice, once escaped", token: raw("RS256", k.rsa, `{"alg":"RS256"}`,
			`{"iss":"`+issRSA+`","i\u0073s":"`+issKid+`","sub":"a","aud":"api","exp":9999999999}`), want: ReasonMalformed},
		{name: "iss with escaped slashes routes like encoding/json", token: raw("RS256", k.rsa, `{"alg":"RS256"}`,
			`{"iss":"https:\/\/rsa.example","sub":"a","aud":"api","exp":9999999999}`)},
		{name: "wrong iss: other issuer's name, this issuer's key", token: func(t *testing.T) string {
			return sign(t, "RS256", k.rsa, map[string]any{"kid": "b1"}, claimsFor(issKid, nil))
		}, want: ReasonBadSignature},
		{name: "wrong aud", token: rs(map[string]any{"aud": "other"}), want: ReasonBadAudience},
		{name: "aud differs in case", token: rs(map[string]any{"aud": "API"}), want: ReasonBadAudience},
		{name: "missing aud", token: rs(map[string]any{"aud": nil}), want: ReasonBadAudience},
		{name: "aud array containing a match", token: rs(map[string]any{"aud": []string{"other", "api"}})},
		{name: "aud array matching the second configured audience", token: rs(map[string]any{"aud": []string{"api2"}})},
		{name: "aud array without a match", token: rs(map[string]any{"aud": []string{"other", "x"}}), want: ReasonBadAudience},
		{name: "aud not strings", token: rs(map[string]any{"aud": []any{1}}), want: ReasonInvalidClaimType},

		// Algorithms and keys.
		{name: "alg none", token: fixed(b64([]byte(`{"alg":"none"}`)) + "." + b64([]byte(payloadRSA)) + "."), want: ReasonAlgNotAllowed},
		{name: "alg None", token: fixed(b64([]byte(`{"alg":"None"}`)) + "." + b64([]byte(payloadRSA)) + "."), want: ReasonAlgNotAllowed},
		{name: "alg NONE", token: fixed(b64([]byte(`{"alg":"NONE"}`)) + "." + b64([]byte(payloadRSA)) + "."), want: ReasonAlgNotAllowed},
		{name: "alg nOnE with a signature", token: fixed(b64([]byte(`{"alg":"nOnE"}`)) + "." + b64([]byte(payloadRSA)) + ".c2ln"), want: ReasonAlgNotAllowed},
		{name: "no alg", token: fixed(b64([]byte(`{"typ":"JWT"}`)) + "." + b64([]byte(payloadRSA)) + ".c2ln"), want: ReasonMalformed},
		{name: "HS256 signed with the RSA public key PEM", token: func(t *testing.T) string {
			return sign(t, "HS256", rsaPEM, nil, claimsFor(issRSA, nil))
		}, want: ReasonAlgNotAllowed},
		{name: "HS256 signed with the RSA public key PEM, issuer allowing HS256", token: func(t *testing.T) string {
			return sign(t, "HS256", rsaPEM, nil, claimsFor(issMix, nil))
		}, want: ReasonUnknownKey},
		{name: "RS256 token, issuer allows only ES256", token: func(t *testing.T) string {
			return sign(t, "RS256", k.rsa, nil, claimsFor(issES, nil))
		}, want: ReasonAlgNotAllowed},
		{name: "ES256 signed by another key", token: func(t *testing.T) string {
			other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			return sign(t, "ES256", other, nil, claimsFor(issES, nil))
		}, want: ReasonBadSignature},
		{name: "ES256 psychic signature (r = s = 0)", token: func(t *testing.T) string {
			tok := sign(t, "ES256", k.ec256, nil, claimsFor(issES, nil))
			return tok[:strings.LastIndexByte(tok, '.')+1] + b64(make([]byte, 64))
		}, want: ReasonBadSignature},
		{name: "tampered payload", token: edit(func(s string) string {
			p := strings.Split(s, ".")
			return p[0] + "." + b64([]byte(strings.Replace(payloadRSA, "alice", "admin", 1))) + "." + p[2]
		}), want: ReasonBadSignature},
		{name: "kid matching a kid-pinned key", token: func(t *testing.T) string {
			return sign(t, "RS256", k.rsa2, map[string]any{"kid": "b1"}, claimsFor(issKid, nil))
		}},
		{name: "other kid, kid-pinned key", token: func(t *testing.T) string {
			return sign(t, "RS256", k.rsa2, map[string]any{"kid": "b2"}, claimsFor(issKid, nil))
		}, want: ReasonUnknownKey},
		{name: "no kid, kid-pinned key", token: func(t *testing.T) string {
			return sign(t, "RS256", k.rsa2, nil, claimsFor(issKid, nil))
		}, want: ReasonUnknownKey},
		{name: "any kid, key without kid", token: rsHdr(map[string]any{"kid": "whatever"}, issRSA)},
		{name: "kid not a string", token: rsHdr(map[string]any{"kid": 7}, issRSA), want: ReasonMalformed},

		// Header checks.
		{name: "crit header", token: rsHdr(map[string]any{"crit": []string{"exp"}, "exp": 1}, issRSA), want: ReasonCritUnsupported},
		{name: "empty crit header", token: rsHdr(map[string]any{"crit": []string{}}, issRSA), want: ReasonCritUnsupported},
		{name: "typ at+jwt", token: rsHdr(map[string]any{"typ": "at+jwt"}, issTyp)},
		{name: "typ AT+JWT", token: rsHdr(map[string]any{"typ": "AT+JWT"}, issTyp)},
		{name: "typ application/at+jwt", token: rsHdr(map[string]any{"typ": "application/at+jwt"}, issTyp)},
		{name: "typ JWT where at+jwt is required", token: rsHdr(map[string]any{"typ": "JWT"}, issTyp), want: ReasonBadTyp},
		{name: "typ missing where at+jwt is required", token: rsHdr(map[string]any{"typ": nil}, issTyp), want: ReasonBadTyp},
		{name: "typ not a string", token: rsHdr(map[string]any{"typ": 1}, issTyp), want: ReasonBadTyp},
		{name: "any typ where none is required", token: rsHdr(map[string]any{"typ": "whatever"}, issRSA)},
		{name: "duplicate alg, HS256 last, signed with the PEM", token: raw("HS256", rsaPEM, `{"alg":"RS256","alg":"HS256"}`, payloadRSA), want: ReasonMalformed},
		{name: "duplicate alg, RS256 last, validly signed", token: raw("RS256", k.rsa, `{"alg":"HS256","alg":"RS256"}`, payloadRSA), want: ReasonMalformed},
		{name: "alg spelled with an escape", token: raw("HS256", rsaPEM, `{"alg":"RS256","al\u0067":"HS256"}`, payloadRSA), want: ReasonMalformed},
		{name: "escaped alg value", token: raw("RS256", k.rsa, `{"alg":"RS\u0032\u0035\u0036"}`, payloadRSA)},
		{name: "jku, x5u and jwk headers are not followed", token: func(t *testing.T) string {
			var hits atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
			t.Cleanup(func() {
				srv.Close()
				if n := hits.Load(); n != 0 {
					t.Errorf("verifier fetched a header URL %d times", n)
				}
			})
			return sign(t, "RS256", k.rsa2, map[string]any{
				"jku": srv.URL, "x5u": srv.URL, "kid": srv.URL,
				"jwk": map[string]any{"kty": "RSA", "n": b64(k.rsa2.N.Bytes()), "e": "AQAB"},
			}, claimsFor(issRSA, nil))
		}, want: ReasonBadSignature},

		// Encoding.
		{name: "trailing newline", token: edit(func(s string) string { return s + "\n" }), want: ReasonMalformed},
		{name: "trailing CRLF", token: edit(func(s string) string { return s + "\r\n" }), want: ReasonMalformed},
		{name: "trailing space", token: edit(func(s string) string { return s + " " }), want: ReasonMalformed},
		{name: "newline inside the signature", token: edit(func(s string) string { return s[:len(s)-10] + "\n" + s[len(s)-10:] }), want: ReasonMalformed},
		{name: "padding on the signature", token: edit(func(s string) string { return s + "==" }), want: ReasonMalformed},
		{name: "standard base64 alphabet", token: edit(func(s string) string { return s[:len(s)-1] + "+" }), want: ReasonMalformed},
		{name: "non-zero trailing bits in the signature", token: edit(func(s string) string {
			i := strings.LastIndexByte(s, '.')
			return s[:i+1] + nonCanonical(t, s[i+1:])
		}), want: ReasonMalformed},
		{name: "non-zero trailing bits in the payload, validly signed", token: func(t *testing.T) string {
			c := claimsFor(issRSA, nil)
			var p string
			for pad := ""; ; pad += "x" {
				c["pad"] = pad
				if p = b64([]byte(mustJSON(t, c))); len(p)%4 != 0 {
					break
				}
			}
			return signSegments(t, "RS256", k.rsa, b64([]byte(`{"alg":"RS256"}`)), nonCanonical(t, p))
		}, want: ReasonMalformed},
		{name: "two segments", token: fixed("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0"), want: ReasonMalformed},
		{name: "JWE-like five segments", token: fixed("eyJh.eyJp.a.b.c"), want: ReasonMalformed},
		{name: "empty header", token: fixed(".eyJpc3MiOiJ4In0.c2ln"), want: ReasonMalformed},
		{name: "empty token", token: fixed(""), want: ReasonMalformed},
		{name: "payload not JSON", token: fixed("eyJhbGciOiJSUzI1NiJ9." + b64([]byte("not json")) + ".c2ln"), want: ReasonMalformed},
		{name: "payload JSON followed by junk", token: fixed("eyJhbGciOiJSUzI1NiJ9." + b64([]byte(`{"iss":"`+issRSA+`"}x`)) + ".c2ln"), want: ReasonMalformed},
		{name: "header not JSON", token: func(t *testing.T) string {
			return b64([]byte("{alg:RS256}")) + "." + b64([]byte(payloadRSA)) + ".c2ln"
		}, want: ReasonMalformed},
		{name: "too long", token: rs(map[string]any{"pad": strings.Repeat("a", DefaultMaxTokenBytes)}), want: ReasonTooLong},

		// Subject.
		{name: "missing sub", token: rs(map[string]any{"sub": nil}), want: ReasonMissingSubject},
		{name: "empty sub", token: rs(map[string]any{"sub": ""}), want: ReasonMissingSubject},
		{name: "numeric sub", token: rs(map[string]any{"sub": 12}), want: ReasonMissingSubject},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tc.token(t))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if tc.check != nil {
					tc.check(t, id)
				}
				return
			}
			if id != nil {
				t.Errorf("identity %+v returned with an error", id)
			}
			wantReason(t, err, tc.want)
		})
	}
}

func TestVerifyMaxTokenBytes(t *testing.T) {
	k := keys(t)
	cfg, dir := staticConfig(t)
	tok := sign(t, "RS256", k.rsa, nil, claimsFor(issRSA, nil))
	tests := []struct {
		max  int
		want string
	}{
		{max: len(tok)},
		{max: len(tok) - 1, want: ReasonTooLong},
	}
	for _, tc := range tests {
		v := newVerifier(t, cfg, dir, Options{MaxTokenBytes: tc.max})
		_, err := v.Verify(context.Background(), tok)
		if tc.want == "" {
			if err != nil {
				t.Errorf("max %d: %v", tc.max, err)
			}
			continue
		}
		wantReason(t, err, tc.want)
	}
}

func TestVerifyLeeway(t *testing.T) {
	k := keys(t)
	cfg, dir := staticConfig(t)
	cfg.Issuers[0].Leeway = 2 * time.Minute
	v := newVerifier(t, cfg, dir, Options{})
	tests := []struct {
		name string
		over map[string]any
		want string
	}{
		{"exp 90s ago", map[string]any{"exp": testNow.Add(-90 * time.Second).Unix()}, ""},
		{"exp 3m ago", map[string]any{"exp": testNow.Add(-3 * time.Minute).Unix()}, ReasonExpired},
		{"nbf in 90s", map[string]any{"nbf": testNow.Add(90 * time.Second).Unix()}, ""},
		{"iat in 3m", map[string]any{"iat": testNow.Add(3 * time.Minute).Unix()}, ReasonIssuedInFuture},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), sign(t, "RS256", k.rsa, nil, claimsFor(issRSA, tc.over)))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantReason(t, err, tc.want)
		})
	}
}

func TestClaimMapping(t *testing.T) {
	k := keys(t)
	cfg, dir := staticConfig(t)
	tests := []struct {
		name      string
		mapping   ClaimMapping
		claims    map[string]any
		wantSub   string
		wantRoles []string
		wantErr   string
	}{
		{
			name:      "default roles claim",
			claims:    map[string]any{"roles": []any{"admin", "dev", "admin"}},
			wantSub:   "alice",
			wantRoles: []string{"admin", "dev"},
		},
		{
			name:      "scope string",
			mapping:   ClaimMapping{Roles: []string{"scope"}},
			claims:    map[string]any{"scope": "read  write\tread"},
			wantSub:   "alice",
			wantRoles: []string{"read", "write"},
		},
		{
			name:      "nested realm_access.roles",
			mapping:   ClaimMapping{Roles: []string{"realm_access.roles"}},
			claims:    map[string]any{"realm_access": map[string]any{"roles": []any{"ops"}}},
			wantSub:   "alice",
			wantRoles: []string{"ops"},
		},
		{
			name:    "several claims merged in order without duplicates",
			mapping: ClaimMapping{Roles: []string{"roles", "scope", "realm_access.roles", "https://example.com/groups", "absent"}},
			claims: map[string]any{
				"roles":                      []any{"admin", 3, "dev"},
				"scope":                      "read admin",
				"realm_access":               map[string]any{"roles": []any{"ops", "dev"}},
				"https://example.com/groups": []any{"g1"},
			},
			wantSub:   "alice",
			wantRoles: []string{"admin", "dev", "read", "ops", "g1"},
		},
		{
			name:      "roles of other types ignored",
			claims:    map[string]any{"roles": map[string]any{"admin": true}},
			wantSub:   "alice",
			wantRoles: []string{},
		},
		{
			name:      "custom subject claim",
			mapping:   ClaimMapping{Subject: "email"},
			claims:    map[string]any{"email": "alice@example.com"},
			wantSub:   "alice@example.com",
			wantRoles: []string{},
		},
		{
			name:      "dotted subject claim",
			mapping:   ClaimMapping{Subject: "user.id"},
			claims:    map[string]any{"user": map[string]any{"id": "u-1"}},
			wantSub:   "u-1",
			wantRoles: []string{},
		},
		{
			name:    "custom subject claim missing",
			mapping: ClaimMapping{Subject: "email"},
			wantErr: ReasonMissingSubject,
		},
		{
			name:    "dotted subject through a non-object",
			mapping: ClaimMapping{Subject: "user.id"},
			claims:  map[string]any{"user": "u-1"},
			wantErr: ReasonMissingSubject,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			c.Issuers = slices.Clone(cfg.Issuers)
			c.Issuers[0].Claims = tc.mapping
			v := newVerifier(t, c, dir, Options{})
			id, err := v.Verify(context.Background(), sign(t, "RS256", k.rsa, nil, claimsFor(issRSA, tc.claims)))
			if tc.wantErr != "" {
				wantReason(t, err, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.Subject != tc.wantSub || !slices.Equal(id.Roles, tc.wantRoles) || id.Roles == nil {
				t.Errorf("subject %q roles %#v, want %q %#v", id.Subject, id.Roles, tc.wantSub, tc.wantRoles)
			}
		})
	}
}

func TestLooksLikeJWT(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", true},
		{"eyJ.a.b", true},
		{"sk-abc123", false},
		{"mg_live_abc.def.ghi", false},
		{"eyJ.a.", true}, // unsecured JWS: refused by Verify as alg none
		{"eyJ..b", false},
		{"eyJ.a.b.c", false},
		{"eyJ.a", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := LooksLikeJWT(tc.in); got != tc.want {
			t.Errorf("LooksLikeJWT(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestErrorUnwrap(t *testing.T) {
	inner := errors.New("inner")
	e := error(&Error{Reason: ReasonExpired, Err: inner})
	if !errors.Is(e, inner) || e.Error() != "jwt_expired: inner" {
		t.Errorf("Error() %q, Is %v", e.Error(), errors.Is(e, inner))
	}
}

// An explicit leeway of 0s is kept: New does not take a zero for "unset"
// (the configuration file gives absent keys their defaults).
func TestVerifyZeroLeeway(t *testing.T) {
	k := keys(t)
	dir := t.TempDir()
	testkit.WriteFile(t, dir, "rsa.pem", pemOf(t, &k.rsa.PublicKey))
	is := DefaultIssuer()
	is.Issuer, is.Audiences, is.Algorithms = issRSA, []string{"api"}, []string{"RS256"}
	is.Keys = []StaticKey{{PEMFile: "rsa.pem"}}
	is.Leeway = 0
	v, err := New(t.Context(), Settings{Issuers: []IssuerSettings{is}}, dir, Options{now: clock})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), sign(t, "RS256", k.rsa, nil, claimsFor(issRSA, map[string]any{"exp": testNow.Add(-5 * time.Second).Unix()})))
	wantReason(t, err, ReasonExpired)
}
