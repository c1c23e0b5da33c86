package test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/test/kongharness"
)

// TestGatewaysDecideAlike sends one table of requests through the Envoy
// harness (ext_authz over gRPC) and the Kong harness (the plugin binary
// over its socket), both loading the same configuration file and policy
// directory, and requires the same decision, status, reason, client body
// and upstream identity from both. Rows with a client certificate go
// through TLS fronts of both that verify it.
func TestGatewaysDecideAlike(t *testing.T) {
	e := newEnv(t, envOptions{auth: certsAuth})
	k := newKongEnv(t, e, kongBinary(t))
	certs := newClientCerts(t)
	fronts := newMTLSFronts(t, e, k, certs.ca, false)

	good := token(t, jwt.SigningMethodRS256, e.signer, "k1", nil)
	expired := token(t, jwt.SigningMethodRS256, e.signer, "k1", jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix()})
	forged := token(t, jwt.SigningMethodRS256, newRSAKey(t), "k1", nil)
	alice := map[string]string{"x-api-key": e.keys["alice-key"]}
	reader := map[string]string{"x-api-key": e.keys["reader-key"]}
	msgs := `"messages":[{"role":"user","content":"secret prompt text"}]`
	trial := map[string]string{"x-api-key": e.keys["trial-key"]}
	trial2 := map[string]string{"x-api-key": e.keys["trial2-key"]}
	// 5 prompt tokens (18 characters, 4 a token) + max_tokens.
	trialBody := func(maxTokens string) []byte {
		return []byte(`{"model":"gpt-4o-mini","max_tokens":` + maxTokens + `,` + msgs + `}`)
	}
	long := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("long prompt ", 2000) + `"}]}`
	// A key that may call every model, and a body its schema refuses: a
	// path form that slipped past the model routes would be allowed.
	admin := map[string]string{"x-api-key": e.keys["admin-key"]}
	invalid := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"wizard","content":"x"}]}`)

	type identity struct{ subject, roles, method, keyID string }
	tests := []struct {
		name, method, path string
		headers            map[string]string
		body               []byte
		status             int
		reason             string
		id                 identity // on allow
	}{
		{"jwt", "POST", "/v1/chat/completions", bearer(good), []byte(chatBody("gpt-4o-mini")), 200, "allowed", identity{"alice", "chat-user", "jwt", ""}},
		{"api key header", "POST", "/v1/chat/completions", alice, []byte(chatBody("gpt-4o-mini")), 200, "allowed", identity{"alice", "chat-user", "api_key", "alice-key"}},
		{"api key as OpenAI bearer", "POST", "/v1/chat/completions", bearer(e.keys["alice-key"]), []byte(chatBody("gpt-4o-mini")), 200, "allowed", identity{"alice", "chat-user", "api_key", "alice-key"}},
		{"forged identity headers are replaced", "POST", "/v1/chat/completions",
			map[string]string{"x-api-key": e.keys["alice-key"], "x-modelguard-subject": "root", "x-modelguard-roles": "admin", "x-modelguard-key-id": "forged"},
			[]byte(chatBody("gpt-4o-mini")), 200, "allowed", identity{"alice", "chat-user", "api_key", "alice-key"}},
		{"jwt with a forged key id header (no key id: removed)", "POST", "/v1/chat/completions", map[string]string{"authorization": "Bearer " + good, "x-modelguard-key-id": "forged"},
			[]byte(chatBody("gpt-4o-mini")), 200, "allowed", identity{"alice", "chat-user", "jwt", ""}},
		{"listing by a reader, with a query", "GET", "/v1/models?limit=5", reader, nil, 200, "allowed", identity{"rita", "reader", "api_key", "reader-key"}},
		{"body spilled to a file by Kong", "POST", "/v1/chat/completions", alice, []byte(long), 200, "allowed", identity{"alice", "chat-user", "api_key", "alice-key"}},
		{"missing credential", "POST", "/v1/chat/completions", nil, []byte(chatBody("gpt-4o-mini")), 401, "credentials_missing", identity{}},
		{"expired jwt", "POST", "/v1/chat/completions", bearer(expired), []byte(chatBody("gpt-4o-mini")), 401, "jwt_expired", identity{}},
		{"forged jwt signature", "POST", "/v1/chat/completions", bearer(forged), []byte(chatBody("gpt-4o-mini")), 401, "jwt_bad_signature", identity{}},
		{"unknown api key", "POST", "/v1/chat/completions", map[string]string{"x-api-key": "mg_test_doesnotexist"}, []byte(chatBody("gpt-4o-mini")), 401, "api_key_unknown", identity{}},
		{"role denied: reader cannot chat", "POST", "/v1/chat/completions", reader, []byte(chatBody("gpt-4o-mini")), 403, "read_only", identity{}},
		{"role denied: model outside the role", "POST", "/v1/chat/completions", alice, []byte(chatBody("gpt-4o")), 403, "model_not_permitted", identity{}},
		{"unknown model", "POST", "/v1/chat/completions", alice, []byte(`{"model":"gpt-5",` + msgs + `}`), 403, "model_not_configured", identity{}},
		{"schema violation", "POST", "/v1/chat/completions", alice, []byte(`{"model":"gpt-4o-mini","messages":[{"role":"wizard","content":"x"}]}`), 400, "body_schema_violation", identity{}},
		{"duplicate keys", "POST", "/v1/chat/completions", alice, []byte(`{"model":"gpt-4o-mini","model":"gpt-4o",` + msgs + `}`), 400, "body_duplicate_key", identity{}},
		{"trailing data", "POST", "/v1/chat/completions", alice, []byte(`{"model":"gpt-4o-mini",` + msgs + `}{"model":"gpt-4o"}`), 400, "body_trailing_data", identity{}},
		{"deep nesting", "POST", "/v1/chat/completions", alice, []byte(`{"model":"gpt-4o-mini","x":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `,` + msgs + `}`), 400, "body_too_deep", identity{}},
		{"invalid utf-8", "POST", "/v1/chat/completions", alice, []byte("{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}"), 400, "body_invalid_utf8", identity{}},
		{"max_tokens over the role's cap", "POST", "/v1/chat/completions", alice, []byte(`{"model":"gpt-4o-mini","max_tokens":2000,` + msgs + `}`), 403, "max_tokens_exceeded", identity{}},
		// The trial tier (rate_limits in env_test.go): 2 requests an hour and
		// 400 tokens a minute per key. Each gateway counts on its own.
		{"trial: first request", "POST", "/v1/chat/completions", trial, trialBody("100"), 200, "allowed", identity{"tara", "trial", "api_key", "trial-key"}},
		{"trial: second request", "POST", "/v1/chat/completions", trial, trialBody("100"), 200, "allowed", identity{"tara", "trial", "api_key", "trial-key"}},
		{"trial: third request refused", "POST", "/v1/chat/completions", trial, trialBody("100"), 429, "rate_limited_requests", identity{}},
		{"trial: tokens reserved", "POST", "/v1/chat/completions", trial2, trialBody("250"), 200, "allowed", identity{"theo", "trial", "api_key", "trial2-key"}},
		{"trial: token budget refused", "POST", "/v1/chat/completions", trial2, trialBody("250"), 429, "rate_limited_tokens", identity{}},
		{"max_tokens hidden behind max_completion_tokens", "POST", "/v1/chat/completions", admin, []byte(`{"model":"gpt-4o-mini","max_completion_tokens":10,"max_tokens":1000000,` + msgs + `}`), 400, "max_tokens_limit_exceeded", identity{}},
		{"negative max_tokens", "POST", "/v1/chat/completions", admin, []byte(`{"model":"gpt-4o-mini","max_completion_tokens":10,"max_tokens":-1,` + msgs + `}`), 400, "max_tokens_invalid", identity{}},
		{"keys differing only in case", "POST", "/v1/chat/completions", admin, []byte(`{"model":"gpt-4o-mini","Model":"gpt-4-forbidden",` + msgs + `}`), 400, "body_ambiguous_key", identity{}},
		// Path forms: normalised (Envoy normalize_path, merge_slashes) and
		// checked as the model request, or refused as ambiguous.
		{"path: leading //", "POST", "//v1/chat/completions", admin, invalid, 400, "body_schema_violation", identity{}},
		{"path: inner //", "POST", "/v1//chat/completions", admin, invalid, 400, "body_schema_violation", identity{}},
		{"path: /./", "POST", "/v1/./chat/completions", admin, invalid, 400, "body_schema_violation", identity{}},
		{"path: /x/../", "POST", "/x/../v1/chat/completions", admin, invalid, 400, "body_schema_violation", identity{}},
		{"path: %63ompletions", "POST", "/v1/chat/%63ompletions", admin, invalid, 400, "body_schema_violation", identity{}},
		{"path: trailing /", "POST", "/v1/chat/completions/", admin, invalid, 400, "route_ambiguous", identity{}},
		{"path: /V1/", "POST", "/V1/chat/completions", admin, invalid, 400, "route_ambiguous", identity{}},
		{"path: ;x=1", "POST", "/v1/chat/completions;x=1", admin, invalid, 400, "route_ambiguous", identity{}},
		{"method post", "post", "/v1/chat/completions", admin, invalid, 400, "route_ambiguous", identity{}},
		{"method Post", "Post", "/v1/chat/completions", admin, invalid, 400, "route_ambiguous", identity{}},
		{"gzip bomb", "POST", "/v1/chat/completions", map[string]string{"x-api-key": e.keys["alice-key"], "content-encoding": "gzip"},
			gzipped(`{"model":"gpt-4o-mini","x":"` + strings.Repeat("a", 8<<20) + `"}`), 413, "body_too_large", identity{}},
		// Client certificates (the client certificate below, by row).
		{"client certificate: spiffe id", "POST", "/v1/chat/completions", nil, []byte(chatBody("gpt-4o-mini")), 200, "allowed", identity{"chat-frontend", "chat-user", "client_cert", ""}},
		{"client certificate: dns san", "POST", "/v1/chat/completions", nil, []byte(chatBody("gpt-4o-mini")), 200, "allowed", identity{"batch-scorer", "chat-user", "client_cert", ""}},
		{"client certificate: subject", "POST", "/v1/chat/completions", nil, []byte(chatBody("gpt-4o-mini")), 200, "allowed", identity{"nightly-eval", "chat-user", "client_cert", ""}},
		{"client certificate: unmapped", "POST", "/v1/chat/completions", nil, []byte(chatBody("gpt-4o-mini")), 401, "credentials_missing", identity{}},
		{"client certificate: a model outside its role", "POST", "/v1/chat/completions", nil, []byte(chatBody("gpt-4o")), 403, "model_not_permitted", identity{}},
		{"client certificate and an api key: the key decides", "POST", "/v1/chat/completions", alice, []byte(chatBody("gpt-4o-mini")), 200, "allowed", identity{"alice", "chat-user", "api_key", "alice-key"}},
		{"client certificate and a bad api key", "POST", "/v1/chat/completions", map[string]string{"x-api-key": "mg_test_doesnotexist"}, []byte(chatBody("gpt-4o-mini")), 401, "api_key_unknown", identity{}},
		{"no client certificate over TLS", "POST", "/v1/chat/completions", nil, []byte(chatBody("gpt-4o-mini")), 401, "credentials_missing", identity{}},
	}
	clientCert := map[string]*tls.Certificate{
		"client certificate: spiffe id": &certs.spiffe, "client certificate: dns san": &certs.dns, "client certificate: subject": &certs.subject,
		"client certificate: unmapped": &certs.unmapped, "client certificate: a model outside its role": &certs.spiffe,
		"client certificate and an api key: the key decides": &certs.spiffe, "client certificate and a bad api key": &certs.spiffe,
	}
	// The rate limit headers the client gets, by row (absent: none).
	limitHeaders := map[string]map[string]string{
		"trial: first request": {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "30m0s",
			"x-ratelimit-limit-tokens": "400", "x-ratelimit-remaining-tokens": "295", "x-ratelimit-reset-tokens": "15m45s"},
		"trial: second request": {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1h0m0s", "x-ratelimit-remaining-tokens": "190"},
		"trial: third request refused": {"x-ratelimit-remaining-requests": "0", "retry-after": "1800", "x-should-retry": "false",
			"x-ratelimit-remaining-tokens": "190"},
		"trial: tokens reserved":      {"x-ratelimit-remaining-requests": "1", "x-ratelimit-remaining-tokens": "145", "x-ratelimit-reset-tokens": "38m15s"},
		"trial: token budget refused": {"x-ratelimit-remaining-tokens": "145", "retry-after": "990", "x-should-retry": ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var (
				env result
				kr  kongResult
			)
			if cert, ok := clientCert[tc.name]; ok || strings.HasSuffix(tc.name, "over TLS") {
				env = e.doVia(fronts.envoy.URL, client(fronts.envoy, cert), tc.method, tc.path, tc.headers, tc.body)
				kr = k.doVia(fronts.kong.URL, client(fronts.kong, cert), tc.method, tc.path, tc.headers, tc.body)
			} else {
				env = e.doRaw(tc.method, tc.path, tc.headers, tc.body)
				kr = k.do(tc.method, tc.path, tc.headers, tc.body)
			}
			for name, want := range limitHeaders[tc.name] {
				// Times shrink while the test runs: compare those roughly.
				ev, kv := env.header.Get(name), kr.header.Get(name)
				if !roughly(ev, want) || !roughly(kv, want) {
					t.Errorf("%s: envoy %q, kong %q, want %q", name, ev, kv, want)
				}
			}
			if limitHeaders[tc.name] == nil && (env.header.Get("x-ratelimit-limit-requests") != "" || kr.header.Get("x-ratelimit-limit-requests") != "") {
				t.Errorf("rate limit headers on a request no limit applies to")
			}
			envoyEv, kongEv := e.gatewayAuditEvent(t, "envoy", env.log.RequestID), e.gatewayAuditEvent(t, "kong", kr.id)
			if len(envoyEv) != 1 || len(kongEv) != 1 {
				t.Fatalf("audit events: envoy %d, kong %d; want one each", len(envoyEv), len(kongEv))
			}
			// Kong adds a completion record (the final status) in the log
			// phase; Envoy's decision is the whole story.
			done := e.gatewayCompletion(t, "kong", kongEv[0]["decision_id"].(string))
			if len(done) != 1 || done[0]["status"] != float64(kr.status) || done[0]["reason"] != kongEv[0]["reason"] {
				t.Errorf("kong completion records %v for a %d", done, kr.status)
			}
			if n := len(e.gatewayRecords(t, "envoy", audit.KindCompletion, "decision_id")[envoyEv[0]["decision_id"].(string)]); n != 0 {
				t.Errorf("envoy: %d completion records", n)
			}
			for _, g := range []struct {
				gateway, reason string
				status          int
				audit           map[string]any
			}{{"envoy", env.reason(), env.status, envoyEv[0]}, {"kong", kongEv[0]["reason"].(string), kr.status, kongEv[0]}} {
				if g.status != tc.status || g.reason != tc.reason {
					t.Errorf("%s: %d %q, want %d %q", g.gateway, g.status, g.reason, tc.status, tc.reason)
				}
				if g.audit["status"] != float64(g.status) || (g.audit["result"] == "allow") != (tc.status == 200) {
					t.Errorf("%s audit event %v for a %d", g.gateway, g.audit, g.status)
				}
			}
			if env.status >= 400 || kr.status >= 400 {
				if !bytes.Equal(env.body, kr.body) {
					t.Errorf("client bodies differ:\nenvoy %s\nkong  %s", env.body, kr.body)
				}
				if tc.status == 429 && !json.Valid(env.body) || (tc.status == 429 && !bytes.Contains(env.body, []byte(`"code":"`))) {
					t.Errorf("429 body %s", env.body)
				}
				for _, h := range []string{"content-type", "www-authenticate"} {
					if env.header.Get(h) != kr.header.Get(h) {
						t.Errorf("%s: envoy %q, kong %q", h, env.header.Get(h), kr.header.Get(h))
					}
				}
				if kr.upstream != nil {
					t.Errorf("kong: a denied request reached the upstream")
				}
				return
			}
			if len(tc.body) > kongharness.DefaultBufferSize && kr.ex.x.Req.BodyFile == "" {
				t.Errorf("kong: a %d-byte body was not spilled to a file", len(tc.body))
			}
			for _, h := range []struct{ name, want string }{
				{"x-modelguard-subject", tc.id.subject}, {"x-modelguard-roles", tc.id.roles},
				{"x-modelguard-auth-method", tc.id.method}, {"x-modelguard-key-id", tc.id.keyID},
			} {
				ev, _ := env.upstreamHeader(h.name)
				kv, _ := kr.upstreamHeader(h.name)
				if ev != h.want || kv != h.want {
					t.Errorf("upstream %s: envoy %q, kong %q, want %q", h.name, ev, kv, h.want)
				}
			}
			for _, cred := range []string{"authorization", "x-api-key"} {
				if _, ok := env.upstreamHeader(cred); ok {
					t.Errorf("envoy: %s reached the upstream", cred)
				}
				if _, ok := kr.upstreamHeader(cred); ok {
					t.Errorf("kong: %s reached the upstream", cred)
				}
			}
			if got, _ := kr.upstreamHeader("x-consumer-username"); got != tc.id.subject {
				t.Errorf("kong: X-Consumer-Username %q, want %q", got, tc.id.subject)
			}
			if got, _ := env.upstream["body"].(string); got != string(tc.body) {
				t.Errorf("envoy: upstream body differs")
			}
			if got, _ := kr.upstream["body"].(string); got != string(tc.body) {
				t.Errorf("kong: upstream body differs")
			}
		})
	}
}

// roughly compares header values; durations and retry-after in seconds
// match within 5% (time passes while a table runs), anything else exactly.
func roughly(got, want string) bool {
	if got == want {
		return true
	}
	g, err1 := time.ParseDuration(got)
	w, err2 := time.ParseDuration(want)
	if err1 != nil || err2 != nil {
		gs, err1 := strconv.Atoi(got)
		ws, err2 := strconv.Atoi(want)
		if err1 != nil || err2 != nil {
			return false
		}
		g, w = time.Duration(gs)*time.Second, time.Duration(ws)*time.Second
	}
	return g <= w && g >= w-w/20
}
