package test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelguard/modelguard/examples"
	"github.com/modelguard/modelguard/extauthz"
	"github.com/modelguard/modelguard/httpauthz"
	"github.com/modelguard/modelguard/httpauthz/httpsettings"
	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/policy/tracing"
	"github.com/modelguard/modelguard/test/envoyharness"
	"github.com/modelguard/modelguard/test/testkit"
)

const (
	testIssuer   = "https://idp.test"
	testAudience = "models"
)

// env is one modelguard ext_authz server on real sockets, a JWKS server, a
// fake model upstream and the Envoy harness in front of them.
type env struct {
	t        testing.TB
	dir      string
	svc      *extauthz.Service
	http     *httpauthz.Server // the HTTP authorization listener, on the same engine
	front    *httptest.Server
	upstream *httptest.Server
	jwks     *testkit.JWKSServer
	keys     map[string]string // API key id -> plaintext
	signer   *rsa.PrivateKey   // kid "k1", published in the JWKS
	admin    string
	tracer   *tracing.Provider // nil: tracing off

	mu  sync.Mutex
	log map[string]envoyharness.AccessLogEntry // by x-request-id
}

type envOptions struct {
	// rawHeaders makes the harness send header_map (encode_raw_headers).
	rawHeaders bool
	// noBody turns with_request_body off; strictSize turns
	// allow_partial_message off, so Envoy itself answers 413.
	noBody, strictSize bool
	// rateLimits replaces the rate_limits section (the trial tier's rules).
	rateLimits string
	// authentication and authorization replace those sections (JWT and
	// API keys; the example policy's decision rule).
	authentication, authorization string
	// routes are the Envoy harness's routes besides the shipped ones.
	routes map[string]envoyharness.Route
	// files are written into the configuration's directory (a policy
	// directory named by authorization, say), by relative path.
	files map[string]string
	// tracing is the tracing section, if any; the env's tracer is then
	// flushed and stopped by env.stopTracing or when the test ends.
	tracing string
	// issuer is appended to the default test issuer's settings and auth
	// to the default authentication section (indented lines); extra is
	// appended to the configuration (sections no other option sets).
	issuer, auth, extra string
}

// defaultAuthentication and defaultAuthorization are those sections of
// every env unless replaced; the first takes the issuer, audience and JWKS
// URL.
const (
	defaultAuthentication = `authentication:
  jwt:
    issuers:
      - issuer: %s
        audiences: [%s]
        algorithms: [RS256]
        jwks_url: %s
        jwks_unknown_kid_interval: 1ms
%s  api_keys:
    file: keys.yaml`
	defaultAuthorization = `authorization:
  policy_dir: policy
  query: data.modelguard.authz.decision
  timeout: 1s`
)

