package jwtauth

import (
	"context"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/testkit"
)

// testClock is a clock tests move; verifiers read it concurrently.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.set(testNow)
	return c
}

func (c *testClock) now() time.Time  { return time.Unix(0, c.ns.Load()) }
func (c *testClock) set(t time.Time) { c.ns.Store(t.UnixNano()) }

// lookups counts OnCacheLookup calls.
type lookups struct{ hits, misses atomic.Int64 }

func (l *lookups) record(hit bool) {
	if hit {
		l.hits.Add(1)
	} else {
		l.misses.Add(1)
	}
}

func cached(cfg Settings, size int) Settings {
	cfg.Cache = CacheSettings{Enabled: true, Size: size}
	return cfg
}

// TestCacheTimeBounds: a cached token is served only while golang-jwt's
// time checks would pass, to the nanosecond; past exp (plus leeway) or
// before nbf (minus leeway) it is refused at once with the same reason as
// without the cache.
func TestCacheTimeBounds(t *testing.T) {
	k := keys(t)
	cfg, dir := staticConfig(t)
	clk := newTestClock()
	var l lookups
	v := newVerifier(t, cached(cfg, 16), dir, Options{now: clk.now, OnCacheLookup: l.record})
	exp, nbf := testNow.Add(time.Hour), testNow.Add(-time.Minute)
	tok := sign(t, "RS256", k.rsa, nil, claimsFor(issRSA, map[string]any{"exp": exp.Unix(), "nbf": nbf.Unix(), "iat": nbf.Unix()}))
	for range 3 {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if h, m := l.hits.Load(), l.misses.Load(); h != 2 || m != 1 {
		t.Fatalf("%d hits and %d misses, want 2 and 1", h, m)
	}
	tests := []struct {
		at   time.Time
		want string
	}{
		{exp.Add(DefaultLeeway - time.Nanosecond), ""},
		{exp.Add(DefaultLeeway), ReasonExpired},
		{exp.Add(24 * time.Hour), ReasonExpired},
		{nbf.Add(-DefaultLeeway), ""},
		{nbf.Add(-DefaultLeeway - time.Nanosecond), ReasonNotYetValid},
		{testNow, ""},
	}
	for _, tc := range tests {
		clk.set(tc.at)
		if got := reasonOf(verifyErr(v, tok)); got != tc.want {
			t.Errorf("at %v: reason %q, want %q", tc.at.Sub(testNow), got, tc.want)
		}
	}
}

// TestCacheKeyRotation: a token cached under a JWKS key is refused once
// the key leaves the set, although its entry is still in the cache.
func TestCacheKeyRotation(t *testing.T) {
	k := keys(t)
	s := testkit.NewJWKSServer(t)
	s.Serve(testkit.JWK(t, &k.rsa.PublicKey, "r1", nil))
	var l lookups
	v := newVerifier(t, cached(jwksConfig(s.URL, 10*time.Millisecond, time.Hour), 16), "", Options{OnCacheLookup: l.record})
	old := rsToken(t, k.rsa, "r1")
	testkit.Eventually(t, "r1 token served from the cache", func() bool {
		return verifyErr(v, old) == nil && l.hits.Load() > 0
	})
	s.Serve(testkit.JWK(t, &k.rsa2.PublicKey, "r2", nil))
	testkit.Eventually(t, "r1 token refused after r1 left the set", func() bool {
		return reasonOf(verifyErr(v, old)) == ReasonUnknownKey
	})
	if err := verifyErr(v, rsToken(t, k.rsa2, "r2")); err != nil {
		t.Fatalf("new key: %v", err)
	}
}

// TestCacheSameDecisions runs random streams of tokens, good and bad, at
// random times through a verifier with a small cache (so entries are
// evicted) and one without, and requires the same answer every time.
func TestCacheSameDecisions(t *testing.T) {
	k := keys(t)
	cfg, dir := staticConfig(t)
	clk := newTestClock()
	plain := newVerifier(t, cfg, dir, Options{now: clk.now})
	var l lookups
	fast := newVerifier(t, cached(cfg, 5), dir, Options{now: clk.now, OnCacheLookup: l.record})

	at := func(d time.Duration) int64 { return testNow.Add(d).Unix() }
	var pool []string
	for i, c := range []map[string]any{
		{},
		{"sub": "bob", "roles": []string{"admin"}},
		{"exp": at(10 * time.Minute)},
		{"exp": at(-10 * time.Minute)},
		{"nbf": at(5 * time.Minute)},
		{"nbf": at(-5 * time.Minute), "exp": at(20 * time.Minute)},
		{"iat": at(3 * time.Minute)},
		{"aud": "other"},
		{"exp": nil},
		{"sub": nil},
		{"roles": "a b a", "scope": "x"},
	} {
		claims := claimsFor(issRSA, c)
		claims["jti"] = i // distinct tokens
		pool = append(pool,
			sign(t, "RS256", k.rsa, nil, claims),
			sign(t, "RS256", k.rsa2, nil, claims), // wrong key
			sign(t, "ES256", k.ec256, nil, claimsFor(issES, c)),
			sign(t, "HS256", k.secret, nil, claimsFor(issHS, c)),
			sign(t, "RS256", k.rsa2, map[string]any{"kid": "b1"}, claimsFor(issKid, c)),
		)
	}
	good := sign(t, "RS256", k.rsa, nil, claimsFor(issRSA, nil))
	pool = append(pool, good, good[:len(good)-2]+"AA", strings.Replace(good, ".", ". ", 1))

	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 0))
	for i := range 3000 {
		if r.IntN(10) == 0 {
			clk.set(testNow.Add(time.Duration(r.Int64N(int64(40*time.Minute))) - 10*time.Minute))
		}
		tok := pool[r.IntN(len(pool))]
		want, werr := plain.Verify(context.Background(), tok)
		got, gerr := fast.Verify(context.Background(), tok)
		if reasonOf(werr) != reasonOf(gerr) || !sameIdentity(want, got) {
			t.Fatalf("seed %d, step %d at %v: cached %+v, %v; uncached %+v, %v",
				seed, i, clk.now().Sub(testNow), got, gerr, want, werr)
		}
	}
	if l.hits.Load() == 0 || l.misses.Load() == 0 {
		t.Fatalf("%d hits, %d misses: the stream did not exercise the cache", l.hits.Load(), l.misses.Load())
	}
}

