package policy_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelguard/modelguard/examples"
	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/test/testkit"
)

// cacheEnv is the example policy, an RS256 issuer without leeway and a key
// file holding a key per role, shared by engines with and without caches.
type cacheEnv struct {
	dir  string
	priv *rsa.PrivateKey
	keys map[string]string // role -> key
}

var cacheRoles = []string{"admin", "reader", "chat-user", "trial", "ml-engineer", "undefined-role"}

func newCacheEnv(t *testing.T) *cacheEnv {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, examples.Demo); err != nil {
		t.Fatal(err)
	}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	testkit.WriteFile(t, dir, "jwt.pub", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	env := &cacheEnv{dir: dir, priv: priv, keys: map[string]string{}}
	env.writeKeys(t, "")
	return env
}

// writeKeys writes a key per role; the key of role disabled is disabled.
func (c *cacheEnv) writeKeys(t *testing.T, disabled string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("keys:\n")
	for i, role := range cacheRoles {
		if c.keys[role] == "" {
			c.keys[role], _ = apikey.Mint("")
		}
		entry := apikey.Entry(fmt.Sprintf("k%d", i), "user-"+role, []string{role}, c.keys[role])
		if role == disabled {
			entry = strings.Replace(entry, "\n", "\n    disabled: true\n", 1)
		}
		b.WriteString(entry)
	}
	testkit.ReplaceFile(t, c.dir, "keys.yaml", b.String())
}

// engine opens an engine on the environment, with or without its caches.
func (c *cacheEnv) engine(t *testing.T, caches bool) (*policy.Engine, *metrics.Metrics) {
	t.Helper()
	cfg, err := config.Parse(fmt.Appendf(nil, `authentication:
  jwt:
    issuers:
      - {issuer: https://idp.test, audiences: [models], algorithms: [RS256], keys: [{pem_file: jwt.pub}], leeway: 0s}
    cache: {enabled: %[1]v}
  api_keys: {file: keys.yaml}
authorization:
  policy_dir: policy
  query: data.modelguard.authz.decision
  timeout: 10s
  decision_cache: {enabled: %[1]v}
models:
  - {name: gpt-4o-mini, operation: chat, limits: {max_tokens: 4096}}
  - {name: llama-3.1-8b-instruct, operation: chat}
  - {name: text-embedding-3-small, operation: embeddings}
`, caches), "cache.yaml", c.dir)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(nil)
	e, err := policy.New(t.Context(), cfg, policy.Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	return e, m
}

func (c *cacheEnv) token(t *testing.T, roles []string, exp time.Time) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": "https://idp.test", "aud": "models",
		"sub": "jwt-" + strings.Join(roles, "+"), "roles": roles, "exp": exp.Unix()}).SignedString(c.priv)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func decisionHits(m *metrics.Metrics) float64 {
	return testutil.ToFloat64(m.CacheLookups.WithLabelValues("decision", "hit"))
}

// TestCachesChangeNoDecision sends the same random request stream to an
// engine with the verified-token and decision caches and to one without:
// every decision must be the same.
func TestCachesChangeNoDecision(t *testing.T) {
	env := newCacheEnv(t)
	cached, m := env.engine(t, true)
	plain, _ := env.engine(t, false)
	exp := time.Now().Add(time.Hour)
	var creds []string
	for _, role := range cacheRoles {
		creds = append(creds, "x-api-key:"+env.keys[role], "authorization:Bearer "+env.keys[role])
	}
	for _, roles := range [][]string{{"admin"}, {"chat-user"}, {"trial", "reader"}, {}, {"ml-engineer"}} {
		creds = append(creds, "authorization:Bearer "+env.token(t, roles, exp))
	}
	creds = append(creds, "", "x-api-key:mg_not_a_key", "authorization:Bearer not.a.jwt")

	rng := mrand.New(mrand.NewPCG(12, 12))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	ctx := context.Background()
	for i := range 2000 {
		req := &policy.Request{
			Gateway: "envoy", ID: fmt.Sprint("r", i), Host: "models.local", Scheme: "https",
			Method:  pick("POST", "POST", "GET"),
			Path:    pick("/v1/chat/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/models", "/v1/models/gpt-4o-mini"),
			Headers: map[string]string{"content-type": "application/json", "x-request-id": fmt.Sprint(i)},
		}
		if name, value, ok := strings.Cut(pick(creds...), ":"); ok {
			req.Headers[name] = value
		}
		if rng.IntN(2) == 0 {
			req.Headers[pick("x-modelguard-subject", "x_modelguard_roles", "x-other")] = "spoofed"
		}
		if req.Method == "POST" {
			model := pick("gpt-4o-mini", "llama-3.1-8b-instruct", "text-embedding-3-small", "unlisted")
			tokens := pick("", `,"max_tokens":100`, `,"max_tokens":500`, `,"max_tokens":2000`)
			if strings.HasSuffix(req.Path, "embeddings") {
				req.Body = fmt.Appendf(nil, `{"model":%q,"input":"hello"}`, model)
			} else {
				req.Body = fmt.Appendf(nil, `{"model":%q,"messages":[{"role":"user","content":"hi"}]%s}`, model, tokens)
			}
		}
		got, want := comparable(cached.Decide(ctx, req)), comparable(plain.Decide(ctx, req))
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("request %d (%s %s %v %s):\nwith caches    %+v\nwithout caches %+v", i, req.Method, req.Path, req.Headers, req.Body, got, want)
		}
	}
	if decisionHits(m) == 0 {
		t.Fatal("no decision cache hits: the property was not exercised")
	}
}

