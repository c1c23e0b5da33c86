package testkit

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// OIDCProvider is the discovery side of an OpenID provider on loopback:
// its issuer is URL, its discovery document at
// URL/.well-known/openid-configuration names its JWK Set at URL/jwks. It
// closes when the test ends.
type OIDCProvider struct {
	// URL is the issuer (http on loopback, which modelguard allows for
	// tests).
	URL string

	down    atomic.Bool
	refused atomic.Int64

	mu   sync.Mutex
	algs []string
	keys []string
}

// NewOIDCProvider starts an OIDCProvider advertising algs in
// id_token_signing_alg_values_supported, with an empty key set.
func NewOIDCProvider(tb testing.TB, algs ...string) *OIDCProvider {
	tb.Helper()
	p := &OIDCProvider{algs: algs}
	srv := httptest.NewServer(http.HandlerFunc(p.handle))
	p.URL = srv.URL
	tb.Cleanup(srv.Close)
	return p
}

func (p *OIDCProvider) handle(w http.ResponseWriter, r *http.Request) {
	if p.down.Load() {
		p.refused.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	p.mu.Lock()
	algs, keys := p.algs, p.keys
	p.mu.Unlock()
	var body []byte
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		body, _ = json.Marshal(map[string]any{
			"issuer": p.URL, "jwks_uri": p.URL + "/jwks",
			"id_token_signing_alg_values_supported": algs,
		})
	case "/jwks":
		body = []byte(`{"keys":[` + strings.Join(keys, ",") + `]}`)
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// Publish makes the JWK Set hold keys (JSON objects, see JWK).
func (p *OIDCProvider) Publish(keys ...string) {
	p.mu.Lock()
	p.keys = keys
	p.mu.Unlock()
}

// SetDown takes the provider down (every request gets 503) or back up.
func (p *OIDCProvider) SetDown(down bool) { p.down.Store(down) }

// Refused is how many requests arrived while the provider was down.
func (p *OIDCProvider) Refused() int64 { return p.refused.Load() }
