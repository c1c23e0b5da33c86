package test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/modelguard/modelguard/test/envoyharness"
	"github.com/modelguard/modelguard/test/kongharness"
	"github.com/modelguard/modelguard/test/testkit"
)

// The tests of this file hold the gateways to what real Envoy and Kong do
// before and around modelguard (docs/envoy-ext-authz.md,
// docs/kong-plugin-server.md): what the harnesses reproduce must never let
// a request reach the model unchecked.

// TestEnvoyConnectionManagerPath: Envoy's connection manager normalises
// :path (envoy/envoy.yaml: normalize_path, merge_slashes, escaped slashes
// rejected) before ext_authz, and the model server gets that same path.
func TestEnvoyConnectionManagerPath(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := map[string]string{"x-api-key": e.keys["alice-key"]}
	admin := map[string]string{"x-api-key": e.keys["admin-key"]}
	for _, tc := range []struct {
		name, path string
		headers    map[string]string
		body       string
		status     int
		reason     string // "": Envoy answered without calling modelguard
	}{
		{"dot segments resolve to the model path", "/v1/./chat/../chat/completions", alice, chatBody("gpt-4o"), 403, "model_not_permitted"},
		{"merged slashes", "//v1//chat/completions", alice, chatBody("gpt-4o"), 403, "model_not_permitted"},
		{"escaped unreserved characters are decoded", "/v1/chat/%63ompletions", alice, chatBody("gpt-4o"), 403, "model_not_permitted"},
		{"the checked path is the forwarded path", "/v1/chat/./completions", alice, chatBody("gpt-4o-mini"), 200, "allowed"},
		{"encoded slash: 400 from Envoy", "/v1/chat%2Fcompletions", admin, `{"model":"gpt-5","messages":[]}`, 400, ""},
		{"encoded slash, lower case", "/v1/chat%2fcompletions", admin, `{"model":"gpt-5","messages":[]}`, 400, ""},
		{"encoded backslash", "/v1/chat%5Ccompletions", admin, `{"model":"gpt-5","messages":[]}`, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("POST", tc.path, tc.headers, tc.body)
			if r.status != tc.status || r.reason() != tc.reason || r.log.Checked != (tc.reason != "") {
				t.Fatalf("got %d %q (checked %v), want %d %q", r.status, r.reason(), r.log.Checked, tc.status, tc.reason)
			}
			if tc.status == 200 && r.upstream["path"] != "/v1/chat/completions" {
				t.Errorf("upstream path %v", r.upstream["path"])
			}
		})
	}

	// With path_with_escaped_slashes_action KEEP_UNCHANGED, the encoded
	// slash reaches modelguard, which refuses it itself.
	front := e.front.Config.Handler.(*envoyharness.Front)
	keep := envoyharness.ShippedHCM
	keep.EscapedSlashes = envoyharness.KeepUnchanged
	front.SetHCM(keep)
	if r := e.do("POST", "/v1/chat%2Fcompletions", admin, `{"model":"gpt-5","messages":[]}`); r.status != 400 || r.reason() != "route_ambiguous" {
		t.Errorf("encoded slash kept by Envoy: %d %q, want 400 route_ambiguous", r.status, r.reason())
	}
	front.SetHCM(envoyharness.ShippedHCM)

	// A '#' in the request target is refused before any filter.
	status := rawRequest(t, e.front.URL, "POST /v1/chat/completions#frag HTTP/1.1\r\nHost: models\r\nContent-Length: 0\r\n\r\n")
	if status != http.StatusBadRequest {
		t.Errorf("path with a fragment: %d, want 400", status)
	}
}

