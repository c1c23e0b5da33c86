package policy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/certid"
	"github.com/modelguard/modelguard/test/redisserver"
	"github.com/modelguard/modelguard/test/testkit"
)

// BenchmarkDecideAbuse is the whole decision for a bearer API key with
// each issue-15 step on its own, for the cost of each as a ratio to the
// decision without it from the same run (the sub-benchmark its comment
// names): address lists (a 1,000,000-prefix deny list and an allow list),
// the lockout (a lookup per request, in process or in Redis), every
// built-in DLP detector over 1 KiB and 64 KiB prompts, and a client
// certificate as the credential (Envoy hands the principal over; Kong and
// nginx hand the certificate, which certid reads), introspection and
// OIDC discovery with their results cached, and replay protection (in
// process or in Redis) on tokens that are each new. Redis cases
// run against a real redis-server on loopback and are skipped without
// one.
func BenchmarkDecideAbuse(b *testing.B) {
	dir := b.TempDir()
	var feed strings.Builder
	for i := range 1_000_000 {
		fmt.Fprintf(&feed, "%d.%d.%d.0/24\n", 11+i>>16, i>>8&0xff, i&0xff)
	}
	threats := testkit.WriteFile(b, dir, "threats.txt", []byte(feed.String()))
	corp := testkit.WriteFile(b, dir, "corp.txt", []byte("10.0.0.0/8\n"))
	var rules strings.Builder
	for _, id := range []string{"openai_api_key", "anthropic_api_key", "aws_access_key_id", "github_token", "google_api_key", "slack_token", "private_key", "jwt", "payment_card"} {
		fmt.Fprintf(&rules, "    - {name: %s, detector: %s}\n", strings.ReplaceAll(id, "_", "-"), id)
	}
	dlp := "dlp:\n  rules:\n" + rules.String()
	// One redis-server for the whole run (a sub-benchmark's would stop
	// with it).
	var redisAddr string
	if _, err := exec.LookPath("redis-server"); err == nil {
		redisAddr = redisserver.Start(b).Addr
	}
	redis := func(b *testing.B) string {
		if redisAddr == "" {
			b.Skip("redis-server not installed")
		}
		return fmt.Sprintf("rate_limits:\n  store: redis\n  redis: {address: %q, timeout: 1s}\n", redisAddr)
	}
	cert := clientCertPEM(b, "spiffe://cluster.local/ns/batch/sa/scorer")
	const certs = "  client_certs:\n    - {principal: \"spiffe://cluster.local/ns/batch/sa/scorer\", subject: scorer, roles: [chat-user]}\n"
	apiKey := func(s benchSetup) *policy.Request { return benchRequest("Bearer " + s.key) }
	prompt := func(n int) func(s benchSetup) *policy.Request {
		return func(s benchSetup) *policy.Request {
			req := apiKey(s)
			req.Body = promptBody(n)
			return req
		}
	}
	noCredential := func(s benchSetup) *policy.Request {
		req := benchRequest("")
		delete(req.Headers, "authorization")
		return req
	}
	oidc := testkit.NewOIDCProvider(b, "RS256")
	oidcKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	oidc.Publish(testkit.JWK(b, &oidcKey.PublicKey, "p1", nil))
	oidcToken := signed(b, jwt.SigningMethodRS256, oidcKey, "p1", jwt.MapClaims{"iss": oidc.URL})
	introspect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"active":true,"sub":"alice","scope":"chat-user","aud":"models","exp":%d}`, time.Now().Add(time.Hour).Unix())
	}))
	b.Cleanup(introspect.Close)
	secret := testkit.WriteFile(b, dir, "introspection.secret", []byte("s3cret\n"))
	freshKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&freshKey.PublicKey)
	freshPub := testkit.WriteFile(b, dir, "fresh.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	fresh := func(replay string) func(*testing.B) string {
		return func(*testing.B) string {
			return fmt.Sprintf("      - {issuer: https://fresh.bench, audiences: [models], algorithms: [ES256], keys: [{pem_file: %s}]%s}\n", freshPub, replay)
		}
	}
	bearerToken := func(tok string) func(benchSetup) *policy.Request {
		return func(benchSetup) *policy.Request { return benchRequest("Bearer " + tok) }
	}
	for _, tc := range []struct {
		name string
		// jwt are lines under authentication.jwt (or authentication), extra
		// top-level sections.
		jwt, extra func(b *testing.B) string
		req        func(benchSetup) *policy.Request
	}{
		{"api_key", nil, nil, apiKey}, // the baseline of the next three, introspection and the certificates
		{"ip_lists_1M", nil, func(*testing.B) string {
			return fmt.Sprintf("ip_lists:\n  lists:\n    - {name: threats, file: %s, action: deny}\n    - {name: corp, file: %s, action: allow}\n", threats, corp)
		}, apiKey},
		{"lockout_local", nil, func(*testing.B) string { return "lockout: {max_failures: 10}\n" }, apiKey},
		{"lockout_redis", nil, func(b *testing.B) string { return "lockout: {max_failures: 10}\n" + redis(b) }, apiKey},
		{"prompt_1KiB", nil, nil, prompt(1 << 10)}, // the baseline of prompt_1KiB_dlp
		{"prompt_1KiB_dlp", nil, func(*testing.B) string { return dlp }, prompt(1 << 10)},
		{"prompt_64KiB", nil, nil, prompt(64 << 10)}, // the baseline of prompt_64KiB_dlp
		{"prompt_64KiB_dlp", nil, func(*testing.B) string { return dlp }, prompt(64 << 10)},
		// Envoy: source.principal, looked up.
		{"client_cert", func(*testing.B) string { return certs }, nil, func(s benchSetup) *policy.Request {
			req := noCredential(s)
			req.TLSPrincipal = "spiffe://cluster.local/ns/batch/sa/scorer"
			return req
		}},
		// Kong and nginx: the verified certificate in PEM, read on demand
		// and remembered as the adapters do (the gateway round trips are
		// not counted; a certificate seen for the first time costs a
		// parse, BenchmarkFromPEM in policy/certid).
		{"client_cert_pem", func(*testing.B) string { return certs }, nil, func(s benchSetup) *policy.Request {
			req := noCredential(s)
			principals := certid.NewPrincipals()
			req.Fetch = func(r *policy.Request, parts policy.Part) error {
				if parts&policy.PartTLSPrincipal != 0 {
					p, err := principals.FromPEM(cert, nil)
					r.TLSPrincipal = p
					return err
				}
				return nil
			}
			return req
		}},
		{"introspection_cached", func(*testing.B) string {
			return fmt.Sprintf("  introspection: {url: %q, client_id: modelguard, client_secret_file: %s, audiences: [models]}\n", introspect.URL, secret)
		}, nil, bearerToken("opaque-alice-0001")},
		{"jwt", nil, nil, func(s benchSetup) *policy.Request { return benchRequest("Bearer " + s.token) }}, // static keys: the baseline of jwt_oidc
		{"jwt_oidc", func(*testing.B) string {
			return fmt.Sprintf("      - {issuer: %q, audiences: [models], discovery: true}\n", oidc.URL)
		}, nil, bearerToken(oidcToken)},
		// A new token (jti) every request, never in the verified-token
		// cache: the baseline of the replay checks.
		{"jwt_fresh", fresh(""), nil, nil},
		{"jwt_fresh_replay_local", fresh(", replay_claim: jti"), nil, nil},
		{"jwt_fresh_replay_redis", fresh(", replay_claim: jti"), redis, nil},
	} {
		b.Run(tc.name, func(b *testing.B) {
			jwt, extra := "", ""
			if tc.jwt != nil {
				jwt = tc.jwt(b)
			}
			if tc.extra != nil {
				extra = tc.extra(b)
			}
			s := newBenchSetupJWT(b, "", jwt, extra)
			if tc.req == nil {
				benchDecideFreshTokens(b, s.engine, freshKey)
				return
			}
			benchDecide(b, s.engine, tc.req(s))
		})
	}
}

// promptBody is a chat request whose user message is n bytes of prose no
// DLP detector matches.
func promptBody(n int) []byte {
	const prose = "Summarise the quarterly report and list the three largest risks. "
	text := strings.Repeat(prose, n/len(prose)+1)[:n]
	return []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + text + `"}],"max_tokens":128}`)
}

