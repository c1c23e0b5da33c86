package jwtauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/policy/field"
)

// testNow is the verifiers' clock in tests, so time checks are exact.
var testNow = time.Unix(1_750_000_000, 0)

func clock() time.Time { return testNow }

// fixtures holds keys generated once per test binary (RSA generation is slow).
type fixtures struct {
	rsa, rsa2, rsa1024 *rsa.PrivateKey
	ec256, ec384       *ecdsa.PrivateKey
	ed                 ed25519.PrivateKey
	secret             []byte
}

var (
	fixOnce sync.Once
	fix     *fixtures
)

func keys(t testing.TB) *fixtures {
	t.Helper()
	fixOnce.Do(func() {
		must := func(err error) {
			if err != nil {
				panic(err)
			}
		}
		f := &fixtures{secret: []byte("0123456789abcdef0123456789abcdef-hs256")}
		var err error
		f.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
		must(err)
		f.rsa2, err = rsa.GenerateKey(rand.Reader, 2048)
		must(err)
		f.rsa1024, err = rsa.GenerateKey(rand.Reader, 1024)
		must(err)
		f.ec256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(err)
		f.ec384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		must(err)
		_, f.ed, err = ed25519.GenerateKey(rand.Reader)
		must(err)
		fix = f
	})
	return fix
}

// pemOf returns the PKIX PEM of pub.
func pemOf(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func b64(s []byte) string { return base64.RawURLEncoding.EncodeToString(s) }

// signRaw builds a compact JWS from raw header and payload JSON, so tests
// can send what no well-behaved library would.
func signRaw(t testing.TB, alg string, key any, header, payload string) string {
	t.Helper()
	return signSegments(t, alg, key, b64([]byte(header)), b64([]byte(payload)))
}

// signSegments signs already encoded segments.
func signSegments(t testing.TB, alg string, key any, header, payload string) string {
	t.Helper()
	signing := header + "." + payload
	m := jwt.GetSigningMethod(alg)
	if m == nil {
		t.Fatalf("unknown alg %s", alg)
	}
	sig, err := m.Sign(signing, key)
	if err != nil {
		t.Fatalf("sign %s: %v", alg, err)
	}
	return signing + "." + b64(sig)
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sign builds a token with header {"alg":alg,"typ":"JWT"} plus hdr.
func sign(t testing.TB, alg string, key any, hdr, claims map[string]any) string {
	t.Helper()
	h := map[string]any{"alg": alg, "typ": "JWT"}
	for k, v := range hdr {
		if v == nil {
			delete(h, k)
			continue
		}
		h[k] = v
	}
	return signRaw(t, alg, key, mustJSON(t, h), mustJSON(t, claims))
}

// claimsFor returns valid claims for issuer iss; over replaces or (nil
// value) removes entries.
func claimsFor(iss string, over map[string]any) map[string]any {
	c := map[string]any{
		"iss": iss,
		"sub": "alice",
		"aud": "api",
		"exp": testNow.Add(time.Hour).Unix(),
		"iat": testNow.Add(-time.Minute).Unix(),
	}
	for k, v := range over {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

func wantReason(t testing.TB, err error, reason string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not *Error; want reason %s", err, err, reason)
	}
	if e.Reason != reason {
		t.Fatalf("reason %s (%v), want %s", e.Reason, e, reason)
	}
}

func wantFieldError(t testing.TB, err error, path string) {
	t.Helper()
	var fe *field.Error
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not *field.Error; want path %s", err, err, path)
	}
	if fe.Path != path {
		t.Fatalf("field error path %q (%v), want %q", fe.Path, fe, path)
	}
}

func newVerifier(t testing.TB, cfg Settings, dir string, opts Options) *Verifier {
	t.Helper()
	if opts.now == nil {
		opts.now = clock
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// Not New: tests reach the verifier's own defences, such as an issuer
	// mixing HMAC and public algorithms, which Validate refuses.
	v, err := build(ctx, withDefaults(cfg), dir, opts)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return v
}

// withDefaults gives the zero fields of cfg's issuers the values absent
// keys take in the configuration file, so that tests set only what they test.
func withDefaults(cfg Settings) Settings {
	def := DefaultIssuer()
	out := Settings{Issuers: slices.Clone(cfg.Issuers), Cache: cfg.Cache}
	for i := range out.Issuers {
		is := &out.Issuers[i]
		for _, d := range []struct{ field, def *time.Duration }{
			{&is.Leeway, &def.Leeway},
			{&is.JWKSRefreshInterval, &def.JWKSRefreshInterval},
			{&is.JWKSUnknownKIDInterval, &def.JWKSUnknownKIDInterval},
			{&is.JWKSFetchTimeout, &def.JWKSFetchTimeout},
		} {
			if *d.field == 0 {
				*d.field = *d.def
			}
		}
		if is.Claims.Subject == "" {
			is.Claims.Subject = def.Claims.Subject
		}
		if is.Claims.Roles == nil {
			is.Claims.Roles = def.Claims.Roles
		}
	}
	return out
}
