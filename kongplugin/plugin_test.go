package kongplugin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pdktest "github.com/Kong/go-pdk/test"
	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/examples"
	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/test/testkit"
)

func isDecision(e audit.Event) bool { return e.Kind == audit.KindDecision }

// fixture is a configuration directory (the example policy, API keys) and
// a Plugin whose audit events land in audit.
type fixture struct {
	dir    string
	keys   map[string]string // id -> plaintext
	plugin *Plugin
	audit  *testkit.EventLog[audit.Event]
}

const testConfig = `authentication:
  allow_anonymous: %v
  api_keys:
    file: keys.yaml
authorization:
  policy_dir: policy
  query: data.modelguard.authz.decision
  timeout: 2s
models:
  - {name: gpt-4o-mini, operation: chat, limits: {max_tokens: 4096}}
  - {name: gpt-4o, operation: chat}
audit:
  output: "off"
`

func newFixture(t testing.TB, anonymous bool) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), keys: map[string]string{}, audit: &testkit.EventLog[audit.Event]{}}
	sub, err := fs.Sub(examples.Demo, ".")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(f.dir, sub); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("keys:\n")
	for _, k := range []struct {
		id, subject, role string
	}{{"alice-key", "alice", "chat-user"}, {"reader-key", "rita", "reader"}} {
		key, err := apikey.Mint("mg_test_")
		if err != nil {
			t.Fatal(err)
		}
		f.keys[k.id] = key
		b.WriteString(apikey.Entry(k.id, k.subject, []string{k.role}, key))
	}
	f.write(t, "keys.yaml", b.String())
	f.write(t, "config.yaml", fmt.Sprintf(testConfig, anonymous))
	f.plugin = New(Options{OpenAudit: func(*config.Config) (policy.AuditSink, io.Closer, error) { return f.audit, nil, nil }})
	f.plugin.noRequestLine = true // go-pdk's test environment has no kong.nginx.get_var
	t.Cleanup(f.plugin.Close)
	return f
}

func (f *fixture) write(t testing.TB, name, content string) {
	t.Helper()
	testkit.WriteFile(t, f.dir, name, content)
}

func (f *fixture) config(path string) *Config {
	c := f.plugin.NewConfig().(*Config)
	c.ConfigPath = path
	return c
}