// clientCertPEM is a CA-issued client certificate whose URI SAN is id, in
// PEM as nginx's $ssl_client_raw_cert.
func clientCertPEM(b *testing.B, id string) string {
	u, err := url.Parse(id)
	if err != nil {
		b.Fatal(err)
	}
	c := testkit.NewCA(b, "bench CA").Issue(b, x509.Certificate{URIs: []*url.URL{u}})
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}))
}

// benchDecideFreshTokens decides requests each with a token of its own
// (a new jti), signed with key for https://fresh.bench before the clock
// starts.
func benchDecideFreshTokens(b *testing.B, e *policy.Engine, key *ecdsa.PrivateKey) {
	ctx := context.Background()
	reqs := make([]*policy.Request, b.N+1)
	for i := range reqs {
		reqs[i] = benchRequest("Bearer " + signed(b, jwt.SigningMethodES256, key, "", jwt.MapClaims{"iss": "https://fresh.bench", "jti": rand.Text()}))
	}
	if d := e.Decide(ctx, reqs[b.N]); !d.Allow {
		b.Fatalf("benchmark request denied: %d %s", d.Status, d.Reason)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		e.Decide(ctx, reqs[i])
	}
}

// signed is a token for the bench's audience and a chat-user, valid for an
// hour, with claims (iss at least) and key id kid.
func signed(b *testing.B, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	now := time.Now()
	c := jwt.MapClaims{"aud": "models", "sub": "alice", "roles": []string{"chat-user"}, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	maps.Copy(c, claims)
	t := jwt.NewWithClaims(method, c)
	if kid != "" {
		t.Header["kid"] = kid
	}
	tok, err := t.SignedString(key)
	if err != nil {
		b.Fatal(err)
	}
	return tok
}