// decisionView is what a gateway and the audit trail learn of a decision,
// less its id.
type decisionView struct {
	Allow                   bool
	Status                  int
	Reason, Message         string
	Upstream, Response      []policy.Header
	Remove                  []string
	Model                   policy.Model
	Subject, Roles, Method  string
	PolicyRevision, Limited string
}

func comparable(d *policy.Decision) decisionView {
	v := decisionView{Allow: d.Allow, Status: d.Status, Reason: d.Reason, Message: d.Message, Model: d.Model,
		PolicyRevision: d.PolicyRevision, Limited: d.RateLimit, Remove: slices.Sorted(slices.Values(d.RemoveHeaders))}
	if d.Identity != nil {
		v.Subject, v.Roles, v.Method = d.Identity.Subject, strings.Join(d.Identity.Roles, ","), d.Identity.Method
	}
	strip := func(hs []policy.Header) []policy.Header {
		var out []policy.Header
		for _, h := range hs {
			if h.Value == d.ID {
				h.Value = "<decision id>"
			}
			out = append(out, h)
		}
		slices.SortFunc(out, func(a, b policy.Header) int { return strings.Compare(a.Name, b.Name) })
		return out
	}
	v.Upstream, v.Response = strip(d.UpstreamHeaders), strip(d.ResponseHeaders)
	return v
}

func chatRequest(name, value string) *policy.Request {
	return &policy.Request{
		Gateway: "envoy", ID: "r", Method: "POST", Path: "/v1/chat/completions", Host: "models.local",
		Headers: map[string]string{"content-type": "application/json", name: value},
		Body:    []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`),
	}
}

// allowedTwice decides req twice on a fresh engine: both allowed, the
// second from the decision cache.
func allowedTwice(t *testing.T, e *policy.Engine, m *metrics.Metrics, req *policy.Request) {
	t.Helper()
	for i := range 2 {
		if d := e.Decide(t.Context(), req); !d.Allow {
			t.Fatalf("request %d: %d %s", i, d.Status, d.Reason)
		}
	}
	if decisionHits(m) != 1 {
		t.Fatalf("%v decision cache hits, want 1", decisionHits(m))
	}
}

// TestRevokedKeyWithCachedDecision: a key disabled in the key file is
// refused as soon as the file is reloaded, though its decision is cached.
func TestRevokedKeyWithCachedDecision(t *testing.T) {
	env := newCacheEnv(t)
	e, m := env.engine(t, true)
	req := chatRequest("x-api-key", env.keys["chat-user"])
	allowedTwice(t, e, m, req)
	reloads := testutil.ToFloat64(m.KeyReloads.WithLabelValues("ok"))
	env.writeKeys(t, "chat-user")
	testkit.Eventually(t, "the key file reload", func() bool { return testutil.ToFloat64(m.KeyReloads.WithLabelValues("ok")) > reloads })
	if d := e.Decide(t.Context(), req); d.Allow || d.Reason != apikey.ReasonDisabled {
		t.Fatalf("after revocation: %v %d %s", d.Allow, d.Status, d.Reason)
	}
}

// TestExpiredTokenWithCachedDecision: a token is refused once it expires,
// though its verification and decision are cached.
func TestExpiredTokenWithCachedDecision(t *testing.T) {
	env := newCacheEnv(t)
	e, m := env.engine(t, true)
	exp := time.Now().Add(3 * time.Second).Truncate(time.Second)
	req := chatRequest("authorization", "Bearer "+env.token(t, []string{"chat-user"}, exp))
	allowedTwice(t, e, m, req)
	time.Sleep(time.Until(exp) + 10*time.Millisecond) // leeway is 0s
	if d := e.Decide(t.Context(), req); d.Allow || d.Status != 401 {
		t.Fatalf("after expiry: %v %d %s", d.Allow, d.Status, d.Reason)
	}
}

// TestReloadedPolicyWithCachedDecision: an edit of the policy's data
// decides the next request.
func TestReloadedPolicyWithCachedDecision(t *testing.T) {
	env := newCacheEnv(t)
	e, m := env.engine(t, true)
	req := chatRequest("x-api-key", env.keys["trial"])
	allowedTwice(t, e, m, req)
	revision := e.PolicyRevision()
	data, err := os.ReadFile(filepath.Join(env.dir, "policy", "data.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The trial role loses gpt-4o-mini.
	edited := strings.Replace(string(data), "models: [gpt-4o-mini]\n        operations: [chat, list]", "models: []\n        operations: [chat, list]", 1)
	if edited == string(data) {
		t.Fatal("the example data changed: update this test")
	}
	testkit.ReplaceFile(t, filepath.Join(env.dir, "policy"), "data.yaml", edited)
	testkit.Eventually(t, "the policy reload", func() bool { return e.PolicyRevision() != revision })
	if d := e.Decide(t.Context(), req); d.Allow || d.Reason != "model_not_permitted" {
		t.Fatalf("after the edit: %v %d %s", d.Allow, d.Status, d.Reason)
	}
}
