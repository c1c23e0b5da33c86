package test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/test/nginxserver"
	"github.com/modelguard/modelguard/test/testkit"
	"github.com/modelguard/modelguard/test/testkit/demo"
)

// nginxConfig is the shipped nginx configuration with its three addresses
// replaced: modelguard's HTTP listener, the model server, nginx's own.
func nginxConfig(t *testing.T, modelguard, models, listen string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "nginx", "modelguard.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for old, repl := range map[string]string{
		"server 127.0.0.1:9193;": "server " + modelguard + ";",
		"server 127.0.0.1:8000;": "server " + models + ";",
		"listen 127.0.0.1:8080;": "listen " + listen + ";",
	} {
		if strings.Count(conf, old) != 1 {
			t.Fatalf("nginx/modelguard.conf: %q is not there exactly once", old)
		}
		conf = strings.Replace(conf, old, repl, 1)
	}
	return conf
}

// TestNginxShippedConfig: nginx -t accepts nginx/modelguard.conf as
// shipped (in an unprivileged main configuration).
func TestNginxShippedConfig(t *testing.T) {
	nginxserver.Binary(t)
	b, err := os.ReadFile(filepath.Join("..", "nginx", "modelguard.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if out, ok := nginxserver.Test(t, t.TempDir(), string(b)); !ok {
		t.Fatalf("nginx -t:\n%s", out)
	}
}

// nginxFront is a real nginx with nginx/modelguard.conf in front of a fake
// model server, and a real "modelguard serve" behind its auth_request.
type nginxFront struct {
	url    string
	client *http.Client // nil: http.DefaultClient
}

type nginxAnswer struct {
	status   int
	header   http.Header
	body     []byte
	upstream map[string]any // the echo, when the request reached the model server
}

func (a nginxAnswer) upstreamHeader(name string) (string, bool) {
	hs, _ := a.upstream["headers"].(map[string]any)
	vs, ok := hs[http.CanonicalHeaderKey(name)].([]any)
	if !ok || len(vs) == 0 {
		return "", false
	}
	s, _ := vs[0].(string)
	return s, true
}

// writeNginxKeys writes keys.yaml with a key for each id (minted once),
// those in disabled marked disabled.
func writeNginxKeys(t *testing.T, dir string, keys map[string]string, disabled ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("keys:\n")
	for _, k := range []demo.Key{
		demo.Alice,
		{ID: "reader-key", Subject: "rita", Roles: []string{"reader"}},
		{ID: "ml-key", Subject: "mel", Roles: []string{"ml-engineer"}},
		{ID: "trial-key", Subject: "tara", Roles: []string{"trial"}},
	} {
		if keys[k.ID] == "" {
			key, err := apikey.Mint("mg_test_")
			if err != nil {
				t.Fatal(err)
			}
			keys[k.ID] = key
		}
		b.WriteString(apikey.Entry(k.ID, k.Subject, k.Roles, keys[k.ID]))
		for _, d := range disabled {
			if d == k.ID {
				b.WriteString("    disabled: true\n")
			}
		}
	}
	testkit.ReplaceFile(t, dir, "keys.yaml", b.String())
}

func (f *nginxFront) do(t *testing.T, method, path string, headers map[string]string, body string) nginxAnswer {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header[k] = []string{v} // as given: x_modelguard_roles keeps its underscore
	}
	client := f.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := nginxAnswer{status: resp.StatusCode, header: resp.Header, body: b}
	var echo map[string]any
	if json.Unmarshal(b, &echo) == nil && echo["method"] != nil {
		a.upstream = echo
	}
	return a
}