func sameIdentity(a, b *Identity) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Subject == b.Subject && a.Issuer == b.Issuer && slices.Equal(a.Roles, b.Roles) && reflect.DeepEqual(a.Claims, b.Claims)
}

func TestCacheSettings(t *testing.T) {
	cfg, dir := staticConfig(t)
	for _, tc := range []struct {
		cache CacheSettings
		want  string // field path of the error, "" = accepted
	}{
		{DefaultCache(), ""},
		{CacheSettings{Enabled: false}, ""},
		{CacheSettings{Enabled: true, Size: 0}, "cache.size"},
		{CacheSettings{Enabled: true, Size: MaxCacheSize + 1}, "cache.size"},
	} {
		s := withDefaults(Settings{Issuers: cfg.Issuers[:1], Cache: tc.cache})
		_, err := New(t.Context(), s, dir, Options{})
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.cache, err)
			}
			continue
		}
		wantFieldError(t, err, tc.want)
	}
}

// TestMemo: the value derived from a cached identity is computed once and
// served to every later request bearing the token.
func TestMemo(t *testing.T) {
	k := keys(t)
	cfg, dir := staticConfig(t)
	v := newVerifier(t, cached(cfg, 16), dir, Options{})
	tok := sign(t, "RS256", k.rsa, nil, claimsFor(issRSA, nil))
	calls := 0
	derive := func(id *Identity) any { calls++; return id.Subject + "!" }
	for range 3 {
		id, err := v.Verify(context.Background(), tok)
		if err != nil {
			t.Fatal(err)
		}
		if got := id.Memo(derive); got != "alice!" {
			t.Fatalf("Memo = %v", got)
		}
	}
	if calls != 1 {
		t.Fatalf("derived %d times, want once", calls)
	}
}
