package test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/test/testkit"
)

// TestOIDCDiscoveryBothGateways: an issuer configured by its URL alone
// (discovery, no algorithms) verifies its tokens with the keys and
// algorithm its provider's discovery document names, in Envoy and Kong;
// when the provider goes down the last good keys stay in force; a token
// signed with a key the provider never published is refused with 401.
func TestOIDCDiscoveryBothGateways(t *testing.T) {
	t.Setenv("MODELGUARD_METRICS_ADDRESS", "127.0.0.1:0") // the plugin server's metrics
	idp := testkit.NewOIDCProvider(t, "RS256", "HS256", "none")
	signer, stranger := newRSAKey(t), newRSAKey(t)
	idp.Publish(rs256JWK(t, &signer.PublicKey, "p1"))
	// The document is re-read often, so a test sees failed refreshes soon.
	e := newEnv(t, envOptions{issuer: fmt.Sprintf(`      - issuer: %s
        audiences: [%s]
        discovery: true
        jwks_refresh_interval: 50ms
`, idp.URL, testAudience)})
	k := newKongEnv(t, e, kongBinary(t))
	m := metricsListening.FindStringSubmatch(k.proc.Output())
	if m == nil {
		t.Fatalf("no metrics listener in the plugin server's log:\n%s", k.proc.Output())
	}
	kongMetrics := "http://" + m[1]

	tok := func(key any, kid string) map[string]string {
		return bearer(token(t, jwt.SigningMethodRS256, key, kid, jwt.MapClaims{"iss": idp.URL}))
	}
	body := chatBody("gpt-4o-mini")
	// check sends h through both gateways and wants status (and, when
	// refused, reason) from each.
	check := func(what string, h map[string]string, status int, reason string) {
		t.Helper()
		r := e.do("POST", "/v1/chat/completions", h, body)
		if r.status != status || (reason != "" && r.reason() != reason) {
			t.Errorf("envoy, %s: %d %q %s", what, r.status, r.reason(), r.body)
		}
		kr := k.do("POST", "/v1/chat/completions", h, []byte(body))
		if kr.status != status {
			t.Errorf("kong, %s: %d %s", what, kr.status, kr.body)
		} else if reason != "" {
			if got := e.kongRecord(t, kr.id)["reason"]; got != reason {
				t.Errorf("kong, %s: reason %v, want %s", what, got, reason)
			}
		}
		if status != 200 && strings.Contains(string(r.body)+string(kr.body), idp.URL) {
			t.Errorf("%s: the refusal names the issuer", what)
		}
	}

	check("a token from the provider", tok(signer, "p1"), 200, "")
	check("an HS256 token (advertised, never taken)",
		bearer(token(t, jwt.SigningMethodHS256, []byte(strings.Repeat("s", 32)), "p1", jwt.MapClaims{"iss": idp.URL})), 401, "jwt_alg_not_allowed")

	// The provider goes down: each gateway sees its refreshes fail, and
	// keeps the last good document and keys.
	failed := fmt.Sprintf(`modelguard_jwks_refreshes_total{issuer=%q,outcome="failed"}`, idp.URL)
	envoyBefore, kongBefore := e.metric(failed), scrape(t, kongMetrics, failed)
	idp.SetDown(true)
	testkit.Eventually(t, "failed refreshes in both gateways", func() bool {
		return e.metric(failed) >= envoyBefore+2 && scrape(t, kongMetrics, failed) >= kongBefore+2
	})
	check("a token from the provider, provider down", tok(signer, "p1"), 200, "")
	check("a key never published, under a published kid", tok(stranger, "p1"), 401, "jwt_bad_signature")
	check("a key never published, its own kid", tok(stranger, "x9"), 401, "jwt_unknown_key")
	if idp.Refused() == 0 {
		t.Error("no request reached the provider while it was down")
	}
}
