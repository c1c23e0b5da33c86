package jwtauth

import (
	"context"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/testkit"
)

func benchVerify(b *testing.B, v *Verifier, token string) {
	b.Helper()
	ctx := context.Background()
	if _, err := v.Verify(ctx, token); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Verify(ctx, token); err != nil {
			b.Fatal(err)
		}
	}
}

func benchClaims(iss string) map[string]any {
	return claimsFor(iss, map[string]any{"roles": []string{"user", "beta"}, "scope": "openid profile"})
}

func BenchmarkVerifyRS256(b *testing.B) {
	k := keys(b)
	cfg, dir := staticConfig(b)
	v := newVerifier(b, cfg, dir, Options{})
	benchVerify(b, v, sign(b, "RS256", k.rsa, nil, benchClaims(issRSA)))
}

func BenchmarkVerifyES256(b *testing.B) {
	k := keys(b)
	cfg, dir := staticConfig(b)
	v := newVerifier(b, cfg, dir, Options{})
	benchVerify(b, v, sign(b, "ES256", k.ec256, nil, benchClaims(issES)))
}

func BenchmarkVerifyHS256(b *testing.B) {
	k := keys(b)
	cfg, dir := staticConfig(b)
	v := newVerifier(b, cfg, dir, Options{})
	benchVerify(b, v, sign(b, "HS256", k.secret, nil, benchClaims(issHS)))
}

// BenchmarkVerifyRS256JWKS: a JWKS issuer, key found by kid.
func BenchmarkVerifyRS256JWKS(b *testing.B) {
	k := keys(b)
	s := testkit.NewJWKSServer(b)
	s.Serve(testkit.JWK(b, &k.rsa.PublicKey, "r1", nil))
	v := newVerifier(b, jwksConfig(s.URL, time.Hour, time.Hour), "", Options{})
	benchVerify(b, v, sign(b, "RS256", k.rsa, map[string]any{"kid": "r1"}, benchClaims(issJWKS)))
}

// BenchmarkVerifyRS256Cached: the same token again, from the cache.
func BenchmarkVerifyRS256Cached(b *testing.B) {
	k := keys(b)
	cfg, dir := staticConfig(b)
	v := newVerifier(b, cached(cfg, DefaultCacheSize), dir, Options{})
	benchVerify(b, v, sign(b, "RS256", k.rsa, nil, benchClaims(issRSA)))
}