// run passes one request through go-pdk's test environment (access, an
// echo upstream), then the log phase with what Kong's kong.log.serialize
// would return for it (go-pdk's test environment has no serialize; the
// socket-level tests in test/ run the real call through the Kong harness).
func run(t *testing.T, c *Config, method, path string, headers map[string]string, body string) *pdktest.TestEnv {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json"}}
	for k, v := range headers {
		h.Set(k, v)
	}
	env, err := pdktest.New(t, pdktest.Request{Method: method, Url: "http://models.local" + path, Headers: h, Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	env.DoRewrite(c)
	env.DoAccess(c)
	if env.IsRunning() {
		env.ServiceRes = env.ServiceReq.ToResponse() // an echo upstream
		env.DoResponse(c)
	}
	if err := c.p.logged(c, serializeOf(t, env, method, path)); err != nil {
		t.Fatal(err)
	}
	return env
}

// serializeOf is the part of kong.log.serialize's JSON the log phase reads.
func serializeOf(t *testing.T, env *pdktest.TestEnv, method, path string) string {
	t.Helper()
	lower := func(h http.Header) map[string][]string {
		m := make(map[string][]string, len(h))
		for k, v := range h {
			m[strings.ToLower(k)] = v
		}
		return m
	}
	b, err := json.Marshal(map[string]any{
		"request":   map[string]any{"method": method, "uri": path, "headers": lower(env.ServiceReq.Headers)},
		"response":  map[string]any{"status": env.ClientRes.Status, "headers": lower(env.ClientRes.Headers)},
		"client_ip": "10.0.0.7",
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lastDecision is the last audited decision.
func (f *fixture) lastDecision(t *testing.T) audit.Event {
	t.Helper()
	evs := f.audit.Filter(isDecision)
	if len(evs) == 0 {
		t.Fatal("no decision audited")
	}
	return evs[len(evs)-1]
}

const chat = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`

func TestAccessAllowSetsIdentityForKong(t *testing.T) {
	f := newFixture(t, false)
	c := f.config(filepath.Join(f.dir, "config.yaml"))
	env := run(t, c, "POST", "/v1/chat/completions", map[string]string{
		"x-api-key":               f.keys["alice-key"],
		"x-modelguard-subject":    "root",
		"x-consumer-username":     "root",
		"x-credential-identifier": "forged",
		"x-anonymous-consumer":    "true",
	}, chat)

	if env.ClientRes.Status != 200 {
		t.Fatalf("status %d, body %s", env.ClientRes.Status, env.ClientRes.Body)
	}
	up := env.ServiceReq.Headers
	for name, want := range map[string]string{
		"x-modelguard-subject":     "alice",
		"x-modelguard-roles":       "chat-user",
		"x-modelguard-auth-method": "api_key",
		"x-modelguard-key-id":      "alice-key",
		"X-Consumer-ID":            subjectUUID("alice"),
		"X-Consumer-Custom-ID":     "alice",
		"X-Consumer-Username":      "alice",
		"X-Credential-Identifier":  "alice-key",
	} {
		if got := up.Get(name); got != want {
			t.Errorf("upstream %s = %q, want %q", name, got, want)
		}
	}
	for _, name := range []string{"x-api-key", "x-anonymous-consumer"} {
		if v := up.Values(name); len(v) > 0 {
			t.Errorf("upstream still has %s: %q", name, v)
		}
	}
	if got := env.Ctx.Store[groupsKey]; !reflect.DeepEqual(got, []any{"chat-user"}) {
		t.Errorf("ctx.shared.%s = %#v", groupsKey, got)
	}
	id := up.Get("x-modelguard-decision-id")
	// Access recorded the decision, the log phase its completion with the
	// final status.
	evs := f.audit.Filter(func(e audit.Event) bool { return e.DecisionID == id })
	if len(evs) != 2 || evs[0].Kind != audit.KindDecision || evs[0].Gateway != "kong" || evs[0].Status != 200 || evs[0].Result != "allow" || evs[0].Subject != "alice" {
		t.Fatalf("audit events %+v", evs)
	}
	if c := evs[1]; c.Kind != audit.KindCompletion || c.Gateway != "kong" || c.Status != 200 || c.Reason != "allowed" || c.Subject != "" || c.Path != "" {
		t.Errorf("completion record %+v", c)
	}
	if f.plugin.pending.len() != 0 {
		t.Errorf("%d decisions still waiting after the log phase", f.plugin.pending.len())
	}
}

// TestAuditBodyHash: with audit.body_sha256 the decision record, written in
// the access phase, carries the body's hash.
func TestAuditBodyHash(t *testing.T) {
	for _, hash := range []bool{false, true} {
		t.Run(fmt.Sprint("body_sha256=", hash), func(t *testing.T) {
			f := newFixture(t, false)
			cfg, err := os.ReadFile(filepath.Join(f.dir, "config.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			f.write(t, "hash.yaml", strings.Replace(string(cfg), `output: "off"`, fmt.Sprintf("output: \"off\"\n  body_sha256: %v", hash), 1))
			env := run(t, f.config(filepath.Join(f.dir, "hash.yaml")), "POST", "/v1/chat/completions", map[string]string{"x-api-key": f.keys["alice-key"]}, chat)
			if env.ClientRes.Status != 200 {
				t.Fatalf("status %d: %s", env.ClientRes.Status, env.ClientRes.Body)
			}
			evs := f.audit.Filter(isDecision)
			sum := sha256.Sum256([]byte(chat))
			want := ""
			if hash {
				want = hex.EncodeToString(sum[:])
			}
			if len(evs) != 1 || evs[0].BodySHA256 != want {
				t.Fatalf("audit %+v, want body hash %q", evs, want)
			}
		})
	}
}

func TestAccessAnonymous(t *testing.T) {
	f := newFixture(t, true)
	// A policy that lets anonymous callers list models.
	if err := os.MkdirAll(filepath.Join(f.dir, "open"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.write(t, "open/open.rego", "package modelguard.authz\n\ndecision := {\"allow\": input.request.method == \"GET\"}\n")
	cfg, err := os.ReadFile(filepath.Join(f.dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	f.write(t, "open.yaml", strings.Replace(string(cfg), "policy_dir: policy", "policy_dir: open", 1))
	env := run(t, f.config(filepath.Join(f.dir, "open.yaml")), "GET", "/v1/models",
		map[string]string{"x-consumer-id": "forged", "x-consumer-username": "forged", "x-credential-identifier": "forged"}, "")
	if env.ClientRes.Status != 200 {
		t.Fatalf("status %d, body %s", env.ClientRes.Status, env.ClientRes.Body)
	}
	up := env.ServiceReq.Headers
	if up.Get("X-Anonymous-Consumer") != "true" || up.Get("x-modelguard-auth-method") != "none" {
		t.Errorf("anonymous headers: %v", up)
	}
	for _, name := range []string{"x-consumer-id", "x-consumer-username", "x-credential-identifier"} {
		if v := up.Values(name); len(v) > 0 {
			t.Errorf("client-sent %s reached the upstream: %q", name, v)
		}
	}
	if _, ok := env.Ctx.Store[groupsKey]; ok {
		t.Errorf("groups set for an anonymous caller")
	}
}

func TestAccessDenies(t *testing.T) {
	f := newFixture(t, false)
	c := f.config(filepath.Join(f.dir, "config.yaml"))
	tests := []struct {
		name, method, path, body string
		headers                  map[string]string
		status                   int
		typ                      string
	}{
		{"no credential", "POST", "/v1/chat/completions", chat, nil, 401, "authentication_error"},
		{"unknown key", "POST", "/v1/chat/completions", chat, map[string]string{"x-api-key": "mg_test_nope"}, 401, "authentication_error"},
		{"read-only role", "POST", "/v1/chat/completions", chat, map[string]string{"x-api-key": f.keys["reader-key"]}, 403, "permission_error"},
		{"model not permitted", "POST", "/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, map[string]string{"x-api-key": f.keys["alice-key"]}, 403, "permission_error"},
		{"duplicate keys", "POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","model":"gpt-4o","messages":[]}`, map[string]string{"x-api-key": f.keys["alice-key"]}, 400, "invalid_request_error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := run(t, c, tc.method, tc.path, tc.headers, tc.body)
			assertDenied(t, env, tc.status, tc.typ)
			if tc.status == 401 && !strings.HasPrefix(env.ClientRes.Headers.Get("www-authenticate"), "Bearer") {
				t.Errorf("www-authenticate = %q", env.ClientRes.Headers.Get("www-authenticate"))
			}
			// The log phase found the denial by its response header; its
			// completion has the method and path when access did not read
			// them (no valid credential).
			ev := f.lastDecision(t)
			if ev.DecisionID == "" || env.ClientRes.Headers.Get("x-modelguard-decision-id") != ev.DecisionID || ev.Status != tc.status {
				t.Errorf("audited %+v, response header %q", ev, env.ClientRes.Headers.Get("x-modelguard-decision-id"))
			}
			done := f.audit.Filter(func(e audit.Event) bool { return e.Kind == audit.KindCompletion && e.DecisionID == ev.DecisionID })
			if len(done) != 1 || done[0].Status != tc.status || ev.Path+done[0].Path != tc.path || ev.Method+done[0].Method != tc.method {
				t.Errorf("decision %+v, completions %+v", ev, done)
			}
		})
	}
}

// assertDenied checks an exit with the core's JSON error body; go-pdk's
// test environment skips the upstream and the log phase after an exit.
func assertDenied(t *testing.T, env *pdktest.TestEnv, status int, typ string) {
	t.Helper()
	if env.ClientRes.Status != status {
		t.Fatalf("status %d, want %d (body %s)", env.ClientRes.Status, status, env.ClientRes.Body)
	}
	if ct := env.ClientRes.Headers.Get("content-type"); ct != "application/json" {
		t.Errorf("content-type %q", ct)
	}
	var body struct {
		Error struct{ Message, Type, Code string }
	}
	if err := json.Unmarshal(env.ClientRes.Body, &body); err != nil || body.Error.Type != typ || body.Error.Message == "" {
		t.Errorf("body %s (%v), want an error of type %s", env.ClientRes.Body, err, typ)
	}
	if env.IsRunning() {
		t.Errorf("the request went on after the denial")
	}
}

// TestAccessRefusesHeaderInjection: a JWT subject with CR LF must not
// become an upstream header line.
func TestAccessRefusesHeaderInjection(t *testing.T) {
	f := newFixture(t, false)
	secret := strings.Repeat("s", 32)
	f.write(t, "jwt.secret", secret)
	cfg, err := os.ReadFile(filepath.Join(f.dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	f.write(t, "jwt.yaml", strings.Replace(string(cfg), "authentication:\n", `authentication:
  jwt:
    issuers:
      - {issuer: "https://idp.test", audiences: [models], algorithms: [HS256], keys: [{secret_file: jwt.secret}]}
`, 1))
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": "https://idp.test", "aud": "models", "sub": "alice\r\nx-admin: true", "roles": []string{"chat-user"},
		"exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	env := run(t, f.config(filepath.Join(f.dir, "jwt.yaml")), "POST", "/v1/chat/completions", map[string]string{"authorization": "Bearer " + tok}, chat)
	// The core refuses the subject (401); the adapter's own check of header
	// values stays as a second line of defence.
	assertDenied(t, env, 401, "authentication_error")
	if env.ServiceReq.Headers.Get("x-admin") != "" || env.ServiceReq.Headers.Get("x-modelguard-subject") != "" {
		t.Fatalf("upstream headers %v", env.ServiceReq.Headers)
	}
	if ev := f.lastDecision(t); ev.Reason != "jwt_bad_claim" || ev.Result != "deny" {
		t.Fatalf("audited %+v", ev)
	}
}

func TestAccessFailsClosed(t *testing.T) {
	f := newFixture(t, false)
	f.write(t, "invalid.yaml", "authentication:\n  api_keys:\n    file: keys.yaml\nauthorization:\n  policy_dir: policy\n  timeout: 1h\n")
	f.write(t, "unknown-key.yaml", strings.Replace(testConfig, "authorization:", "authorisation:", 1))
	good := filepath.Join(f.dir, "config.yaml")
	alice := map[string]string{"x-api-key": f.keys["alice-key"]}
	tests := []struct {
		name  string
		path  string
		panic bool
	}{
		{"missing configuration file", filepath.Join(f.dir, "nope.yaml"), false},
		{"relative path", "config.yaml", false},
		{"configuration failing validation", filepath.Join(f.dir, "invalid.yaml"), false},
		{"unknown configuration key", filepath.Join(f.dir, "unknown-key.yaml"), false},
		{"panic in the handler", good, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.panic {
				f.plugin.beforeEvaluate = func() { panic("injected") }
				defer func() { f.plugin.beforeEvaluate = nil }()
			}
			// Every request, not just the first, is denied.
			for range 2 {
				env := run(t, f.config(tc.path), "POST", "/v1/chat/completions", alice, chat)
				assertDenied(t, env, 503, "server_error")
				if env.ServiceReq.Headers.Get("x-modelguard-subject") != "" {
					t.Errorf("identity headers set on a failed request")
				}
			}
		})
	}
	if env := run(t, f.config(good), "POST", "/v1/chat/completions", alice, chat); env.ClientRes.Status != 200 {
		t.Fatalf("after the failures a good request got %d", env.ClientRes.Status)
	}
}

// TestAccessPanicIsAudited: a denial caused by a panic is recorded like
// any other, as a 503 internal_error, and completed in the log phase.
func TestAccessPanicIsAudited(t *testing.T) {
	f := newFixture(t, false)
	f.plugin.beforeEvaluate = func() { panic("injected") }
	env := run(t, f.config(filepath.Join(f.dir, "config.yaml")), "POST", "/v1/chat/completions", map[string]string{"x-api-key": f.keys["alice-key"]}, chat)
	assertDenied(t, env, 503, "server_error")
	ev := f.lastDecision(t)
	if ev.Reason != "internal_error" || ev.Result != "deny" || ev.Status != 503 {
		t.Fatalf("audited %+v", ev)
	}
	// The panic came before the path was read: the completion has it.
	done := f.audit.Filter(func(e audit.Event) bool { return e.Kind == audit.KindCompletion && e.DecisionID == ev.DecisionID })
	if len(done) != 1 || done[0].Path != "/v1/chat/completions" || done[0].Status != 503 {
		t.Fatalf("completions %+v", done)
	}
}

// failingTrail is an audit trail that takes no record: it keeps what it
// was given and fails.
type failingTrail struct{ testkit.EventLog[audit.Event] }

func (f *failingTrail) Record(e *audit.Event) error {
	f.EventLog.Record(e)
	return errors.New("disk full")
}

// TestAccessAllowWaitsForItsRecord: an allow whose record the trail cannot
// take is not let through (503 audit_unavailable, as Envoy answers); a
// denial is answered as decided.
func TestAccessAllowWaitsForItsRecord(t *testing.T) {
	f := newFixture(t, false)
	trail := &failingTrail{}
	f.plugin = New(Options{OpenAudit: func(*config.Config) (policy.AuditSink, io.Closer, error) { return trail, nil, nil }})
	t.Cleanup(f.plugin.Close)
	f.plugin.noRequestLine = true
	c := f.config(filepath.Join(f.dir, "config.yaml"))
	env := run(t, c, "POST", "/v1/chat/completions", map[string]string{"x-api-key": f.keys["alice-key"]}, chat)
	assertDenied(t, env, 503, "server_error")
	if env.ServiceReq.Headers.Get("x-modelguard-subject") != "" {
		t.Errorf("identity headers set on a request whose record failed")
	}
	assertDenied(t, run(t, c, "POST", "/v1/chat/completions", nil, chat), 401, "authentication_error")
	// What the trail was asked to take: the allow, then the completion
	// saying what the client got; the denial and its completion.
	var got []string
	for _, e := range trail.Events() {
		got = append(got, fmt.Sprintf("%s %s %d %s", e.Kind, e.Result, e.Status, e.Reason))
	}
	want := []string{"decision allow 200 allowed", "completion  503 audit_unavailable", "decision deny 401 credentials_missing", "completion  401 credentials_missing"}
	if !slices.Equal(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
}

func TestCoreSharedAndRetried(t *testing.T) {
	f := newFixture(t, false)
	now := time.Now()
	f.plugin.now = func() time.Time { return now }
	path := filepath.Join(f.dir, "later.yaml")
	a, b := f.config(path), f.config(filepath.Join(f.dir, ".", "sub", "..", "later.yaml"))
	if a.resolve() != b.resolve() {
		t.Fatal("two instances with the same config_path have different cores")
	}
	first := a.resolve().get()
	if first.err == nil {
		t.Fatal("a missing file loaded")
	}
	// The operator fixes the file: it takes effect after retryAfter, not
	// on every request before.
	cfg, err := os.ReadFile(filepath.Join(f.dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(retryAfter)
	second := b.resolve().get()
	if second == first || second.err == nil || second.failures != 1 {
		t.Fatalf("retry after retryAfter: %+v", second)
	}
	f.write(t, "later.yaml", string(cfg))
	// The wait doubles after each failure.
	now = now.Add(retryAfter)
	if s := b.resolve().get(); s != second {
		t.Fatal("a failed load was retried before the doubled wait")
	}
	now = now.Add(retryAfter)
	s := b.resolve().get()
	if s.err != nil || s.engine == nil {
		t.Fatalf("retry after the fix: %v", s.err)
	}
	if a.resolve().get() != s {
		t.Fatal("the instances do not share the reloaded core")
	}
	if s.engine.MaxBodyBytes() != 1<<20 {
		t.Errorf("max body %d", s.engine.MaxBodyBytes())
	}
	if d := s.engine.Deny("id", 503, "r", "m"); !slices.Equal(d.ResponseHeaders, []policy.Header{{Name: "x-modelguard-decision-id", Value: "id"}}) {
		t.Errorf("denial headers %v", d.ResponseHeaders)
	}
}

func TestPendingBounds(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	p := newPending(3, time.Minute)
	put := func(id string, at time.Time) []*entry {
		return p.put(&entry{id: id, at: at, d: &policy.Decision{ID: id, Status: 200}})
	}
	ids := func(es []*entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.id)
		}
		return out
	}
	if ex := put("a", t0); ex != nil {
		t.Fatalf("expired %v", ids(ex))
	}
	put("b", t0.Add(time.Second))
	put("c", t0.Add(2*time.Second))
	if ex := put("d", t0.Add(3*time.Second)); !reflect.DeepEqual(ids(ex), []string{"a"}) {
		t.Fatalf("over the size bound: expired %v, want [a]", ids(ex))
	}
	if e := p.take("c", func(*entry) bool { return true }); e == nil || e.id != "c" {
		t.Fatalf("take c: %v", e)
	}
	if e := p.take("c", func(*entry) bool { return true }); e != nil {
		t.Fatal("taken twice")
	}
	p.replace("b", &policy.Decision{ID: "b", Status: 503})
	if ex := put("e", t0.Add(time.Minute+2*time.Second)); !reflect.DeepEqual(ids(ex), []string{"b"}) || ex[0].d.Status != 503 {
		t.Fatalf("over the age bound: expired %v", ids(ex))
	}
	if d := p.drain(); !reflect.DeepEqual(ids(d), []string{"d", "e"}) || p.len() != 0 {
		t.Fatalf("drain %v, left %d entries", ids(d), p.len())
	}
}

func TestPendingConcurrent(t *testing.T) {
	p := newPending(64, time.Hour)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int{}
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				id := fmt.Sprintf("%d-%d", w, i)
				for _, e := range p.put(&entry{id: id, at: time.Now(), d: &policy.Decision{ID: id}}) {
					mu.Lock()
					seen[e.id]++
					mu.Unlock()
				}
				if i%2 == 0 {
					if e := p.take(id, func(*entry) bool { return true }); e != nil {
						mu.Lock()
						seen[e.id]++
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s left the map %d times", id, n)
		}
	}
	if p.len() > 64 {
		t.Fatalf("len %d over the bound", p.len())
	}
}

func TestReadSpilled(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "body")
	if err := os.WriteFile(file, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path      string
		max       int
		body      string
		truncated bool
		err       bool
	}{
		{file, 10, "0123456789", false, false},
		{file, 100, "0123456789", false, false},
		{file, 4, "0123", true, false},
		{filepath.Join(dir, "missing"), 10, "", false, true},
		{dir, 10, "", false, true}, // a directory cannot be read
	}
	for _, tc := range tests {
		b, truncated, err := readSpilled(tc.path, tc.max)
		if (err != nil) != tc.err || string(b) != tc.body || truncated != tc.truncated {
			t.Errorf("readSpilled(%s, %d) = %q, %v, %v", tc.path, tc.max, b, truncated, err)
		}
	}
}

func TestSubjectUUID(t *testing.T) {
	a, b := subjectUUID("alice"), subjectUUID("bob")
	if a == b || a != subjectUUID("alice") {
		t.Fatalf("not a stable per-subject id: %s %s", a, b)
	}
	if len(a) != 36 || a[14] != '5' || !strings.ContainsRune("89ab", rune(a[19])) || strings.Count(a, "-") != 4 {
		t.Fatalf("%s is not a version 5 UUID", a)
	}
	// Consumer ids outlive a release: Kong's other plugins key on them.
	if a != "608dc605-e5e6-5dff-ac0d-f543703029bb" {
		t.Fatalf("the consumer id of alice changed: %s", a)
	}
}

// recorded keeps the final status of each completed decision.
type recorded struct {
	mu       sync.Mutex
	statuses map[string]int
}

func (r *recorded) RecordCompletion(d *policy.Decision, c policy.Completion) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.statuses[d.ID]; dup {
		panic("completed twice: " + d.ID)
	}
	r.statuses[d.ID] = c.Status
	return nil
}

// TestLogPhaseFindsADecisionOnlyByItsOwnCarrier: a denial is found by the
// decision id header of its response (set by exit), an allow by the header
// upstream (set_headers replaced any client copy), and the serialize value
// when access had to set it; a client sending the header of another
// waiting decision does not reach it.
func TestLogPhaseFindsADecisionOnlyByItsOwnCarrier(t *testing.T) {
	f := newFixture(t, false)
	c := f.config(filepath.Join(f.dir, "config.yaml"))
	rec := &recorded{statuses: map[string]int{}}
	put := func(id string, allow bool) {
		f.plugin.pending.put(&entry{id: id, at: time.Now(), rec: rec, d: &policy.Decision{ID: id, Allow: allow, Status: 200}})
	}
	put("allowed-1", true)
	put("allowed-2", true)
	put("denied-1", false)
	put("denied-2", false)
	put("carried", true)
	const h = "x-modelguard-decision-id"
	for _, tc := range []struct {
		name      string
		serialize string
		recorded  string // "" for none
	}{
		{"a client copy of an allow's id on a denied request", `{"request":{"headers":{"` + h + `":"allowed-1"}},"response":{"status":401,"headers":{"` + h + `":"denied-1"}}}`, "denied-1"},
		{"a denial's id upstream", `{"request":{"headers":{"` + h + `":"denied-2"}},"response":{"status":200}}`, ""},
		{"an allow's id in the response (an upstream echo)", `{"request":{"headers":{}},"response":{"status":200,"headers":{"` + h + `":["allowed-2","x"]}}}`, ""},
		{"an allow, by its upstream header", `{"request":{"headers":{"` + h + `":"allowed-2"}},"response":{"status":502,"headers":{"` + h + `":"x"}}}`, "allowed-2"},
		{"the serialize value", `{"request":{"headers":{}},"response":{"status":429},"modelguard_decision_id":"carried"}`, "carried"},
		{"nothing to find", `{"request":{"headers":{}},"response":{"status":200}}`, ""},
	} {
		before := len(rec.statuses)
		if err := f.plugin.logged(c, tc.serialize); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		switch {
		case tc.recorded == "" && len(rec.statuses) != before:
			t.Errorf("%s: recorded %v", tc.name, rec.statuses)
		case tc.recorded != "" && rec.statuses[tc.recorded] == 0:
			t.Errorf("%s: %s not recorded (%v)", tc.name, tc.recorded, rec.statuses)
		}
	}
	if rec.statuses["allowed-2"] != 502 || rec.statuses["carried"] != 429 || rec.statuses["denied-1"] != 401 {
		t.Errorf("statuses %v", rec.statuses)
	}
	if err := f.plugin.logged(c, `{"request":`); err == nil {
		t.Error("malformed serialize output accepted")
	}
}
