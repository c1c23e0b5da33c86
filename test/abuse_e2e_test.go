package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/test/kongharness"
	"github.com/modelguard/modelguard/test/redisserver"
	"github.com/modelguard/modelguard/test/testkit"
)

// ipListConfig is an allow list and a deny list in e's directory.
const ipListConfig = `ip_lists:
  lists:
    - {name: threats, file: threats.txt, action: deny}
    - {name: corp, file: corp.txt, action: allow}
`

// TestIPListsBothGateways: the address lists judge the address the gateway
// reports (Envoy's peer, Kong's forwarded IP from a trusted proxy), never a
// header the client sends; the decision and its audit record name the
// list; an edit of a list applies without a restart.
func TestIPListsBothGateways(t *testing.T) {
	e := newEnv(t, envOptions{extra: ipListConfig, files: map[string]string{
		"threats.txt": "203.0.113.0/24\n",
		"corp.txt":    "127.0.0.0/8\n198.51.100.0/24\n203.0.113.0/24\n",
	}})
	alice := map[string]string{"x-api-key": e.keys["alice-key"]}

	r := e.do("POST", "/v1/chat/completions", alice, chatBody("gpt-4o-mini"))
	if r.status != 200 {
		t.Fatalf("peer 127.0.0.1 in corp: %d %s", r.status, r.body)
	}
	// A forwarded-for header the client wrote changes nothing.
	spoof := map[string]string{"x-api-key": e.keys["alice-key"], "x-forwarded-for": "203.0.113.9", "x-real-ip": "203.0.113.9"}
	if r := e.do("POST", "/v1/chat/completions", spoof, chatBody("gpt-4o-mini")); r.status != 200 {
		t.Fatalf("client header taken for the address: %d %s", r.status, r.body)
	}
	recs := e.gatewayAuditEvent(t, "envoy", r.log.RequestID)
	if recs[0]["ip_list"] != "corp" {
		t.Errorf("envoy allow record: ip_list %v", recs[0]["ip_list"])
	}

	testkit.ReplaceFile(t, e.dir, "threats.txt", "203.0.113.0/24\n127.0.0.1\n")
	testkit.Eventually(t, "the edited deny list to apply", func() bool {
		return e.do("POST", "/v1/chat/completions", alice, chatBody("gpt-4o-mini")).status == 403
	})
	r = e.do("POST", "/v1/chat/completions", alice, chatBody("gpt-4o-mini"))
	if r.status != 403 || r.reason() != "ip_denied" || strings.Contains(string(r.body), "threats") || strings.Contains(string(r.body), "127.0.0.1") {
		t.Fatalf("denied: %d %q %s", r.status, r.reason(), r.body)
	}
	if rec := e.gatewayAuditEvent(t, "envoy", r.log.RequestID)[0]; rec["ip_list"] != "threats" || rec["reason"] != "ip_denied" {
		t.Errorf("envoy denial record: %v", rec)
	}
	testkit.ReplaceFile(t, e.dir, "threats.txt", "203.0.113.0/24\n")

	// Kong behind a proxy it trusts: the address is the forwarded one.
	k := newKongEnv(t, e, kongBinary(t))
	k.front.SetRealIP(kongharness.RealIP{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	for _, tc := range []struct {
		ip, reason, list string
		status           int
	}{
		{"203.0.113.9", "ip_denied", "threats", 403},
		{"198.51.100.1", "allowed", "corp", 200},
		{"192.0.2.1", "ip_not_allowed", "", 403},
		{"2001:db8::1", "ip_not_allowed", "", 403},
	} {
		h := map[string]string{"x-api-key": e.keys["alice-key"], "x-real-ip": tc.ip}
		var r kongResult
		testkit.Eventually(t, "kong with "+tc.ip, func() bool {
			r = k.do("POST", "/v1/chat/completions", h, []byte(chatBody("gpt-4o-mini")))
			return r.status == tc.status
		})
		rec := e.kongRecord(t, r.id)
		if rec["reason"] != tc.reason || rec["ip_list"] != nil && rec["ip_list"] != tc.list || tc.list != "" && rec["ip_list"] != tc.list {
			t.Errorf("kong %s: record %v", tc.ip, rec)
		}
	}
}

// TestLockoutSharedAcrossGateways: failed authentications counted by the
// Kong plugin server and by the ext_authz server (two processes) add up in
// one Redis; the address is then refused 429 by both, before its valid key
// is even looked at, while another address is served. The lockout is
// counted and recorded by the process that tripped it.
func TestLockoutSharedAcrossGateways(t *testing.T) {
	redis := redisserver.Start(t)
	e := newEnv(t, envOptions{
		rateLimits: redisStore(redis.Addr),
		extra:      "lockout: {max_failures: 3, window: 1h, cooldown: 1h}\n",
	})
	k := newKongEnv(t, e, kongBinary(t))
	k.front.SetRealIP(kongharness.RealIP{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	guess := func(ip string) map[string]string {
		return map[string]string{"x-api-key": "mg_not-a-real-key-0000000000000000000000000", "x-real-ip": ip}
	}
	good := func(ip string) map[string]string {
		return map[string]string{"x-api-key": e.keys["alice-key"], "x-real-ip": ip}
	}

	// Envoy's peer is 127.0.0.1; Kong says 127.0.0.1 too through the
	// trusted proxy header.
	for range 2 {
		if r := k.do("POST", "/v1/chat/completions", guess("127.0.0.1"), []byte(chatBody("gpt-4o-mini"))); r.status != 401 {
			t.Fatalf("kong guess: %d", r.status)
		}
	}
	if r := e.do("POST", "/v1/chat/completions", good(""), chatBody("gpt-4o-mini")); r.status != 200 {
		t.Fatalf("two failures must not lock out: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/v1/chat/completions", guess(""), chatBody("gpt-4o-mini")); r.status != 401 {
		t.Fatalf("envoy guess: %d", r.status)
	}
	r := e.do("POST", "/v1/chat/completions", good(""), chatBody("gpt-4o-mini"))
	if r.status != 429 || r.reason() != "locked_out" || r.header.Get("retry-after") == "" || r.upstream != nil {
		t.Fatalf("envoy after 3 failures: %d %q retry-after %q", r.status, r.reason(), r.header.Get("retry-after"))
	}
	kr := k.do("POST", "/v1/chat/completions", good("127.0.0.1"), []byte(chatBody("gpt-4o-mini")))
	if kr.status != 429 || kr.header.Get("retry-after") == "" || e.kongRecord(t, kr.id)["reason"] != "locked_out" {
		t.Fatalf("kong, locked address: %d %s", kr.status, kr.body)
	}
	if kr := k.do("POST", "/v1/chat/completions", good("198.51.100.4"), []byte(chatBody("gpt-4o-mini"))); kr.status != 200 {
		t.Fatalf("kong, another address: %d %s", kr.status, kr.body)
	}
	if n := e.metric(`modelguard_lockouts_total{by="source"}`); n != 1 {
		t.Errorf("envoy lockouts metric = %v, want 1", n)
	}
	// The lockout is an operator record (no gateway) in the trail of the
	// process that tripped it.
	want := `"kind":"lockout","source_address":"127.0.0.1","reason":"failures_by_source"`
	testkit.Eventually(t, "the lockout record", func() bool {
		raw, err := os.ReadFile(e.trail("envoy"))
		return err == nil && strings.Count(string(raw), want) == 1
	})
}

// TestPromptDLPBothGateways: a deny rule refuses a prompt holding a
// private key with 400 naming the rule and echoing nothing of it, through
// Envoy and Kong alike; a flag rule lets an embeddings input through and
// names the rule in the audit record.
func TestPromptDLPBothGateways(t *testing.T) {
	e := newEnv(t, envOptions{extra: `dlp:
  rules:
    - {name: private-keys, detector: private_key}
    - {name: codenames, pattern: '(?i)\bnightingale\b', action: flag}
`})
	k := newKongEnv(t, e, kongBinary(t))
	h := map[string]string{"x-api-key": e.keys["alice-key"]}
	admin := map[string]string{"x-api-key": e.keys["admin-key"]} // may use embeddings
	const secret = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
	leak := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":[{"type":"text","text":"fix this:\n-----BEGIN PRIVATE KEY-----\n` + secret + `\n-----END PRIVATE KEY-----"}]}]}`
	flagged := `{"model":"text-embedding-3-small","input":["alpha","Project Nightingale roadmap"]}`

	r := e.do("POST", "/v1/chat/completions", h, leak)
	if r.status != 400 || r.reason() != "dlp_denied" || !strings.Contains(string(r.body), "private-keys") || strings.Contains(string(r.body), secret) || r.upstream != nil {
		t.Fatalf("envoy leak: %d %q %s", r.status, r.reason(), r.body)
	}
	if rec := e.gatewayAuditEvent(t, "envoy", r.log.RequestID)[0]; rec["dlp"] != "private-keys" {
		t.Errorf("envoy record: %v", rec)
	}
	r = e.do("POST", "/v1/embeddings", admin, flagged)
	if r.status != 200 {
		t.Fatalf("envoy flagged: %d %s", r.status, r.body)
	}
	if rec := e.gatewayAuditEvent(t, "envoy", r.log.RequestID)[0]; rec["dlp"] != "codenames" {
		t.Errorf("envoy flagged record: %v", rec)
	}
	if n := e.metric(`modelguard_dlp_matches_total{action="flag",rule="codenames"}`); n != 1 {
		t.Errorf("flag metric = %v", n)
	}

	kr := k.do("POST", "/v1/chat/completions", h, []byte(leak))
	if kr.status != 400 || !strings.Contains(string(kr.body), "private-keys") || strings.Contains(string(kr.body), secret) || kr.upstream != nil {
		t.Fatalf("kong leak: %d %s", kr.status, kr.body)
	}
	if rec := e.kongRecord(t, kr.id); rec["dlp"] != "private-keys" || rec["reason"] != "dlp_denied" {
		t.Errorf("kong record: %v", rec)
	}
	kr = k.do("POST", "/v1/embeddings", admin, []byte(flagged))
	if rec := e.kongRecord(t, kr.id); kr.status != 200 || rec["dlp"] != "codenames" {
		t.Errorf("kong flagged: %d %v", kr.status, rec)
	}
}

// TestReplayAcrossGateways: an issuer with replay_claim: jti accepts each
// token once across both gateways (two processes on one Redis): the
// token's second use, through the other gateway, is refused 401; when
// Redis is down the check cannot be made and the request is refused 503.
func TestReplayAcrossGateways(t *testing.T) {
	redis := redisserver.Start(t)
	e := newEnv(t, envOptions{
		rateLimits: redisStore(redis.Addr),
		issuer:     "        replay_claim: jti\n",
	})
	k := newKongEnv(t, e, kongBinary(t))
	once := token(t, jwt.SigningMethodRS256, e.signer, "k1", jwt.MapClaims{"jti": "req-0001"})

	if r := e.do("POST", "/v1/chat/completions", bearer(once), chatBody("gpt-4o-mini")); r.status != 200 {
		t.Fatalf("first use through envoy: %d %s", r.status, r.body)
	}
	kr := k.do("POST", "/v1/chat/completions", bearer(once), []byte(chatBody("gpt-4o-mini")))
	if kr.status != 401 || e.kongRecord(t, kr.id)["reason"] != "jwt_replayed" {
		t.Fatalf("replay through kong: %d %s", kr.status, kr.body)
	}
	if r := e.do("POST", "/v1/chat/completions", bearer(once), chatBody("gpt-4o-mini")); r.status != 401 || r.reason() != "jwt_replayed" {
		t.Fatalf("replay through envoy (a verified-token cache hit): %d %q", r.status, r.reason())
	}
	fresh := token(t, jwt.SigningMethodRS256, e.signer, "k1", jwt.MapClaims{"jti": "req-0002"})
	if kr := k.do("POST", "/v1/chat/completions", bearer(fresh), []byte(chatBody("gpt-4o-mini"))); kr.status != 200 {
		t.Fatalf("a new jti through kong: %d %s", kr.status, kr.body)
	}
	noJTI := token(t, jwt.SigningMethodRS256, e.signer, "k1", nil)
	if r := e.do("POST", "/v1/chat/completions", bearer(noJTI), chatBody("gpt-4o-mini")); r.status != 401 || r.reason() != "jwt_missing_replay_claim" {
		t.Fatalf("no jti: %d %q", r.status, r.reason())
	}

	redis.Stop()
	third := token(t, jwt.SigningMethodRS256, e.signer, "k1", jwt.MapClaims{"jti": "req-0003"})
	if r := e.do("POST", "/v1/chat/completions", bearer(third), chatBody("gpt-4o-mini")); r.status != 503 || r.reason() != "jwt_replay_unavailable" {
		t.Fatalf("redis down: %d %q", r.status, r.reason())
	}
}

// TestEnvoyClientCertIdentity: through a TLS listener that asks for a
// client certificate, a request with no credential header is the caller
// its certificate's SPIFFE ID maps to; without the certificate it is 401.
func TestEnvoyClientCertIdentity(t *testing.T) {
	const spiffe = "spiffe://cluster.local/ns/apps/sa/chat-frontend"
	e := newEnv(t, envOptions{auth: "  client_certs:\n    - {principal: \"" + spiffe + "\", subject: chat-frontend, roles: [chat-user]}\n"})
	tlsFront, client := e.tlsFront(t, spiffe)

	req, _ := http.NewRequest("POST", tlsFront.URL+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o-mini")))
	req.Header.Set("content-type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var echo struct {
		Headers map[string][]string `json:"headers"`
	}
	json.NewDecoder(resp.Body).Decode(&echo)
	resp.Body.Close()
	if resp.StatusCode != 200 || echo.Headers["X-Modelguard-Subject"][0] != "chat-frontend" || echo.Headers["X-Modelguard-Auth-Method"][0] != "client_cert" {
		t.Fatalf("with the certificate: %d, upstream headers %v", resp.StatusCode, echo.Headers)
	}
	if r := e.do("POST", "/v1/chat/completions", nil, chatBody("gpt-4o-mini")); r.status != 401 {
		t.Fatalf("without a certificate: %d", r.status)
	}
}

// TestIntrospectionBothGateways: an opaque bearer token (neither a JWT nor
// an API key) is checked at an in-process RFC 7662 endpoint and becomes
// the caller it names, through Envoy and Kong; an inactive token is 401,
// and an endpoint that cannot answer is 503.
func TestIntrospectionBothGateways(t *testing.T) {
	var down atomic.Bool
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, sec, ok := r.BasicAuth(); down.Load() || !ok || id != "modelguard" || sec != "introspection-secret" {
			http.Error(w, "no", http.StatusServiceUnavailable)
			return
		}
		if r.FormValue("token") == "opaque-alice-0001" {
			fmt.Fprintf(w, `{"active":true,"sub":"alice","scope":"chat-user","aud":"models","exp":%d}`, time.Now().Add(time.Hour).Unix())
			return
		}
		w.Write([]byte(`{"active":false}`))
	}))
	t.Cleanup(idp.Close)
	e := newEnv(t, envOptions{
		files: map[string]string{"introspection.secret": "introspection-secret\n"},
		auth: fmt.Sprintf("  introspection: {url: %q, client_id: modelguard, client_secret_file: introspection.secret, audiences: [models], cache_ttl: 0s}\n",
			idp.URL+"/introspect"),
	})
	k := newKongEnv(t, e, kongBinary(t))
	good, bad := bearer("opaque-alice-0001"), bearer("opaque-revoked-0002")

	r := e.do("POST", "/v1/chat/completions", good, chatBody("gpt-4o-mini"))
	if sub, _ := r.upstreamHeader("x-modelguard-subject"); r.status != 200 || sub != "alice" {
		t.Fatalf("envoy, active token: %d subject %q %s", r.status, sub, r.body)
	}
	if kr := k.do("POST", "/v1/chat/completions", good, []byte(chatBody("gpt-4o-mini"))); kr.status != 200 {
		t.Fatalf("kong, active token: %d %s", kr.status, kr.body)
	}
	if r := e.do("POST", "/v1/chat/completions", bad, chatBody("gpt-4o-mini")); r.status != 401 || r.reason() != "token_inactive" {
		t.Fatalf("envoy, inactive token: %d %q", r.status, r.reason())
	}
	if kr := k.do("POST", "/v1/chat/completions", bad, []byte(chatBody("gpt-4o-mini"))); kr.status != 401 {
		t.Fatalf("kong, inactive token: %d", kr.status)
	}
	down.Store(true)
	if r := e.do("POST", "/v1/chat/completions", good, chatBody("gpt-4o-mini")); r.status != 503 || r.reason() != "token_introspection_unavailable" {
		t.Fatalf("envoy, endpoint down: %d %q", r.status, r.reason())
	}
	if kr := k.do("POST", "/v1/chat/completions", good, []byte(chatBody("gpt-4o-mini"))); kr.status != 503 {
		t.Fatalf("kong, endpoint down: %d", kr.status)
	}
}

// redisStore is a rate_limits section with no rules that puts the shared
// state (lockouts, one-time token values) in the Redis at addr.
func redisStore(addr string) string {
	return fmt.Sprintf("rate_limits:\n  store: redis\n  redis: {address: %q, timeout: 1s}\n", addr)
}
