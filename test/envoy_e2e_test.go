package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"crypto/x509"
	"encoding/pem"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/test/testkit"
)

// TestEnvoyAuthentication drives real HTTP requests through the Envoy
// harness to the real gRPC server and a fake model upstream.
func TestEnvoyAuthentication(t *testing.T) {
	e := newEnv(t, envOptions{})
	good := token(t, jwt.SigningMethodRS256, e.signer, "k1", nil)
	forger := newRSAKey(t)
	pubDER, err := x509.MarshalPKIXPublicKey(&e.signer.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	unsigned := token(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "k1", nil)

	tests := []struct {
		name    string
		headers map[string]string
		status  int
		reason  string
		subject string
	}{
		{"jwt allowed", bearer(good), 200, "allowed", "alice"},
		{"api key in x-api-key allowed", map[string]string{"x-api-key": e.keys["alice-key"]}, 200, "allowed", "alice"},
		{"api key as OpenAI bearer allowed", bearer(e.keys["alice-key"]), 200, "allowed", "alice"},
		{"missing credential", nil, 401, "credentials_missing", ""},
		{"expired", bearer(token(t, jwt.SigningMethodRS256, e.signer, "k1", jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix()})), 401, "jwt_expired", ""},
		{"forged signature", bearer(token(t, jwt.SigningMethodRS256, forger, "k1", nil)), 401, "jwt_bad_signature", ""},
		{"wrong audience", bearer(token(t, jwt.SigningMethodRS256, e.signer, "k1", jwt.MapClaims{"aud": "other"})), 401, "jwt_bad_audience", ""},
		{"alg none", bearer(unsigned), 401, "jwt_alg_not_allowed", ""},
		{"HS256 signed with the RSA public key", bearer(token(t, jwt.SigningMethodHS256, pubPEM, "k1", nil)), 401, "jwt_alg_not_allowed", ""},
		{"unknown api key", map[string]string{"x-api-key": "mg_test_doesnotexist"}, 401, "api_key_unknown", ""},
		{"basic auth refused", map[string]string{"authorization": "Basic YWxpY2U6cHc="}, 401, "auth_scheme_unsupported", ""},
		{"two credentials refused", map[string]string{"authorization": "Bearer " + good, "x-api-key": e.keys["alice-key"]}, 401, "credentials_ambiguous", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("POST", "/v1/chat/completions", tc.headers, chatBody("gpt-4o-mini"))
			if r.status != tc.status || r.reason() != tc.reason {
				t.Fatalf("got %d %q, want %d %q (body %s)", r.status, r.reason(), tc.status, tc.reason, r.body)
			}
			if tc.status == 401 {
				if got := r.header.Get("www-authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Errorf("www-authenticate = %q", got)
				}
				assertClientError(t, r, "authentication_error", tc.reason)
				return
			}
			if sub, _ := r.upstreamHeader("x-modelguard-subject"); sub != tc.subject {
				t.Errorf("upstream subject = %q, want %q", sub, tc.subject)
			}
			if v, ok := r.upstreamHeader("authorization"); ok {
				t.Errorf("credential reached the upstream: authorization=%q", v)
			}
			if v, ok := r.upstreamHeader("x-api-key"); ok {
				t.Errorf("credential reached the upstream: x-api-key=%q", v)
			}
			if id, _ := r.upstreamHeader("x-modelguard-decision-id"); id == "" || id != r.log.Metadata["decision_id"] {
				t.Errorf("decision id upstream %q vs metadata %v", id, r.log.Metadata["decision_id"])
			}
		})
	}
}