// rawRequest writes a request as is (Go's client would not send it) and
// returns the status.
func rawRequest(t *testing.T, base, raw string) int {
	t.Helper()
	u, _ := url.Parse(base)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestEnvoyConnectionManagerHeaders: on an edge request Envoy replaces the
// client's x-request-id with its own (returned to the client, as
// envoy/envoy.yaml asks), appends the peer to x-forwarded-for and sets
// x-forwarded-proto; the audit record carries Envoy's id.
func TestEnvoyConnectionManagerHeaders(t *testing.T) {
	e := newEnv(t, envOptions{})
	req, _ := http.NewRequest("POST", e.front.URL+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o-mini")))
	req.Header.Set("x-api-key", e.keys["alice-key"])
	req.Header.Set("content-type", "application/json")
	req.Header.Set("x-request-id", "client-chosen")
	req.Header.Set("x-forwarded-for", "198.51.100.7")
	req.Header.Set("x-forwarded-proto", "https")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	id := resp.Header.Get("x-request-id")
	if resp.StatusCode != 200 || id == "" || id == "client-chosen" {
		t.Fatalf("status %d, request id %q: Envoy's own id expected", resp.StatusCode, id)
	}
	e.mu.Lock()
	le := e.log[id]
	e.mu.Unlock()
	if le.Metadata == nil {
		t.Fatalf("no access log entry for %s", id)
	}
	ev := e.gatewayAuditEvent(t, "envoy", id)
	if len(ev) != 1 || ev[0]["decision_id"] != le.Metadata["decision_id"] {
		t.Errorf("audit events for Envoy's request id: %v", ev)
	}
	if evs := e.gatewayAuditEvents(t, "envoy")["client-chosen"]; len(evs) != 0 {
		t.Errorf("a record is keyed on the client's request id: %v", evs)
	}

	r := e.do("POST", "/v1/chat/completions", map[string]string{"x-api-key": e.keys["alice-key"], "x-forwarded-for": "198.51.100.7"}, chatBody("gpt-4o-mini"))
	if xff, _ := r.upstreamHeader("x-forwarded-for"); xff != "198.51.100.7,127.0.0.1" {
		t.Errorf("upstream x-forwarded-for %q: the peer is appended", xff)
	}
	if xfp, _ := r.upstreamHeader("x-forwarded-proto"); xfp != "http" {
		t.Errorf("upstream x-forwarded-proto %q", xfp)
	}
}

// TestEnvoyRouteWithoutAuthz: /healthz has ext_authz disabled in
// envoy/envoy.yaml: Envoy answers it without calling modelguard.
func TestEnvoyRouteWithoutAuthz(t *testing.T) {
	e := newEnv(t, envOptions{})
	resp, err := http.Get(e.front.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	e.mu.Lock()
	le, logged := e.log[resp.Header.Get("x-request-id")]
	e.mu.Unlock()
	if resp.StatusCode != 200 || string(b) != "ok\n" || !logged || le.Checked {
		t.Fatalf("got %d %q (logged %v, checked %v)", resp.StatusCode, b, logged, le.Checked)
	}
	if n := e.metric(`modelguard_decisions_total{gateway="envoy",reason="credentials_missing",result="deny"}`); n != 0 {
		t.Errorf("modelguard decided %v requests", n)
	}
}

// TestEnvoyChunkedBodyCutAtTheLimit: a chunked body over max_request_bytes
// whose data frames fill the buffer exactly at the limit reaches modelguard
// cut and flagged "false", with no content-length to compare: it is
// refused as possibly cut, never parsed as whole.
func TestEnvoyChunkedBodyCutAtTheLimit(t *testing.T) {
	e := newEnv(t, envOptions{})
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("x", 1<<20) + `"}]}`
	req, _ := http.NewRequest("POST", e.front.URL+"/v1/chat/completions", io.MultiReader(strings.NewReader(body)))
	req.Header.Set("x-api-key", e.keys["alice-key"])
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
}

// TestUnderscoreHeaders: Kong (underscores_in_headers on) and Envoy
// (headers_with_underscores_action ALLOW by default) pass header names
// with underscores, and many upstream frameworks fold "_" into "-": a
// client's x_modelguard_subject or X_Consumer_ID must not reach the model
// server next to, or instead of, the header modelguard controls.
func TestUnderscoreHeaders(t *testing.T) {
	e := newEnv(t, envOptions{})
	k := newKongEnv(t, e, kongBinary(t))
	forged := map[string]string{
		"x-api-key":                e.keys["alice-key"],
		"x_modelguard_subject":     "root",
		"X_Modelguard_Roles":       "admin",
		"x_modelguard_key_id":      "forged",
		"x_modelguard_decision_id": "forged",
		"X_Consumer_ID":            "forged",
		"x_consumer_username":      "root",
		"x_credential_identifier":  "forged",
		"x_anonymous_consumer":     "true",
		"x_api_key":                "mg_forged",
	}
	check := func(t *testing.T, status int, upstream map[string]any, kong bool) {
		t.Helper()
		if status != 200 {
			t.Fatalf("status %d", status)
		}
		hs, _ := upstream["headers"].(map[string]any)
		for name, v := range hs {
			if !strings.Contains(name, "_") {
				continue
			}
			folded := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
			// Kong's consumer headers are modelguard's to guard behind Kong only.
			consumer := strings.HasPrefix(folded, "x-consumer-") || folded == "x-credential-identifier" || folded == "x-anonymous-consumer"
			if strings.HasPrefix(folded, "x-modelguard-") || folded == "x-api-key" || kong && consumer {
				t.Errorf("%s: %v reached the upstream", name, v)
			}
		}
	}
	t.Run("envoy", func(t *testing.T) {
		r := e.do("POST", "/v1/chat/completions", forged, chatBody("gpt-4o-mini"))
		check(t, r.status, r.upstream, false)
	})
	t.Run("kong", func(t *testing.T) {
		r := k.do("POST", "/v1/chat/completions", forged, []byte(chatBody("gpt-4o-mini")))
		check(t, r.status, r.upstream, true)
	})
}

// TestKongACLUsesRoles runs Kong's acl plugin after modelguard with the
// settings of kong/kong.yml: acl must decide on the roles modelguard put in
// kong.ctx.shared.authenticated_groups, which it does only with
// always_use_authenticated_groups (modelguard authenticates a consumer and
// a credential; acl would otherwise look the consumer's groups up in Kong's
// database, find none, deny everyone on an allow list and let everyone
// through a deny list).
func TestKongACLUsesRoles(t *testing.T) {
	shipped := shippedACL(t)
	e := newEnv(t, envOptions{})
	k := newKongEnv(t, e, kongBinary(t))
	alice := map[string]string{"x-api-key": e.keys["alice-key"]} // chat-user
	rita := map[string]string{"x-api-key": e.keys["reader-key"]} // reader
	for _, tc := range []struct {
		name        string
		allow, deny []string
		alice, rita int
	}{
		{"shipped lists", shipped.Allow, shipped.Deny, 200, 200},
		{"allow list without reader", []string{"chat-user", "admin"}, nil, 200, 403},
		{"allow list without chat-user", []string{"reader"}, nil, 403, 200},
		{"deny list with reader", nil, []string{"reader"}, 200, 403},
		{"deny list with chat-user", nil, []string{"chat-user"}, 403, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k.front.SetACL(&kongharness.ACL{Allow: tc.allow, Deny: tc.deny, AlwaysUseAuthenticatedGroups: shipped.AlwaysUseAuthenticatedGroups})
			for _, c := range []struct {
				who     string
				headers map[string]string
				want    int
			}{{"alice", alice, tc.alice}, {"rita", rita, tc.rita}} {
				r := k.do("GET", "/v1/models", c.headers, nil)
				if r.status != c.want {
					t.Errorf("%s: %d, want %d (%s)", c.who, r.status, c.want, r.body)
				}
			}
		})
	}
}

// shippedACL reads the acl plugin of kong/kong.yml.
func shippedACL(t *testing.T) kongharness.ACL {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "kong", "kong.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services []struct {
			Routes []struct {
				Plugins []struct {
					Name   string
					Config struct {
						Allow                        []string `yaml:"allow"`
						Deny                         []string `yaml:"deny"`
						AlwaysUseAuthenticatedGroups bool     `yaml:"always_use_authenticated_groups"`
					}
				}
			}
		}
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, s := range doc.Services {
		for _, r := range s.Routes {
			for _, p := range r.Plugins {
				if p.Name == "acl" {
					return kongharness.ACL{Allow: p.Config.Allow, Deny: p.Config.Deny, AlwaysUseAuthenticatedGroups: p.Config.AlwaysUseAuthenticatedGroups}
				}
			}
		}
	}
	t.Fatal("kong/kong.yml has no acl plugin on the model route")
	return kongharness.ACL{}
}

// TestKongPathAsKongSeesIt: kong.request.get_path is normalised as Kong
// normalises it, %2F kept encoded; the router forwards that path. A model
// request spelled with an encoded slash must be checked as that model
// request or refused, never passed as a non-model request.
func TestKongPathAsKongSeesIt(t *testing.T) {
	e := newEnv(t, envOptions{})
	k := newKongEnv(t, e, kongBinary(t))
	alice := map[string]string{"x-api-key": e.keys["alice-key"]}
	admin := map[string]string{"x-api-key": e.keys["admin-key"]}
	for _, tc := range []struct {
		name, path string
		headers    map[string]string
		body       string
		status     []int
	}{
		{"dot segments resolve to the model path", "/v1/./chat/../chat/completions", alice, chatBody("gpt-4o"), []int{403}},
		{"merged slashes", "//v1//chat/completions", alice, chatBody("gpt-4o"), []int{403}},
		{"escaped unreserved characters are decoded", "/v1/chat/%63ompletions", alice, chatBody("gpt-4o"), []int{403}},
		{"encoded slash, unconfigured model", "/v1/chat%2Fcompletions", admin, `{"model":"gpt-5","messages":[]}`, []int{400, 403}},
		{"encoded slash, lower case, schema violation", "/v1/chat%2fcompletions", admin, `{"model":"gpt-4o-mini","messages":[{"role":"wizard","content":"x"}]}`, []int{400}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := k.do("POST", tc.path, tc.headers, []byte(tc.body))
			ok := false
			for _, s := range tc.status {
				ok = ok || r.status == s
			}
			if !ok || r.upstream != nil {
				t.Fatalf("got %d (upstream reached %v), want one of %v: %s", r.status, r.upstream != nil, tc.status, r.body)
			}
		})
	}
	r := k.do("POST", "/v1/chat/./completions", alice, []byte(chatBody("gpt-4o-mini")))
	if r.status != 200 || r.upstream["path"] != "/v1/chat/completions" {
		t.Fatalf("got %d, upstream path %v", r.status, r.upstream["path"])
	}
}