// TestNginxAuthRequest drives real HTTP requests through nginx with the
// shipped configuration: allowed callers reach the model server with
// identity headers and without their credential or forged identity
// headers; denials reach the client with modelguard's status, headers and
// JSON body; a revoked key is refused once the key file changes; and with
// modelguard gone, nginx answers 503.
func TestNginxAuthRequest(t *testing.T) {
	nginxserver.Binary(t)
	bin := buildBinary(t)
	dir := demo.Dir(t)
	keys := map[string]string{}
	writeNginxKeys(t, dir, keys)
	signer := newRSAKey(t)
	der, err := x509.MarshalPKIXPublicKey(&signer.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, dir, "jwt.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	cfg := testkit.WriteFile(t, dir, "config.yaml", `server:
  grpc_address: 127.0.0.1:0
  admin_address: 127.0.0.1:0
  http: {address: 127.0.0.1:0, without_body: headers_only}
authentication:
  jwt:
    issuers:
      - {issuer: "`+testIssuer+`", audiences: [`+testAudience+`], algorithms: [RS256], keys: [{pem_file: jwt.pem}]}
  api_keys: {file: keys.yaml}
`+demo.Policy+`  - {name: resnet, operation: infer}
rate_limits:
  rules:
    - {name: trial-requests, requests: 1, per: 1h, key: [key_id], match: {classes: [trial]}}
audit:
  output: audit.jsonl
`)
	srv := startServe(t, bin, cfg)
	upstream := httptest.NewServer(http.HandlerFunc(echoUpstream))
	t.Cleanup(upstream.Close)
	listen := nginxserver.FreePort(t)
	ng := nginxserver.Start(t, nginxConfig(t, srv.http, strings.TrimPrefix(upstream.URL, "http://"), listen), listen)
	f := &nginxFront{url: "http://" + listen}
	defer func() {
		if t.Failed() {
			t.Logf("nginx error log:\n%s", ng.ErrorLog())
		}
	}()
	jwtToken := token(t, jwt.SigningMethodRS256, signer, "", nil)
	forged := map[string]string{"X-Modelguard-Subject": "mallory", "X-Modelguard-Roles": "admin", "X-Modelguard-Key-Id": "stolen", "x_modelguard_roles": "admin"}
	with := func(h map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range h {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}

	t.Run("allowed", func(t *testing.T) {
		for _, tc := range []struct {
			name, method, path, body string
			headers                  map[string]string
			subject, method_, keyID  string
		}{
			{"jwt", "GET", "/v1/models", "", with(forged, "Authorization", "Bearer "+jwtToken), "alice", "jwt", ""},
			{"api key, body passed on", "POST", "/v2/models/resnet/infer", `{"inputs":[]}`, with(forged, "X-Api-Key", keys["ml-key"], "Content-Type", "application/json"), "mel", "api_key", "ml-key"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a := f.do(t, tc.method, tc.path, tc.headers, tc.body)
				if a.status != 200 || a.upstream == nil {
					t.Fatalf("got %d %s, want the model server's 200", a.status, a.body)
				}
				for name, want := range map[string]string{"X-Modelguard-Subject": tc.subject, "X-Modelguard-Auth-Method": tc.method_, "X-Modelguard-Key-Id": tc.keyID} {
					if got, _ := a.upstreamHeader(name); got != want {
						t.Errorf("upstream %s = %q, want %q", name, got, want)
					}
				}
				if roles, _ := a.upstreamHeader("X-Modelguard-Roles"); strings.Contains(roles, "admin") {
					t.Errorf("forged roles reached the upstream: %q", roles)
				}
				for _, gone := range []string{"Authorization", "X-Api-Key", "X_modelguard_roles"} {
					if v, ok := a.upstreamHeader(gone); ok {
						t.Errorf("upstream got %s: %q", gone, v)
					}
				}
				if id, _ := a.upstreamHeader("X-Modelguard-Decision-Id"); id == "" {
					t.Error("no decision id upstream")
				}
				if a.upstream["body"] != tc.body || a.upstream["path"] != tc.path {
					t.Errorf("upstream got %v %q, want %s %q", a.upstream["path"], a.upstream["body"], tc.path, tc.body)
				}
			})
		}
	})

	t.Run("denied", func(t *testing.T) {
		for _, tc := range []struct {
			name, method, path string
			headers            map[string]string
			status             int
			typ                string
		}{
			{"no credential", "GET", "/v1/models", nil, 401, "authentication_error"},
			{"bad token", "GET", "/v1/models", map[string]string{"Authorization": "Bearer " + jwtToken + "x"}, 401, "authentication_error"},
			{"read-only caller", "POST", "/v1/chat/completions", map[string]string{"X-Api-Key": keys["reader-key"]}, 403, "permission_error"},
			{"model unknown without the body", "POST", "/v1/chat/completions", map[string]string{"X-Api-Key": keys["alice-key"]}, 403, "permission_error"},
			{"ambiguous path", "POST", "/V1/chat/completions", map[string]string{"X-Api-Key": keys["alice-key"]}, 400, "invalid_request_error"},
			{"first trial request", "GET", "/v1/models", map[string]string{"X-Api-Key": keys["trial-key"]}, 200, ""},
			{"rate limited", "GET", "/v1/models", map[string]string{"X-Api-Key": keys["trial-key"]}, 429, "insufficient_quota"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a := f.do(t, tc.method, tc.path, tc.headers, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}`)
				if a.status != tc.status {
					t.Fatalf("got %d %s, want %d", a.status, a.body, tc.status)
				}
				if tc.status == 200 {
					if a.header.Get("X-RateLimit-Remaining-Requests") != "0" {
						t.Errorf("rate limit headers %v", a.header)
					}
					return
				}
				if a.upstream != nil {
					t.Fatalf("denied request reached the model server: %v", a.upstream)
				}
				var body struct {
					Error struct{ Message, Type, Code string }
				}
				if err := json.Unmarshal(a.body, &body); err != nil || body.Error.Type != tc.typ || body.Error.Message == "" {
					t.Fatalf("body %q (%v), want an OpenAI-shaped %s", a.body, err, tc.typ)
				}
				if ct := a.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("content-type %q", ct)
				}
				if bytes.Contains(a.body, []byte("mg_test_")) || bytes.Contains(a.body, []byte("Hello")) {
					t.Errorf("denial echoes the request: %s", a.body)
				}
				if got := a.header.Values("Www-Authenticate"); tc.status == 401 && (len(got) != 1 || got[0] != `Bearer realm="modelguard"`) {
					t.Errorf("WWW-Authenticate %q", got)
				}
				if tc.status == 429 && (a.header.Get("Retry-After") == "" || a.header.Get("X-RateLimit-Remaining-Requests") != "0") {
					t.Errorf("429 headers %v", a.header)
				}
				if a.header.Get("X-Modelguard-Decision-Id") == "" || a.header.Get("X-Modelguard-Error") != "" {
					t.Errorf("denial headers %v", a.header)
				}
			})
		}
	})

	t.Run("audit", func(t *testing.T) {
		a := f.do(t, "POST", "/v2/models/resnet/infer", map[string]string{"X-Api-Key": keys["ml-key"], "Content-Type": "application/json"}, `{"inputs":[]}`)
		id := a.header.Get("X-Request-Id")
		var ev map[string]any
		testkit.Eventually(t, "the audit record of request "+id, func() bool {
			ev = auditRecord(t, filepath.Join(dir, "audit.jsonl"), id)
			return ev != nil
		})
		if ev["gateway"] != "nginx" || ev["result"] != "allow" || ev["body_check"] != "skipped" || ev["model"] != "resnet" ||
			ev["method"] != "POST" || ev["path"] != "/v2/models/resnet/infer" || ev["source_address"] != "127.0.0.1" {
			t.Errorf("audit record %v", ev)
		}
	})

	t.Run("revoked key", func(t *testing.T) {
		alice := map[string]string{"X-Api-Key": keys["alice-key"]}
		if a := f.do(t, "GET", "/v1/models", alice, ""); a.status != 200 {
			t.Fatalf("before: got %d %s", a.status, a.body)
		}
		writeNginxKeys(t, dir, keys, "alice-key")
		testkit.Eventually(t, "the revoked key refused", func() bool {
			return f.do(t, "GET", "/v1/models", alice, "").status == 401
		})
	})

	t.Run("modelguard down", func(t *testing.T) {
		srv.cmd.Process.Kill()
		srv.exited <- <-srv.exited // the cleanup waits for it again
		a := f.do(t, "GET", "/v1/models", map[string]string{"X-Api-Key": keys["reader-key"]}, "")
		var body struct{ Error struct{ Type string } }
		if a.status != 503 || a.upstream != nil || json.Unmarshal(a.body, &body) != nil || body.Error.Type != "server_error" {
			t.Fatalf("got %d %s, want 503 with a JSON body", a.status, a.body)
		}
	})
}

// auditRecord returns the decision record of a request id in a trail, nil
// if it is not there (yet).
func auditRecord(t *testing.T, trail, requestID string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(trail)
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(raw), "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) == nil && ev["request_id"] == requestID && ev["kind"] == "decision" {
			return ev
		}
	}
	return nil
}
