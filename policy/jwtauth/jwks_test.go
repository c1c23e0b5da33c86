package jwtauth

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"

	"github.com/modelguard/modelguard/test/testkit"
)

const issJWKS = "https://jwks.example"

// refreshLog records OnJWKSRefresh calls.
type refreshLog struct {
	mu         sync.Mutex
	ok, failed int
	issuers    map[string]bool
}

func (r *refreshLog) record(issuer string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.issuers == nil {
		r.issuers = map[string]bool{}
	}
	r.issuers[issuer] = true
	if err != nil {
		r.failed++
	} else {
		r.ok++
	}
}

func (r *refreshLog) counts() (ok, failed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ok, r.failed
}

func jwksConfig(url string, refresh, unknownKID time.Duration) Settings {
	return Settings{Issuers: []IssuerSettings{{
		Issuer:                 issJWKS,
		Audiences:              []string{"api"},
		Algorithms:             []string{"RS256", "ES256"},
		JWKSURL:                url,
		JWKSRefreshInterval:    refresh,
		JWKSUnknownKIDInterval: unknownKID,
		JWKSFetchTimeout:       time.Minute,
	}}}
}

func rsToken(t testing.TB, key any, kid string) string {
	t.Helper()
	var hdr map[string]any
	if kid != "" {
		hdr = map[string]any{"kid": kid}
	}
	return sign(t, "RS256", key, hdr, claimsFor(issJWKS, nil))
}

func verifyErr(v *Verifier, token string) error {
	_, err := v.Verify(context.Background(), token)
	return err
}

func reasonOf(err error) string {
	if e, ok := err.(*Error); ok {
		return e.Reason
	}
	if err == nil {
		return ""
	}
	return "not *Error: " + err.Error()
}

func TestJWKSVerify(t *testing.T) {
	k := keys(t)
	s := testkit.NewJWKSServer(t)
	s.Serve(testkit.JWK(t, &k.rsa.PublicKey, "r1", nil), testkit.JWK(t, &k.ec256.PublicKey, "e1", nil))
	var log refreshLog
	v := newVerifier(t, jwksConfig(s.URL, time.Hour, time.Hour), "", Options{OnJWKSRefresh: log.record})
	if ok, failed := log.counts(); ok != 1 || failed != 0 || !log.issuers[issJWKS] {
		t.Fatalf("after New: %d successful and %d failed refreshes reported for %v, want 1 and 0", ok, failed, log.issuers)
	}
	tests := []struct {
		name  string
		token string
		want  string
	}{
		{"RS256 with kid", rsToken(t, k.rsa, "r1"), ""},
		{"ES256 with kid", sign(t, "ES256", k.ec256, map[string]any{"kid": "e1"}, claimsFor(issJWKS, nil)), ""},
		{"RS256 without kid", rsToken(t, k.rsa, ""), ""},
		{"ES256 without kid", sign(t, "ES256", k.ec256, nil, claimsFor(issJWKS, nil)), ""},
		{"ES256 naming the RSA key", sign(t, "ES256", k.ec256, map[string]any{"kid": "r1"}, claimsFor(issJWKS, nil)), ReasonKeyRejected},
		{"RS256 naming the EC key", rsToken(t, k.rsa, "e1"), ReasonKeyRejected},
		{"RS256 by another key", rsToken(t, k.rsa2, "r1"), ReasonBadSignature},
		{"PS256 not allowed", sign(t, "PS256", k.rsa, map[string]any{"kid": "r1"}, claimsFor(issJWKS, nil)), ReasonAlgNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := reasonOf(verifyErr(v, tc.token)); got != tc.want {
				t.Fatalf("reason %q, want %q", got, tc.want)
			}
		})
	}
}