// TestKongClientAddress: the source address modelguard records and gives
// the policy is kong.client.get_forwarded_ip by default (it honours Kong's
// trusted_ips and real_ip_header, as Kong's own plugins do), or the direct
// peer with client_ip: direct.
func TestKongClientAddress(t *testing.T) {
	e := newEnv(t, envOptions{})
	k := newKongEnv(t, e, kongBinary(t))
	k.front.SetRealIP(kongharness.RealIP{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	h := map[string]string{"x-api-key": e.keys["alice-key"], "x-real-ip": "203.0.113.9"}
	cfg := filepath.Join(e.dir, "config.yaml")
	for i, tc := range []struct {
		clientIP any
		want     string
	}{{nil, "203.0.113.9"}, {"forwarded", "203.0.113.9"}, {"direct", "127.0.0.1"}} {
		pc := kongPlugin(20+i, cfg)
		pc.Config["client_ip"] = tc.clientIP
		k.front.SetPlugin(pc)
		r := k.do("POST", "/v1/chat/completions", h, []byte(chatBody("gpt-4o-mini")))
		// The decision record has the address when access read it (direct,
		// or a policy reading it), else the completion adds it.
		addr := e.kongRecord(t, r.id)["source_address"]
		if r.status != 200 || addr != tc.want {
			t.Errorf("client_ip %v: status %d, source_address %v, want %s", tc.clientIP, r.status, addr, tc.want)
		}
	}
	pc := kongPlugin(30, cfg)
	pc.Config["client_ip"] = "x-forwarded-for"
	k.front.SetPlugin(pc)
	if r := k.do("POST", "/v1/chat/completions", h, []byte(chatBody("gpt-4o-mini"))); r.status != 503 ||
		!strings.Contains(strings.Join(r.ex.x.Logs, "\n"), "client_ip") {
		t.Errorf("an unknown client_ip: %d, kong.log %q", r.status, r.ex.x.Logs)
	}
}

// TestKongRefusesAuditOnStdout: Kong logs the plugin server's stdout at
// INFO, below its default log level: an audit trail there is lost. Kong
// mode refuses it with a clear error in Kong's error.log.
func TestKongRefusesAuditOnStdout(t *testing.T) {
	e := newEnv(t, envOptions{})
	k := newKongEnv(t, e, kongBinary(t))
	raw, err := os.ReadFile(filepath.Join(e.dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	stdout := filepath.Join(e.dir, "stdout.yaml")
	i := bytes.Index(raw, []byte("audit:\n"))
	writeAtomic(t, stdout, string(raw[:i])+"audit:\n  output: stdout\n")
	k.front.SetPlugin(kongPlugin(2, stdout))
	r := k.do("POST", "/v1/chat/completions", map[string]string{"x-api-key": e.keys["alice-key"]}, []byte(chatBody("gpt-4o-mini")))
	logs := strings.Join(r.ex.x.Logs, "\n")
	if r.status != 503 || !strings.Contains(logs, "audit.output") || !strings.Contains(logs, "stdout.yaml:") {
		t.Fatalf("status %d, kong.log %q", r.status, logs)
	}
	if strings.Contains(string(r.body), "stdout") {
		t.Errorf("the client learns the reason: %s", r.body)
	}
}

// TestEnvoyPeerPrincipal: behind a TLS listener, source.principal is the
// client certificate's URI SAN (a SPIFFE id under Istio mTLS), and the
// policy decides on it as input.request.tls_principal.
func TestEnvoyPeerPrincipal(t *testing.T) {
	e := newEnv(t, envOptions{})
	const spiffe = "spiffe://cluster.local/ns/apps/sa/chat-frontend"
	writeAtomic(t, filepath.Join(e.dir, "policy", "authz.rego"), `package modelguard.authz

default decision := {"allow": false, "status": 403, "reason": "principal_not_permitted", "message": "forbidden"}

decision := {"allow": true, "reason": "allowed"} if input.request.tls_principal == "`+spiffe+`"
`)
	tlsFront := httptest.NewUnstartedServer(e.front.Config.Handler)
	tlsFront.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	tlsFront.StartTLS()
	t.Cleanup(tlsFront.Close)
	u, _ := url.Parse(spiffe)
	client := tlsFront.Client()
	client.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{clientCert(t, u)}

	alice := map[string]string{"x-api-key": e.keys["alice-key"]}
	testkit.Eventually(t, "the principal policy", func() bool {
		return e.do("POST", "/v1/chat/completions", alice, chatBody("gpt-4o-mini")).reason() == "principal_not_permitted"
	})
	req, _ := http.NewRequest("POST", tlsFront.URL+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o-mini")))
	req.Header.Set("x-api-key", e.keys["alice-key"])
	req.Header.Set("content-type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("with the client certificate: %d", resp.StatusCode)
	}
}

// clientCert is a self-signed client certificate whose URI SAN is id.
func clientCert(t *testing.T, id *url.URL) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "chat-frontend"}, URIs: []*url.URL{id},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