// trialLimits is the rate_limits section of every env unless replaced:
// limits for the trial tier only (trial-key and trial2-key). The token
// budget refills one token every 9 s, slowly enough that the time between
// two rows (slow under the race detector) never changes a remaining count
// the decision table compares. quota_after (20m) sits between the token
// refusal's retry (16.5m, retryable) and the request refusal's (30m,
// insufficient_quota).
const trialLimits = `rate_limits:
  quota_after: 20m
  rules:
    - {name: trial-requests, requests: 2, per: 1h, key: [key_id], match: {classes: [trial]}}
    - {name: trial-tokens, tokens: 400, per: 1h, key: [key_id], match: {classes: [trial]}}
`

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), keys: map[string]string{}, log: map[string]envoyharness.AccessLogEntry{}}
	e.signer = newRSAKey(t)
	e.jwks = testkit.NewJWKSServer(t)
	e.jwks.Serve(rs256JWK(t, &e.signer.PublicKey, "k1"))

	// The example policy, as shipped.
	if err := os.CopyFS(e.dir, mustSub(examples.Demo, ".")); err != nil {
		t.Fatal(err)
	}
	e.writeKeys(map[string]keyEntry{
		"alice-key":  {subject: "alice", roles: []string{"chat-user"}},
		"reader-key": {subject: "rita", roles: []string{"reader"}},
		"admin-key":  {subject: "ada", roles: []string{"admin"}},
		// The trial tier's limits (rate_limits below) apply to these two.
		"trial-key":  {subject: "tara", roles: []string{"trial"}},
		"trial2-key": {subject: "theo", roles: []string{"trial"}},
	})
	for name, content := range o.files {
		testkit.ReplaceFile(t, e.dir, name, content)
	}
	auth := o.authentication
	if auth == "" {
		auth = fmt.Sprintf(defaultAuthentication, testIssuer, testAudience, e.jwks.URL+"/jwks.json", o.issuer) + "\n" + o.auth
	}
	cfg := fmt.Sprintf(`server:
  grpc_address: 127.0.0.1:0
  admin_address: 127.0.0.1:0
  shutdown_grace: 5s
%s
%s
models:
  - {name: gpt-4o-mini, operation: chat, limits: {max_tokens: 4096, max_messages: 50}}
  - {name: llama-3.1-8b-instruct, operation: chat}
  - {name: gpt-4o, operation: chat}
  - {name: text-embedding-3-small, operation: embeddings}
  - {name: resnet, operation: infer}
%s
audit:
  output: %s
%s
%s`, auth, cmp.Or(o.authorization, defaultAuthorization), cmp.Or(o.rateLimits, trialLimits), filepath.Join(e.dir, "audit.log"), o.tracing, o.extra)
	if err := os.WriteFile(filepath.Join(e.dir, "config.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(filepath.Join(e.dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg := prometheus.NewRegistry()
	// The configuration's audit.output is the Kong plugin server's trail
	// when a test starts one: a trail has one writer (its lock refuses a
	// second), so this server keeps its own.
	aw, err := audit.Open(e.trail("envoy"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { aw.Close() })
	opts := policy.Options{Metrics: metrics.New(reg), Audit: aw}
	if e.tracer, err = tracing.Open(ctx, c.Tracing, c.Dir, "test"); err != nil {
		t.Fatal(err)
	} else if e.tracer != nil {
		opts.Tracer = e.tracer
		t.Cleanup(e.stopTracing)
	}
	engine, err := policy.New(ctx, c, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.svc, err = extauthz.Listen(c, engine, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	go e.svc.Serve()
	t.Cleanup(func() { e.svc.Shutdown(context.Background()) })
	e.http, err = httpauthz.Listen(httpsettings.Settings{Address: "127.0.0.1:0", WithoutBody: httpsettings.Refuse}, engine, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	go e.http.Serve()
	t.Cleanup(func() { e.http.Shutdown(context.Background()) })
	e.admin = "http://" + e.svc.AdminAddr().String()

	conn, err := grpc.NewClient(e.svc.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	e.upstream = httptest.NewServer(http.HandlerFunc(echoUpstream))
	t.Cleanup(e.upstream.Close)
	u, _ := url.Parse(e.upstream.URL)
	// As envoy/envoy.yaml configures the filter; the timeout stretches by
	// as much as the race detector slows the server down.
	filter := envoyharness.ShippedFilter
	filter.Timeout *= raceSlowdown
	filter.WithRequestBody, filter.AllowPartialMessage, filter.EncodeRawHeaders = !o.noBody, !o.strictSize, o.rawHeaders
	front := envoyharness.New(authv3.NewAuthorizationClient(conn), u, filter)
	if o.routes != nil {
		front.Routes = maps.Clone(front.Routes)
		maps.Copy(front.Routes, o.routes)
	}
	front.AccessLog = func(le envoyharness.AccessLogEntry) {
		e.mu.Lock()
		e.log[le.RequestID] = le
		e.mu.Unlock()
	}
	e.front = httptest.NewServer(front)
	t.Cleanup(e.front.Close)
	return e
}

// echoUpstream is the fake model server: it answers with what it received.
func echoUpstream(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("content-type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "path": r.URL.Path, "headers": r.Header, "body": string(body)})
}

type keyEntry struct {
	subject  string
	roles    []string
	disabled bool
}

// writeKeys writes the key file atomically (rename), minting keys for ids
// not seen before.
func (e *env) writeKeys(entries map[string]keyEntry) {
	e.t.Helper()
	var b strings.Builder
	b.WriteString("keys:\n")
	for id, k := range entries {
		if e.keys[id] == "" {
			key, err := apikey.Mint("mg_test_")
			if err != nil {
				e.t.Fatal(err)
			}
			e.keys[id] = key
		}
		b.WriteString(apikey.Entry(id, k.subject, k.roles, e.keys[id]))
		if k.disabled {
			b.WriteString("    disabled: true\n")
		}
	}
	writeAtomic(e.t, filepath.Join(e.dir, "keys.yaml"), b.String())
}

func writeAtomic(t testing.TB, path, content string) {
	t.Helper()
	testkit.ReplaceFile(t, filepath.Dir(path), filepath.Base(path), content)
}

// result is what the client saw, plus the access log line for it.
type result struct {
	status   int
	header   http.Header
	body     []byte
	upstream map[string]any // the echo, when the request reached the model
	log      envoyharness.AccessLogEntry
}

var requestSeq atomic.Uint64

func (e *env) do(method, path string, headers map[string]string, body string) result {
	e.t.Helper()
	return e.doRaw(method, path, headers, []byte(body))
}

func (e *env) doRaw(method, path string, headers map[string]string, body []byte) result {
	e.t.Helper()
	return e.doVia(e.front.URL, http.DefaultClient, method, path, headers, body)
}

// doVia is doRaw through the Envoy harness served at base (a TLS front),
// with client.
func (e *env) doVia(base string, client *http.Client, method, path string, headers map[string]string, body []byte) result {
	e.t.Helper()
	id, resp, b, err := sendVia(client, base, "req", method, path, headers, body)
	if err != nil {
		e.t.Error(err)
		return result{}
	}
	r := result{status: resp.StatusCode, header: resp.Header, body: b}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &r.upstream); err != nil {
			e.t.Errorf("upstream answer: %v", err)
		}
	}
	e.mu.Lock()
	r.log = e.log[id]
	e.mu.Unlock()
	return r
}

// send is what a client does through either gateway: a JSON request with a
// fresh x-request-id (returned, to find the request in logs and audit).
func send(base, idPrefix, method, path string, headers map[string]string, body []byte) (string, *http.Response, []byte, error) {
	return sendVia(http.DefaultClient, base, idPrefix, method, path, headers, body)
}

// sendVia is send with client.
func sendVia(client *http.Client, base, idPrefix, method, path string, headers map[string]string, body []byte) (string, *http.Response, []byte, error) {
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		return "", nil, nil, err
	}
	id := fmt.Sprintf("%s-%d", idPrefix, requestSeq.Add(1))
	req.Header.Set("x-request-id", id)
	req.Header.Set("content-type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return id, nil, nil, err
	}
	defer resp.Body.Close()
	// Envoy replaces the client's request id on edge requests and, as
	// envoy/envoy.yaml asks, returns its own.
	if own := resp.Header.Get("x-request-id"); own != "" {
		id = own
	}
	b, err := io.ReadAll(resp.Body)
	return id, resp, b, err
}

func (r result) reason() string {
	s, _ := r.log.Metadata["reason"].(string)
	return s
}

func (r result) revision() string {
	s, _ := r.log.Metadata["policy_revision"].(string)
	return s
}

// upstreamHeader returns a header as the model server received it.
func (r result) upstreamHeader(name string) (string, bool) {
	hs, _ := r.upstream["headers"].(map[string]any)
	vs, ok := hs[http.CanonicalHeaderKey(name)].([]any)
	if !ok || len(vs) == 0 {
		return "", false
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i], _ = v.(string)
	}
	return strings.Join(out, ","), true
}

// metric reads one sample from the admin /metrics endpoint.
func (e *env) metric(name string) float64 {
	e.t.Helper()
	return scrape(e.t, e.admin, name)
}

// scrape reads one sample (name with its labels) from a /metrics endpoint
// at base ("http://host:port"); 0 when absent.
func scrape(t testing.TB, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// token signs claims for the test issuer with key and kid; claims override
// the defaults.
func token(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	now := time.Now()
	c := jwt.MapClaims{"iss": testIssuer, "aud": testAudience, "sub": "alice", "roles": []string{"chat-user"}, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rs256JWK is the JWK of an RS256 signing key, as identity providers publish it.
func rs256JWK(t testing.TB, pub *rsa.PublicKey, kid string) string {
	return testkit.JWK(t, pub, kid, func(o *jwkset.JWKOptions) { o.Metadata.ALG, o.Metadata.USE = jwkset.AlgRS256, jwkset.UseSig })
}

func mustSub(f fs.FS, dir string) fs.FS {
	s, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return s
}

func chatBody(model string) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"Hello"}]}`
}

func bearer(s string) map[string]string { return map[string]string{"authorization": "Bearer " + s} }

// trail is the audit trail a gateway's modelguard writes: the in-process
// ext_authz server's own, or the configuration's audit.output, which the
// Kong plugin server reads.
func (e *env) trail(gateway string) string {
	if gateway == "envoy" {
		return filepath.Join(e.dir, "envoy-audit.log")
	}
	return filepath.Join(e.dir, "audit.log")
}
