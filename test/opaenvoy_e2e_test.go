package test

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/test/envoyharness"
)

// opaEnvoySecret is the HS256 key in examples/opa-envoy/data.yaml.
const opaEnvoySecret = "example-secret-replace-me-with-32-bytes-or-more"

// opaEnvoyOptions run the example policy written for opa-envoy-plugin,
// unchanged, with input opa-envoy: no built-in authenticator, so that the
// policy verifies tokens itself.
func opaEnvoyOptions(t *testing.T) envOptions {
	t.Helper()
	files := map[string]string{}
	for _, name := range []string{"policy.rego", "policy_test.rego", "data.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "examples", "opa-envoy", name))
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Join("opa-envoy", name)] = string(b)
	}
	return envOptions{
		files:          files,
		authentication: "authentication:\n  allow_anonymous: true",
		authorization:  "authorization:\n  policy_dir: opa-envoy\n  input: opa-envoy\n  timeout: 1s",
	}
}

// exampleToken signs claims for the example policy's issuer and audience.
func exampleToken(t *testing.T, key []byte, claims jwt.MapClaims) string {
	t.Helper()
	c := jwt.MapClaims{"iss": "https://login.example.com/", "aud": "models", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOPAEnvoyPolicyInBothGateways runs the opa-envoy-plugin example policy
// behind the Envoy harness and the Kong harness: one table, the same
// decision, status, client body and upstream headers from both.
func TestOPAEnvoyPolicyInBothGateways(t *testing.T) {
	e := newEnv(t, opaEnvoyOptions(t))
	k := newKongEnv(t, e, kongBinary(t))

	user := exampleToken(t, []byte(opaEnvoySecret), jwt.MapClaims{"sub": "alice", "role": "user", "tenant": "acme"})
	viewer := exampleToken(t, []byte(opaEnvoySecret), jwt.MapClaims{"sub": "victor", "role": "viewer", "tenant": "acme"})
	forged := exampleToken(t, []byte("another-secret-of-enough-length-1234"), jwt.MapClaims{"sub": "mallory", "role": "admin", "tenant": "acme"})
	as := func(tok, tenant string) map[string]string {
		return map[string]string{"authorization": "Bearer " + tok, "x-tenant": tenant}
	}
	chatWith := func(extra string) []byte {
		return []byte(`{"model":"gpt-4o-mini",` + extra + `"messages":[{"role":"user","content":"hi"}]}`)
	}
	tests := []struct {
		name, method, path string
		headers            map[string]string
		body               []byte
		status             int
		reason             string
	}{
		{"user chats", "POST", "/v1/chat/completions", as(user, "acme"), chatWith(`"max_tokens":256,`), 200, "allowed"},
		{"viewer lists models", "GET", "/v1/models?limit=2", as(viewer, "acme"), nil, 200, "allowed"},
		{"no token: the policy's 401", "POST", "/v1/chat/completions", map[string]string{"x-tenant": "acme"}, chatWith(""), 401, "policy_denied"},
		{"forged token", "GET", "/v1/models", as(forged, "acme"), nil, 401, "policy_denied"},
		{"header check: another tenant", "GET", "/v1/models", as(viewer, "globex"), nil, 403, "policy_denied"},
		{"method and path RBAC: viewer cannot chat", "POST", "/v1/chat/completions", as(viewer, "acme"), chatWith(""), 403, "policy_denied"},
		{"parsed_body: model outside the role", "POST", "/v1/chat/completions", as(user, "acme"), []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`), 403, "policy_denied"},
		{"parsed_body: max_tokens over the cap", "POST", "/v1/chat/completions", as(user, "acme"), chatWith(`"max_tokens":2048,`), 403, "policy_denied"},
		{"modelguard facts: no streaming for users", "POST", "/v1/chat/completions", as(user, "acme"), chatWith(`"stream":true,`), 403, "policy_denied"},
		{"modelguard's body checks still come first", "POST", "/v1/chat/completions", as(user, "acme"), []byte(`{"model":"gpt-4o-mini","messages":[{"role":"wizard","content":"x"}]}`), 400, "body_schema_violation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := e.doRaw(tc.method, tc.path, tc.headers, tc.body)
			kr := k.do(tc.method, tc.path, tc.headers, tc.body)
			kongEv := e.gatewayAuditEvent(t, "kong", kr.id)
			if len(kongEv) != 1 {
				t.Fatalf("kong: %d audit events", len(kongEv))
			}
			for _, g := range []struct {
				gateway, reason string
				status          int
			}{{"envoy", env.reason(), env.status}, {"kong", kongEv[0]["reason"].(string), kr.status}} {
				if g.status != tc.status || g.reason != tc.reason {
					t.Errorf("%s: %d %q, want %d %q", g.gateway, g.status, g.reason, tc.status, tc.reason)
				}
			}
			if tc.status != 200 {
				if !bytes.Equal(env.body, kr.body) {
					t.Errorf("client bodies differ:\nenvoy %s\nkong  %s", env.body, kr.body)
				}
				for _, h := range []string{"content-type", "www-authenticate"} {
					if env.header.Get(h) != kr.header.Get(h) {
						t.Errorf("%s: envoy %q, kong %q", h, env.header.Get(h), kr.header.Get(h))
					}
				}
				if tc.status == 401 && (env.header.Get("www-authenticate") != `Bearer realm="models"` || !bytes.Contains(env.body, []byte("invalid_token"))) {
					t.Errorf("401 without the policy's challenge and body: %q %s", env.header.Get("www-authenticate"), env.body)
				}
				return
			}
			for _, h := range []struct{ name, want string }{{"x-tenant", "acme"}, {"x-modelguard-auth-method", "none"}} {
				ev, _ := env.upstreamHeader(h.name)
				kv, _ := kr.upstreamHeader(h.name)
				if ev != h.want || kv != h.want {
					t.Errorf("upstream %s: envoy %q, kong %q, want %q", h.name, ev, kv, h.want)
				}
			}
			// The policy verified the token and removed it.
			if _, ok := env.upstreamHeader("authorization"); ok {
				t.Error("envoy: the token reached the upstream")
			}
			if _, ok := kr.upstreamHeader("authorization"); ok {
				t.Error("kong: the token reached the upstream")
			}
			if env.header.Get("x-policy") != "opa-envoy-example" || kr.header.Get("x-policy") != "opa-envoy-example" {
				t.Errorf("x-policy: envoy %q, kong %q", env.header.Get("x-policy"), kr.header.Get("x-policy"))
			}
			// dynamic_metadata: Envoy's, and kong.ctx.shared for Kong.
			if env.log.Metadata["tenant"] != "acme" {
				t.Errorf("envoy dynamic metadata %v", env.log.Metadata)
			}
			if md, _ := kr.ex.x.Shared["modelguard_dynamic_metadata"].(map[string]any); md["tenant"] != "acme" {
				t.Errorf("kong.ctx.shared %v", kr.ex.x.Shared)
			}
		})
	}
}

// TestContextExtensionsPerRoute: a tenant set per route in Envoy's
// configuration (ExtAuthzPerRoute context_extensions, as an Istio
// AuthorizationPolicy CUSTOM provider or an Envoy route sets it) and a
// jwt_authn payload in metadata_context reach the policy, in both input
// shapes.
func TestContextExtensionsPerRoute(t *testing.T) {
	routes := map[string]envoyharness.Route{
		"/v1/models": {ContextExtensions: map[string]string{"tenant": "acme"},
			FilterMetadata: map[string]map[string]any{"envoy.filters.http.jwt_authn": {"payload": map[string]any{"sub": "alice"}}}},
	}
	for _, tc := range []struct{ name, input, policy string }{
		{"modelguard", "modelguard", `package modelguard.authz

allow if {
	input.request.context_extensions.tenant == input.request.headers["x-tenant"]
	input.request.metadata_context["envoy.filters.http.jwt_authn"].payload.sub == "alice"
}
`},
		{"opa-envoy", "opa-envoy", `package envoy.authz

allow if {
	input.attributes.contextExtensions.tenant == input.attributes.request.http.headers["x-tenant"]
	input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].payload.sub == "alice"
}
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{
				routes:         routes,
				files:          map[string]string{"routepolicy/p.rego": tc.policy},
				authentication: "authentication:\n  allow_anonymous: true",
				authorization:  "authorization:\n  policy_dir: routepolicy\n  input: " + tc.input,
			})
			for _, r := range []struct {
				path, tenant string
				status       int
			}{
				{"/v1/models", "acme", 200},
				{"/v1/models", "globex", 403},
				// Another route carries no tenant: denied.
				{"/v1/models/gpt-4o-mini", "acme", 403},
			} {
				got := e.doRaw("GET", r.path, map[string]string{"x-tenant": r.tenant}, nil)
				if got.status != r.status {
					t.Errorf("%s as %s: %d, want %d", r.path, r.tenant, got.status, r.status)
				}
			}
		})
	}
}

