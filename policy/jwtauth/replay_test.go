package jwtauth

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/testkit"
)

// memReplay is an in-memory ReplayStore (policy/replay is the real one,
// tested in its package and end to end).
type memReplay struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (m *memReplay) FirstUse(_ context.Context, v string, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.seen[v]; ok {
		return false, nil
	}
	m.seen[v] = until
	return true, nil
}

// TestReplay: an issuer with replay_claim accepts each token once, whether
// the second use would be a cache hit or verified again.
func TestReplay(t *testing.T) {
	k := keys(t)
	for _, cache := range []bool{true, false} {
		store := &memReplay{seen: map[string]time.Time{}}
		cfg := Settings{Cache: CacheSettings{Enabled: cache, Size: 100}, Issuers: []IssuerSettings{{
			Issuer: "https://once.example", Audiences: []string{"api"}, Algorithms: []string{"RS256"},
			Keys: []StaticKey{{PEMFile: "rsa.pem"}}, ReplayClaim: "jti",
		}}}
		dir := t.TempDir()
		testkit.WriteFile(t, dir, "rsa.pem", pemOf(t, &k.rsa.PublicKey))
		v := newVerifier(t, cfg, dir, Options{Replay: store})
		tok := func(over map[string]any) string {
			return sign(t, "RS256", k.rsa, nil, claimsFor("https://once.example", over))
		}
		t1 := tok(map[string]any{"jti": "a1"})
		if err := verifyErr(v, t1); err != nil {
			t.Fatalf("cache %v, first use: %v", cache, err)
		}
		wantReason(t, verifyErr(v, t1), ReasonReplayed)
		wantReason(t, verifyErr(v, t1), ReasonReplayed)
		if err := verifyErr(v, tok(map[string]any{"jti": "a2"})); err != nil {
			t.Fatalf("another jti: %v", err)
		}
		wantReason(t, verifyErr(v, tok(nil)), ReasonMissingReplayClaim)
		wantReason(t, verifyErr(v, tok(map[string]any{"jti": 7})), ReasonMissingReplayClaim)
		// Remembered for the token's lifetime: until exp plus the leeway.
		if got, want := store.seen["https://once.example\x00a1"], time.Unix(testNow.Add(time.Hour).Unix(), 0).Add(DefaultLeeway); !got.Equal(want) {
			t.Errorf("remembered until %v, want %v", got, want)
		}
	}
}