// TestEnvoyAuditTrail checks one audit event per decision, with the fields
// operators need and no credential anywhere in the trail.
func TestEnvoyAuditTrail(t *testing.T) {
	e := newEnv(t, envOptions{})
	tok := token(t, jwt.SigningMethodRS256, e.signer, "k1", nil)
	allowed := e.do("POST", "/v1/chat/completions", bearer(tok), chatBody("gpt-4o-mini"))
	denied := e.do("POST", "/v1/chat/completions", map[string]string{"x-api-key": e.keys["reader-key"]}, chatBody("gpt-4o-mini"))
	refused := e.do("POST", "/v1/chat/completions", bearer(tok+"x"), chatBody("gpt-4o-mini"))

	raw, err := os.ReadFile(e.trail("envoy"))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{tok, e.keys["reader-key"], "Hello"} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("audit trail contains a credential or prompt: %q", secret)
		}
	}
	events := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if id, ok := ev["request_id"].(string); ok {
			events[id] = ev
		}
	}
	for _, tc := range []struct {
		r                      result
		result, reason, method string
	}{
		{allowed, "allow", "allowed", "jwt"},
		{denied, "deny", "read_only", "api_key"},
		{refused, "deny", "jwt_malformed", ""},
	} {
		ev := events[tc.r.log.RequestID]
		if ev == nil {
			t.Fatalf("no audit event for %s", tc.r.log.RequestID)
		}
		if ev["result"] != tc.result || ev["reason"] != tc.reason || ev["decision_id"] != tc.r.log.Metadata["decision_id"] ||
			ev["gateway"] != "envoy" || ev["path"] != "/v1/chat/completions" || ev["model"] != "gpt-4o-mini" && tc.result == "allow" {
			t.Errorf("audit event %v, want result %s reason %s", ev, tc.result, tc.reason)
		}
		if m, _ := ev["auth_method"].(string); m != tc.method {
			t.Errorf("auth_method %q, want %q", m, tc.method)
		}
	}
}