// TestOPAEnvoyAttributesAlike: Envoy and Kong give an opa-envoy-plugin
// policy the same input for the same request. The policy hands what it
// read back as dynamic metadata (Envoy's, and kong.ctx.shared for Kong).
func TestOPAEnvoyAttributesAlike(t *testing.T) {
	e := newEnv(t, envOptions{
		files: map[string]string{"echo/p.rego": `package envoy.authz

allow := {"allowed": true, "dynamic_metadata": {
	"method": input.attributes.request.http.method,
	"path": input.attributes.request.http.path,
	"headers": object.filter(input.attributes.request.http.headers, ["content-type", "x-tenant", "authorization", "accept"]),
	"rawBody": object.get(input.attributes.request.http, "rawBody", ""),
	"parsed_path": input.parsed_path,
	"parsed_query": input.parsed_query,
	"parsed_body": input.parsed_body,
	"truncated_body": input.truncated_body,
	"version": input.version,
	"model": object.get(input.modelguard, "model", {}),
	"address": input.attributes.source.address.socketAddress.address,
}}
`},
		authentication: "authentication:\n  allow_anonymous: true",
		authorization:  "authorization:\n  policy_dir: echo\n  input: opa-envoy",
	})
	k := newKongEnv(t, e, kongBinary(t))
	for _, tc := range []struct {
		name, method, path string
		headers            map[string]string
		body               []byte
	}{
		{"chat", "POST", "/v1/chat/completions?trace=1&trace=2", map[string]string{"authorization": "Bearer abc", "x-tenant": "acme"}, []byte(chatBody("gpt-4o-mini"))},
		{"listing", "GET", "/v1/models/gpt-4o-mini", map[string]string{"accept": "application/json"}, nil},
		{"form", "PUT", "/api/items/x%20y", map[string]string{"content-type": "application/x-www-form-urlencoded"}, []byte("a=1&b=two+words")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := e.doRaw(tc.method, tc.path, tc.headers, tc.body)
			kr := k.do(tc.method, tc.path, tc.headers, tc.body)
			if env.status != 200 || kr.status != 200 {
				t.Fatalf("envoy %d, kong %d", env.status, kr.status)
			}
			ev := maps.Clone(env.log.Metadata)
			for _, k := range []string{"decision_id", "reason", "policy_revision"} {
				delete(ev, k)
			}
			kv, _ := kr.ex.x.Shared["modelguard_dynamic_metadata"].(map[string]any)
			if strings.Contains(tc.path, "%") {
				// Kong hands over its normalised path, percent-escapes
				// decoded (kongpath), Envoy the escapes normalize_path
				// keeps; parsed_path, decoded, is the same in both.
				if ev["path"] != "/api/items/x%20y" || kv["path"] != "/api/items/x y" {
					t.Errorf("path: envoy %q, kong %q", ev["path"], kv["path"])
				}
				delete(ev, "path")
				kv = maps.Clone(kv)
				delete(kv, "path")
			}
			if !reflect.DeepEqual(ev, kv) {
				eb, _ := json.MarshalIndent(ev, "", " ")
				kb, _ := json.MarshalIndent(kv, "", " ")
				t.Errorf("inputs differ:\nenvoy %s\nkong  %s", eb, kb)
			}
			if ev["method"] != tc.method || ev["address"] != "127.0.0.1" {
				t.Errorf("envoy input %v", ev)
			}
		})
	}
}