func TestJWKSRotation(t *testing.T) {
	k := keys(t)
	r1 := testkit.JWK(t, &k.rsa.PublicKey, "r1", nil)
	r2 := testkit.JWK(t, &k.rsa2.PublicKey, "r2", nil)

	t.Run("new kid fetched on first use, then rate limited", func(t *testing.T) {
		s := testkit.NewJWKSServer(t)
		s.Serve(r1)
		v := newVerifier(t, jwksConfig(s.URL, time.Hour, time.Hour), "", Options{KeyWait: 10 * time.Second})
		if err := verifyErr(v, rsToken(t, k.rsa, "r1")); err != nil {
			t.Fatal(err)
		}
		s.Serve(r1, r2)
		// The periodic refresh is an hour away: only the unknown kid can
		// bring r2 in, and the request waits for it (KeyWait is generous).
		if err := verifyErr(v, rsToken(t, k.rsa2, "r2")); err != nil {
			t.Fatalf("new kid after rotation: %v", err)
		}
		if n := s.Hits(); n != 2 {
			t.Fatalf("%d fetches, want 2 (start, unknown kid)", n)
		}
		// The unknown-kid limit (1h) is spent: another unknown kid is
		// refused at once without a fetch.
		wantReason(t, verifyErr(v, rsToken(t, k.rsa2, "r3")), ReasonUnknownKey)
		if n := s.Hits(); n != 2 {
			t.Fatalf("%d fetches after a rate-limited unknown kid, want 2", n)
		}
	})

	t.Run("removed kid refused after refresh", func(t *testing.T) {
		s := testkit.NewJWKSServer(t)
		s.Serve(r1, r2)
		v := newVerifier(t, jwksConfig(s.URL, 10*time.Millisecond, time.Hour), "", Options{})
		for _, tok := range []string{rsToken(t, k.rsa, "r1"), rsToken(t, k.rsa2, "r2")} {
			if err := verifyErr(v, tok); err != nil {
				t.Fatal(err)
			}
		}
		s.Serve(r2)
		old := rsToken(t, k.rsa, "r1")
		testkit.Eventually(t, "r1 refused after it left the set", func() bool {
			return reasonOf(verifyErr(v, old)) == ReasonUnknownKey
		})
		if err := verifyErr(v, rsToken(t, k.rsa2, "r2")); err != nil {
			t.Fatalf("remaining key: %v", err)
		}
		// Without kid, the removed key is not tried either.
		wantReason(t, verifyErr(v, rsToken(t, k.rsa, "")), ReasonBadSignature)
	})

	t.Run("a set with one unsupported key still rotates", func(t *testing.T) {
		s := testkit.NewJWKSServer(t)
		s.Serve(r1)
		v := newVerifier(t, jwksConfig(s.URL, 10*time.Millisecond, time.Hour), "", Options{})
		s.Serve(r2, `{"kty":"OKP","crv":"X448","x":"AAAA","kid":"x448"}`, `{"kty":"XYZ","kid":"xyz"}`)
		testkit.Eventually(t, "r2 accepted", func() bool { return verifyErr(v, rsToken(t, k.rsa2, "r2")) == nil })
	})
}