// assertClientError checks the OpenAI-shaped error body and that it leaks
// nothing operators see (the reason code).
func assertClientError(t *testing.T, r result, typ, reason string) {
	t.Helper()
	if ct := r.header.Get("content-type"); ct != "application/json" {
		t.Errorf("content-type = %q", ct)
	}
	var body struct {
		Error struct{ Message, Type, Code string }
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	if body.Error.Type != typ || body.Error.Message == "" {
		t.Errorf("error body %s, want type %s", r.body, typ)
	}
	if reason != "" && strings.Contains(string(r.body), reason) {
		t.Errorf("client body leaks the reason %q: %s", reason, r.body)
	}
}

func TestEnvoyIdentityHeadersCannotBeForged(t *testing.T) {
	e := newEnv(t, envOptions{})
	h := map[string]string{
		"x-api-key":                e.keys["alice-key"],
		"x-modelguard-subject":     "root",
		"x-modelguard-roles":       "admin",
		"x-modelguard-key-id":      "forged",
		"x-modelguard-auth-method": "jwt",
	}
	r := e.do("POST", "/v1/chat/completions", h, chatBody("gpt-4o-mini"))
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	for name, want := range map[string]string{"x-modelguard-subject": "alice", "x-modelguard-roles": "chat-user", "x-modelguard-key-id": "alice-key", "x-modelguard-auth-method": "api_key"} {
		if got, _ := r.upstreamHeader(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	// With a JWT there is no key id: the client's copy must be removed, not passed.
	r = e.do("POST", "/v1/chat/completions", map[string]string{"authorization": "Bearer " + token(t, jwt.SigningMethodRS256, e.signer, "k1", nil), "x-modelguard-key-id": "forged"}, chatBody("gpt-4o-mini"))
	if v, ok := r.upstreamHeader("x-modelguard-key-id"); ok {
		t.Errorf("forged x-modelguard-key-id reached the upstream: %q", v)
	}
}

func TestEnvoyAuthorization(t *testing.T) {
	for _, raw := range []bool{false, true} {
		t.Run(fmt.Sprintf("encode_raw_headers=%v", raw), func(t *testing.T) {
			e := newEnv(t, envOptions{rawHeaders: raw})
			reader := map[string]string{"x-api-key": e.keys["reader-key"]}
			alice := map[string]string{"x-api-key": e.keys["alice-key"]}
			tests := []struct {
				name, method, path, body string
				headers                  map[string]string
				status                   int
				reason                   string
			}{
				{"chat-user chats with a permitted model", "POST", "/v1/chat/completions", chatBody("gpt-4o-mini"), alice, 200, "allowed"},
				{"chat-user asks for a model outside the role", "POST", "/v1/chat/completions", chatBody("gpt-4o"), alice, 403, "model_not_permitted"},
				{"chat-user runs inference", "POST", "/v2/models/resnet/infer", `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[0.5]}]}`, alice, 403, "role_not_permitted"},
				{"reader lists models", "GET", "/v1/models", "", reader, 200, "allowed"},
				{"reader cannot chat", "POST", "/v1/chat/completions", chatBody("gpt-4o-mini"), reader, 403, "read_only"},
				{"query string is parsed out of the path", "GET", "/v1/models?limit=5", "", reader, 200, "allowed"},
				{"duplicate model keys are refused", "POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","model":"gpt-4o","messages":[]}`, alice, 400, "body_duplicate_key"},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					r := e.do(tc.method, tc.path, tc.headers, tc.body)
					if r.status != tc.status || r.reason() != tc.reason {
						t.Fatalf("got %d %q, want %d %q (body %s)", r.status, r.reason(), tc.status, tc.reason, r.body)
					}
					if tc.status == 403 {
						assertClientError(t, r, "permission_error", tc.reason)
					}
				})
			}
		})
	}
}

func TestEnvoyRevokedKeyStopsWorking(t *testing.T) {
	e := newEnv(t, envOptions{})
	h := map[string]string{"x-api-key": e.keys["alice-key"]}
	if r := e.do("POST", "/v1/chat/completions", h, chatBody("gpt-4o-mini")); r.status != 200 {
		t.Fatalf("before revocation: %d", r.status)
	}
	e.writeKeys(map[string]keyEntry{
		"alice-key":  {subject: "alice", roles: []string{"chat-user"}, disabled: true},
		"reader-key": {subject: "rita", roles: []string{"reader"}},
	})
	testkit.Eventually(t, "the revoked key to be refused", func() bool {
		r := e.do("POST", "/v1/chat/completions", h, chatBody("gpt-4o-mini"))
		return r.status == 401 && r.reason() == "api_key_disabled"
	})
	// A broken key file pushed afterwards is refused; the last good set stays.
	refusedBefore := e.metric(`modelguard_api_key_reloads_total{outcome="refused"}`)
	writeAtomic(t, filepath.Join(e.dir, "keys.yaml"), "keys: [this is not a key entry\n")
	testkit.Eventually(t, "the broken key file to be refused", func() bool {
		return e.metric(`modelguard_api_key_reloads_total{outcome="refused"}`) > refusedBefore
	})
	if r := e.do("GET", "/v1/models", map[string]string{"x-api-key": e.keys["reader-key"]}, ""); r.status != 200 {
		t.Fatalf("after a broken key file, a valid key got %d", r.status)
	}
	if r := e.do("POST", "/v1/chat/completions", h, chatBody("gpt-4o-mini")); r.status != 401 {
		t.Fatalf("after a broken key file, the revoked key got %d", r.status)
	}
}

// TestEnvoyPolicyEditUnderLoad edits the RBAC data while clients send
// requests: no request may fail, and each decision must match the policy
// revision that made it.
func TestEnvoyPolicyEditUnderLoad(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := map[string]string{"x-api-key": e.keys["alice-key"]}
	first := e.do("POST", "/v1/chat/completions", alice, chatBody("llama-3.1-8b-instruct"))
	if first.status != 200 {
		t.Fatalf("before the edit: %d", first.status)
	}
	oldRev := first.revision()

	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
		newSeen  int
		total    int
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				stable := e.do("POST", "/v1/chat/completions", alice, chatBody("gpt-4o-mini"))
				moving := e.do("POST", "/v1/chat/completions", alice, chatBody("llama-3.1-8b-instruct"))
				mu.Lock()
				total += 2
				if stable.status != 200 {
					failures = append(failures, fmt.Sprintf("stable request got %d (%s)", stable.status, stable.reason()))
				}
				switch rev := moving.revision(); {
				case rev == oldRev && moving.status != 200:
					failures = append(failures, fmt.Sprintf("old revision denied: %d %s", moving.status, moving.reason()))
				case rev != oldRev && moving.status != 403:
					failures = append(failures, fmt.Sprintf("new revision %s allowed: %d", rev, moving.status))
				case rev != oldRev:
					newSeen++
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // let load build up before the edit
	data := filepath.Join(e.dir, "policy", "data.yaml")
	b, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, data, strings.Replace(string(b), "models: [gpt-4o-mini, llama-3.1-8b-instruct]", "models: [gpt-4o-mini]", 1))
	testkit.Eventually(t, "decisions from the new revision", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return newSeen >= 20
	})
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed or were wrongly decided; first: %s", len(failures), total, failures[0])
	}
	t.Logf("%d requests, %d decided by the new revision, none failed", total, newSeen)
}

func TestEnvoyBrokenPolicyIsRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := map[string]string{"x-api-key": e.keys["alice-key"]}
	before := e.do("POST", "/v1/chat/completions", alice, chatBody("gpt-4o-mini"))
	if before.status != 200 {
		t.Fatalf("before: %d", before.status)
	}
	refused := e.metric(`modelguard_policy_reloads_total{outcome="refused"}`)
	rego := filepath.Join(e.dir, "policy", "authz.rego")
	b, err := os.ReadFile(rego)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, rego, string(b)+"\nallow if { this is not rego\n")
	testkit.Eventually(t, "the broken policy to be refused", func() bool {
		return e.metric(`modelguard_policy_reloads_total{outcome="refused"}`) > refused
	})
	for _, tc := range []struct {
		model  string
		status int
	}{{"gpt-4o-mini", 200}, {"gpt-4o", 403}} {
		r := e.do("POST", "/v1/chat/completions", alice, chatBody(tc.model))
		if r.status != tc.status || r.revision() != before.revision() {
			t.Fatalf("%s: got %d from revision %s, want %d from the old revision %s", tc.model, r.status, r.revision(), tc.status, before.revision())
		}
	}
}

func TestEnvoyJWKSRotation(t *testing.T) {
	e := newEnv(t, envOptions{})
	if r := e.do("POST", "/v1/chat/completions", bearer(token(t, jwt.SigningMethodRS256, e.signer, "k1", nil)), chatBody("gpt-4o-mini")); r.status != 200 {
		t.Fatalf("k1 before rotation: %d %s", r.status, r.reason())
	}
	next := newRSAKey(t)
	e.jwks.Serve(rs256JWK(t, &next.PublicKey, "k2"))
	// The new kid is unknown to the cached set: it triggers a refresh.
	testkit.Eventually(t, "the new kid to be accepted", func() bool {
		return e.do("POST", "/v1/chat/completions", bearer(token(t, jwt.SigningMethodRS256, next, "k2", nil)), chatBody("gpt-4o-mini")).status == 200
	})
	r := e.do("POST", "/v1/chat/completions", bearer(token(t, jwt.SigningMethodRS256, e.signer, "k1", nil)), chatBody("gpt-4o-mini"))
	if r.status != 401 {
		t.Fatalf("removed kid k1 after rotation: got %d, want 401", r.status)
	}
}

func TestEnvoyJWKSDownKeepsLastKeys(t *testing.T) {
	for _, mode := range []string{"500", "junk"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			good := bearer(token(t, jwt.SigningMethodRS256, e.signer, "k1", nil))
			if r := e.do("POST", "/v1/chat/completions", good, chatBody("gpt-4o-mini")); r.status != 200 {
				t.Fatalf("before: %d %s", r.status, r.reason())
			}
			if mode == "500" {
				e.jwks.Set(http.StatusInternalServerError, "down", testkit.JWKSAnswer)
			} else {
				e.jwks.Set(http.StatusOK, "<html>maintenance</html>", testkit.JWKSAnswer)
			}
			calls := e.jwks.Hits()
			// An unknown kid forces a refresh attempt against the broken endpoint.
			other := newRSAKey(t)
			testkit.Eventually(t, "a refresh attempt", func() bool {
				e.do("POST", "/v1/chat/completions", bearer(token(t, jwt.SigningMethodRS256, other, "k9", nil)), chatBody("gpt-4o-mini"))
				return e.jwks.Hits() > calls
			})
			if r := e.do("POST", "/v1/chat/completions", good, chatBody("gpt-4o-mini")); r.status != 200 {
				t.Fatalf("with the JWKS endpoint down, the last good key got %d %s", r.status, r.reason())
			}
		})
	}
}