func TestJWKSKeepsLastKeys(t *testing.T) {
	k := keys(t)
	good := testkit.JWK(t, &k.rsa.PublicKey, "r1", nil)
	tests := []struct {
		name   string
		status int
		body   string
		mode   testkit.JWKSMode
	}{
		{name: "500", status: 500, body: "oops"},
		{name: "404", status: 404, body: `{"keys":[` + good + `]}`},
		{name: "connection closed", mode: testkit.JWKSHangUp},
		{name: "junk", status: 200, body: "<html>not json</html>"},
		{name: "JSON array", status: 200, body: "[]"},
		{name: "empty set", status: 200, body: `{"keys":[]}`},
		{name: "empty object", status: 200, body: `{}`},
		{name: "null", status: 200, body: `null`},
		{name: "invalid key", status: 200, body: `{"keys":[{"kty":"RSA","kid":"r1","n":"!!!","e":"AQAB"}]}`},
		{name: "only unsupported keys", status: 200, body: `{"keys":[{"kty":"OKP","crv":"X448","x":"AAAA"}]}`},
		{name: "only a 1024-bit key", status: 200, body: `{"keys":[` + testkit.JWK(t, &k.rsa1024.PublicKey, "r1", nil) + `]}`},
		{name: "only an encryption key", status: 200, body: `{"keys":[` + testkit.JWK(t, &k.rsa2.PublicKey, "r1", func(o *jwkset.JWKOptions) { o.Metadata.USE = jwkset.UseEnc }) + `]}`},
		{name: "over 1 MiB", status: 200, body: `{"keys":` + strings.Repeat(" ", maxJWKSBytes) + `[]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := testkit.NewJWKSServer(t)
			s.Serve(good)
			var log refreshLog
			v := newVerifier(t, jwksConfig(s.URL, 10*time.Millisecond, time.Hour), "", Options{OnJWKSRefresh: log.record})
			withKid, noKid := rsToken(t, k.rsa, "r1"), rsToken(t, k.rsa, "")
			if err := verifyErr(v, withKid); err != nil {
				t.Fatal(err)
			}
			s.Set(tc.status, tc.body, tc.mode)
			_, failed := log.counts()
			testkit.Eventually(t, "two failed refreshes reported", func() bool {
				_, f := log.counts()
				return f >= failed+2
			})
			for _, tok := range []string{withKid, noKid} {
				if err := verifyErr(v, tok); err != nil {
					t.Fatalf("last good keys dropped: %v", err)
				}
			}
			// Recovery is reported as a success.
			ok, _ := log.counts()
			s.Serve(good)
			testkit.Eventually(t, "a successful refresh reported", func() bool {
				o, _ := log.counts()
				return o > ok
			})
		})
	}
}

func TestJWKSStartDown(t *testing.T) {
	k := keys(t)
	tests := []struct {
		name       string
		mode       testkit.JWKSMode
		refresh    time.Duration
		unknownKID time.Duration
		kid        string
	}{
		{name: "500, periodic refresh recovers", refresh: 10 * time.Millisecond, unknownKID: time.Hour, kid: "r1"},
		{name: "connection closed, unknown-kid refresh recovers", mode: testkit.JWKSHangUp, refresh: time.Hour, unknownKID: time.Millisecond, kid: "r1"},
		{name: "500, token without kid triggers the refresh", refresh: time.Hour, unknownKID: time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := testkit.NewJWKSServer(t)
			s.Set(500, "down", tc.mode)
			var log refreshLog
			v := newVerifier(t, jwksConfig(s.URL, tc.refresh, tc.unknownKID), "", Options{OnJWKSRefresh: log.record})
			if ok, failed := log.counts(); ok != 0 || failed < 1 {
				t.Fatalf("after New: %d successful and %d failed refreshes, want 0 and >= 1", ok, failed)
			}
			tok := rsToken(t, k.rsa, tc.kid)
			wantReason(t, verifyErr(v, tok), ReasonJWKSUnavailable)
			s.Serve(testkit.JWK(t, &k.rsa.PublicKey, "r1", nil))
			testkit.Eventually(t, "token accepted once the JWKS is up", func() bool { return verifyErr(v, tok) == nil })
		})
	}
}

func TestJWKSKeyChecks(t *testing.T) {
	k := keys(t)
	s := testkit.NewJWKSServer(t)
	s.Serve(
		testkit.JWK(t, &k.rsa.PublicKey, "good", nil),
		testkit.JWK(t, &k.rsa1024.PublicKey, "weak", nil),
		testkit.JWK(t, &k.rsa2.PublicKey, "enc", func(o *jwkset.JWKOptions) { o.Metadata.USE = jwkset.UseEnc }),
		testkit.JWK(t, &k.rsa2.PublicKey, "noverify", func(o *jwkset.JWKOptions) { o.Metadata.KEYOPS = []jwkset.KEYOPS{jwkset.KeyOpsEncrypt} }),
		testkit.JWK(t, k.rsa2, "private", func(o *jwkset.JWKOptions) { o.Marshal.Private = true }),
		testkit.JWK(t, &k.rsa2.PublicKey, "rs384", func(o *jwkset.JWKOptions) { o.Metadata.ALG = jwkset.AlgRS384 }),
		testkit.JWK(t, k.secret, "oct", func(o *jwkset.JWKOptions) { o.Marshal.Private = true }),
		testkit.JWK(t, &k.ec384.PublicKey, "p384", nil),
	)
	v := newVerifier(t, jwksConfig(s.URL, time.Hour, time.Hour), "", Options{})
	tests := []struct {
		name  string
		token string
		want  string
	}{
		{"good key", rsToken(t, k.rsa, "good"), ""},
		{"1024-bit RSA key named by kid", rsToken(t, k.rsa1024, "weak"), ReasonKeyRejected},
		{"1024-bit RSA key, no kid", rsToken(t, k.rsa1024, ""), ReasonBadSignature},
		{"use enc", rsToken(t, k.rsa2, "enc"), ReasonKeyRejected},
		{"key_ops without verify", rsToken(t, k.rsa2, "noverify"), ReasonKeyRejected},
		{"published private key", rsToken(t, k.rsa2, "private"), ReasonKeyRejected},
		{"key alg RS384, token RS256", rsToken(t, k.rsa2, "rs384"), ReasonKeyRejected},
		{"rejected keys are not tried without kid", rsToken(t, k.rsa2, ""), ReasonBadSignature},
		{"ES256 naming a P-384 key", sign(t, "ES256", k.ec256, map[string]any{"kid": "p384"}, claimsFor(issJWKS, nil)), ReasonKeyRejected},
		{"HS256 with the oct key", sign(t, "HS256", k.secret, map[string]any{"kid": "oct"}, claimsFor(issJWKS, nil)), ReasonAlgNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := reasonOf(verifyErr(v, tc.token)); got != tc.want {
				t.Fatalf("reason %q, want %q", got, tc.want)
			}
		})
	}
}

// TestJWKSKeyWait: a request never waits for a slow JWKS beyond KeyWait.
// The endpoint holds the refresh until the test ends, so if Verify waited
// for it the test would hang instead of reaching the assertions.
func TestJWKSKeyWait(t *testing.T) {
	k := keys(t)
	s := testkit.NewJWKSServer(t)
	s.Serve(testkit.JWK(t, &k.rsa.PublicKey, "r1", nil))
	v := newVerifier(t, jwksConfig(s.URL, time.Hour, time.Hour), "", Options{KeyWait: 20 * time.Millisecond})
	s.Set(0, "", testkit.JWKSBlock)
	unknown := rsToken(t, k.rsa2, "r2")
	wantReason(t, verifyErr(v, unknown), ReasonUnknownKey)
	testkit.Eventually(t, "the refresh reached the endpoint", func() bool { return s.Blocked() == 1 })
	// While that refresh hangs, other requests wait at most KeyWait too,
	// start no second fetch, and known keys verify without waiting.
	wantReason(t, verifyErr(v, unknown), ReasonUnknownKey)
	if err := verifyErr(v, rsToken(t, k.rsa, "r1")); err != nil {
		t.Fatal(err)
	}
	if n := s.Hits(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// A cancelled request stops waiting at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := v.Verify(ctx, unknown)
	wantReason(t, err, ReasonUnknownKey)
}

// countingTransport records that the caller's HTTP client was used.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

func TestJWKSUsesCallerClientWithCap(t *testing.T) {
	k := keys(t)
	s := testkit.NewJWKSServer(t)
	s.Set(200, `{"keys":`+strings.Repeat(" ", maxJWKSBytes)+`[`+testkit.JWK(t, &k.rsa.PublicKey, "r1", nil)+`]}`, "")
	var rt countingTransport
	var log refreshLog
	v := newVerifier(t, jwksConfig(s.URL, time.Hour, time.Hour), "", Options{
		HTTPClient: &http.Client{Transport: &rt}, OnJWKSRefresh: log.record,
	})
	if rt.n.Load() != 1 {
		t.Fatalf("caller's transport used %d times, want 1", rt.n.Load())
	}
	if ok, failed := log.counts(); ok != 0 || failed != 1 {
		t.Fatalf("oversized first response: %d ok, %d failed refreshes; want 0, 1", ok, failed)
	}
	wantReason(t, verifyErr(v, rsToken(t, k.rsa, "")), ReasonJWKSUnavailable)
}
