package rego

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/rego/inputdoc"
)

func TestReadsOf(t *testing.T) {
	tests := []struct {
		name, module string
		paths        string // space-separated, "" for none
		uncacheable  string // "" when cacheable
	}{
		{"constant paths", `package modelguard.authz
allow if { input.request.method == "POST"; input.subject.roles[_] == "admin" }`,
			"input.request.method input.subject.roles", ""},
		{"computed key reads the subtree before it", `package modelguard.authz
allow if { some h; input.request.headers[h] == "x" }`, "input.request.headers", ""},
		{"a key from data is computed", `package modelguard.authz
allow if input.request.headers[data.h] == "x"`, "input.request.headers", ""},
		{"a number key reads the array", `package modelguard.authz
allow if input.subject.roles[0] == "admin"`, "input.subject.roles", ""},
		{"inside a path already read", `package modelguard.authz
allow if { input.model.name == "a"; count(input.model) == 2 }`, "input.model", ""},
		{"object.get with a constant path", `package modelguard.authz
allow if "a" in object.get(input, ["subject", "roles"], [])`, "input.subject.roles", ""},
		{"object.get with a computed path", `package modelguard.authz
allow if { some k in ["a"]; object.get(input.body, [k], 0) == 1 }`, "input.body", ""},
		{"import of input", `package modelguard.authz
import input.subject as s
allow if s.id == "a"`, "input.subject", ""},
		{"input passed whole", `package modelguard.authz
allow if json.marshal(input) != ""`, "input", "reads input.request.id"},
		{"all of the request", `package modelguard.authz
allow if count(input.request) > 0`, "input.request", "reads input.request.id"},
		{"the request id", `package modelguard.authz
allow if input.request.id != ""`, "input.request.id", "reads input.request.id"},
		{"time", `package modelguard.authz
allow if time.now_ns() > 0`, "", "calls time.now_ns"},
		{"time as a statement", `package modelguard.authz
allow if { time.now_ns(t); t > 0 }`, "", "calls time.now_ns"},
		{"time in a function", `package modelguard.authz
late(x) if time.now_ns() > x
allow if not late(input.body.max_tokens)`, "input.body.max_tokens", "calls time.now_ns"},
		{"http.send", `package modelguard.authz
allow if http.send({"method": "GET", "url": "http://127.0.0.1:1"}).status_code == 200`, "", "calls http.send"},
		{"rand", `package modelguard.authz
allow if rand.intn("x", 2) == 0`, "", "calls rand.intn"},
		{"uuid", `package modelguard.authz
allow if uuid.rfc4122("x") != ""`, "", "calls uuid.rfc4122"},
		{"jwt decode_verify reads the clock", `package modelguard.authz
allow if io.jwt.decode_verify(input.request.headers.t, {"secret": "s"})[0]`, "input.request.headers.t", "calls io.jwt.decode_verify"},
		{"certificate verification reads the clock", `package modelguard.authz
allow if crypto.x509.parse_and_verify_certificates(input.request.tls_principal)[0]`, "input.request.tls_principal", "calls crypto.x509.parse_and_verify_certificates"},
		{"print", `package modelguard.authz
allow if { print(input.subject.id); true }`, "input.subject.id", "calls print"},
		{"with", `package modelguard.authz
a if input.subject.id == "a"
allow if a with input.subject.id as "a"`, "input.subject.id", "uses with"},
		{"pure built-ins", `package modelguard.authz
allow if { io.jwt.verify_hs256(input.request.headers.t, "s"); lower(input.subject.id) == "a" }`, "input.request.headers.t input.subject.id", ""},
		{"no input", `package modelguard.authz
allow if data.x`, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := compileModule(t, tc.module)
			var got []string
			for _, r := range p.reads.paths {
				got = append(got, r.String())
			}
			if want := strings.Fields(tc.paths); !slices.Equal(got, want) {
				t.Errorf("paths = %q, want %q", got, want)
			}
			if ok, why := p.Cacheable(); why != tc.uncacheable || ok != (tc.uncacheable == "") {
				t.Errorf("Cacheable() = %v, %q, want %q", ok, why, tc.uncacheable)
			}
		})
	}
}

func TestReadsOfExamplePolicy(t *testing.T) {
	p, err := Compile(context.Background(), examplePolicy, "data.modelguard.authz.decision")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range p.reads.paths {
		got = append(got, r.String())
	}
	want := []string{"input.body.max_tokens", "input.model", "input.request.method", "input.subject.roles"}
	if !slices.Equal(got, want) {
		t.Fatalf("paths = %q, want %q", got, want)
	}
	if ok, why := p.Cacheable(); !ok {
		t.Fatalf("example policy not cacheable: %s", why)
	}
}

// TestCacheKey: two inputs share a key exactly when they agree at every
// path the policy reads.
func TestCacheKey(t *testing.T) {
	c := newDecisionCache(1, []ast.Ref{ast.MustParseRef("input.a"), ast.MustParseRef("input.b.c")})
	tests := []struct {
		name   string
		x, y   string
		shared bool
	}{
		{"equal", `{"a": 1, "b": {"c": "x"}}`, `{"a": 1, "b": {"c": "x"}}`, true},
		{"other members differ", `{"a": 1, "b": {"c": "x", "d": 1}, "z": 2}`, `{"a": 1, "b": {"c": "x"}}`, true},
		{"object order", `{"a": {"p": 1, "q": 2}}`, `{"a": {"q": 2, "p": 1}}`, true},
		{"set order", `{"a": {1, 2}}`, `{"a": {2, 1}}`, true},
		{"a value differs", `{"a": 1, "b": {"c": "x"}}`, `{"a": 2, "b": {"c": "x"}}`, false},
		{"number text", `{"a": 1}`, `{"a": 1.0}`, false},
		{"string or number", `{"a": 1}`, `{"a": "1"}`, false},
		{"absent or null", `{}`, `{"a": null}`, false},
		{"absent or false", `{}`, `{"a": false}`, false},
		{"array or set", `{"a": [1]}`, `{"a": {1}}`, false},
		{"nested absent", `{"b": {}}`, `{"b": {"d": 1}}`, true},
		{"parent absent or empty", `{}`, `{"b": {}}`, false},
		{"parent is not an object", `{"b": ["c"]}`, `{"b": "c"}`, false},
		{"set membership", `{"b": {"c"}}`, `{"b": {"d"}}`, false},
		{"string boundaries", `{"a": ["ab", "c"]}`, `{"a": ["a", "bc"]}`, false},
		{"empty string or absent member", `{"a": {"": ""}}`, `{"a": {}}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kx, okx := c.key(value(t, tc.x))
			ky, oky := c.key(value(t, tc.y))
			if !okx || !oky {
				t.Fatal("no key")
			}
			if (kx == ky) != tc.shared {
				t.Fatalf("same key = %v, want %v", kx == ky, tc.shared)
			}
		})
	}
	// A value that is not data (a variable) has no key: it is evaluated.
	if _, ok := c.key(value(t, `{"a": x}`)); ok {
		t.Fatal("an input holding a variable got a key")
	}
}

// cachedEngine opens dir with a decision cache, counting hits.
func cachedEngine(t testing.TB, dir, query string, opts Options) (*Engine, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	opts.OnCacheLookup = func(hit bool) {
		if hit {
			hits.Add(1)
		}
	}
	// A generous timeout: a loaded machine must not fail evaluations.
	s := Settings{PolicyDir: dir, Query: query, Timeout: MaxTimeout, DecisionCache: CacheSettings{Enabled: true, Size: 64}}
	e, err := Open(t.Context(), s, "", opts)
	if err != nil {
		t.Fatal(err)
	}
	return e, &hits
}

// propertyPolicies read input in every way the analysis distinguishes;
// each defines data.modelguard.authz.decision.
var propertyPolicies = map[string]string{
	"headers by computed key": `package modelguard.authz
default decision := false
decision if { some h, v in input.request.headers; startswith(h, "x-"); v == "on" }`,
	"object.get and defaults": `package modelguard.authz
decision := {"allow": count(r) > 0, "reason": concat(",", r), "headers": {"x-model": object.get(input, ["model", "name"], "none")}} if {
	r := [x | some x in object.get(input, ["subject", "roles"], [])]
}`,
	"nested and indexed": `package modelguard.authz
decision := {"allow": input.subject.roles[0] == "admin", "status": 429, "message": sprintf("%v", [input.body])} if true`,
	"import and numbers": `package modelguard.authz
import input.body as b
decision := {"allow": b.max_tokens < 100, "reason": sprintf("%v", [b.max_tokens])} if true`,
}

// TestCacheProperty runs random request streams through a policy with and
// without the decision cache: every decision must be the same.
func TestCacheProperty(t *testing.T) {
	dirs := map[string]string{"example": examplePolicy}
	for name, module := range propertyPolicies {
		dirs[name] = policyDir(t, map[string]string{"p.rego": module})
	}
	for name, dir := range dirs {
		t.Run(name, func(t *testing.T) {
			e, hits := cachedEngine(t, dir, "data.modelguard.authz.decision", Options{})
			p := e.current.Load()
			if p.cache == nil {
				t.Fatal("policy not cached")
			}
			rng := rand.New(rand.NewPCG(1, uint64(len(name))))
			for i := range 3000 {
				in := randomInput(t, rng)
				got, gotErr := e.Eval(t.Context(), in)
				want, wantErr := p.Eval(t.Context(), in)
				if (gotErr != nil) != (wantErr != nil) || !reflect.DeepEqual(got, want) {
					t.Fatalf("request %d: cached %+v, %v; uncached %+v, %v\ninput %v", i, got, gotErr, want, wantErr, in)
				}
			}
			if hits.Load() == 0 {
				t.Fatal("no cache hits: the property was not exercised")
			}
		})
	}
}

// randomInput draws a request from small domains, so that streams repeat
// and differ in every member a policy may read.
func randomInput(t testing.TB, rng *rand.Rand) ast.Value {
	pick := func(xs ...any) any { return xs[rng.IntN(len(xs))] }
	roles := []any{}
	for range rng.IntN(3) {
		roles = append(roles, pick("chat-user", "admin", "reader", "embed-only", "nobody"))
	}
	headers := map[string]any{"content-type": "application/json"}
	for _, h := range []string{"x-a", "x-b", "y-c"} {
		if rng.IntN(2) == 0 {
			headers[h] = pick("on", "off")
		}
	}
	body := map[string]any{"stream": pick(true, false), "messages": rng.IntN(3)}
	if rng.IntN(2) == 0 {
		body["max_tokens"] = pick(json.Number("50"), json.Number("150"), json.Number("1e3"))
	}
	in := map[string]any{
		"gateway": "envoy",
		"subject": map[string]any{"id": pick("alice", "bob"), "roles": roles, "auth_method": "api_key"},
		"request": map[string]any{
			"id": rng.Int64(), "method": pick("GET", "POST", "HEAD"),
			"path": pick("/v1/chat/completions", "/v1/models"), "headers": headers,
		},
		"body": body,
	}
	switch rng.IntN(4) {
	case 0:
	case 1:
		in["model"] = map[string]any{"name": "", "operation": "list"}
	default:
		in["model"] = map[string]any{"name": pick("gpt-4o-mini", "llama-3.1-8b-instruct", "other"), "operation": pick("chat", "embeddings")}
	}
	v, err := ast.InterfaceToValue(in)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestUncacheablePolicyIsEvaluatedEachTime: a policy reading the clock
// gives a new answer each time, cache or not.
func TestUncacheablePolicyIsEvaluatedEachTime(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": `package modelguard.authz
decision := {"allow": true, "reason": sprintf("%d", [time.now_ns()])} if input.subject.id == "a"`})
	var lookups atomic.Int64
	e, err := Open(t.Context(), Settings{PolicyDir: dir, Query: "data.modelguard.authz.decision", Timeout: MaxTimeout, DecisionCache: CacheSettings{Enabled: true, Size: 64}}, "",
		Options{OnCacheLookup: func(bool) { lookups.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	in := value(t, `{"subject": {"id": "a"}}`)
	seen := map[string]bool{}
	for range 20 {
		r, err := e.Eval(t.Context(), in)
		if err != nil || !r.Allow {
			t.Fatalf("got %+v, %v", r, err)
		}
		seen[r.Reason] = true
	}
	if len(seen) < 2 || lookups.Load() != 0 {
		t.Fatalf("%d distinct answers in 20, %d cache lookups: the clock was cached", len(seen), lookups.Load())
	}
}

// TestReloadedPolicyDecidesAtOnce: once a new revision is in force, no
// decision of the old one is served.
func TestReloadedPolicyDecidesAtOnce(t *testing.T) {
	allow := `package modelguard.authz
allow if input.subject.id == "a"`
	deny := `package modelguard.authz
allow if input.subject.id == "b"`
	dir := policyDir(t, map[string]string{"p.rego": allow})
	opts, events := reloads(t.Context())
	e, hits := cachedEngine(t, dir, "", opts)
	in := value(t, `{"subject": {"id": "a"}}`)
	for range 2 {
		if r, err := e.Eval(t.Context(), in); err != nil || !r.Allow {
			t.Fatalf("before the reload: %+v, %v", r, err)
		}
	}
	if hits.Load() != 1 {
		t.Fatalf("%d hits, want 1", hits.Load())
	}
	writeFiles(t, dir, map[string]string{"p.rego": deny})
	if ev := nextReload(t, events); ev.err != nil {
		t.Fatal(ev.err)
	}
	if r, err := e.Eval(t.Context(), in); err != nil || r.Allow {
		t.Fatalf("after the reload: %+v, %v", r, err)
	}
}

// TestDropDecisions empties the cache: the next lookup misses.
func TestDropDecisions(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": `package modelguard.authz
allow if input.subject.id == "a"`})
	e, hits := cachedEngine(t, dir, "", Options{})
	in := value(t, `{"subject": {"id": "a"}}`)
	e.Eval(t.Context(), in)
	e.DropDecisions()
	e.Eval(t.Context(), in)
	if hits.Load() != 0 {
		t.Fatal("a decision survived DropDecisions")
	}
	e.Eval(t.Context(), in)
	if hits.Load() != 1 {
		t.Fatal("the cache does not keep decisions")
	}
}

// TestCacheKeepsOnlySuccesses: a failed evaluation (here, a cancelled
// context) is not kept, and a cancelled request is refused even when its
// decision is cached.
func TestCacheKeepsOnlySuccesses(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": `package modelguard.authz
allow if input.subject.id == "a"`})
	e, hits := cachedEngine(t, dir, "", Options{})
	in := value(t, `{"subject": {"id": "a"}}`)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := e.Eval(ctx, in); err == nil {
		t.Fatal("cancelled evaluation succeeded")
	}
	if r, err := e.Eval(t.Context(), in); err != nil || !r.Allow || hits.Load() != 0 {
		t.Fatalf("after a failure: %+v, %v, %d hits", r, err, hits.Load())
	}
	if _, err := e.Eval(ctx, in); err == nil {
		t.Fatal("a cancelled request got a cached decision")
	}
}

func TestCacheSettingsValidate(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		c    CacheSettings
		want string
	}{
		{CacheSettings{Enabled: true, Size: 1}, ""},
		{CacheSettings{Enabled: false, Size: 0}, ""},
		{CacheSettings{Enabled: true, Size: 0}, "decision_cache.size"},
		{CacheSettings{Enabled: true, Size: MaxCacheSize + 1}, "decision_cache.size"},
	} {
		errs := Settings{PolicyDir: dir, Input: ShapeModelguard, Query: DefaultQuery, Timeout: DefaultTimeout, DecisionCache: tc.c}.Validate("")
		if got := fmtErrs(errs); !strings.Contains(got, tc.want) || (tc.want == "") != (got == "") {
			t.Errorf("%+v: errors %q, want %q", tc.c, got, tc.want)
		}
	}
}

func fmtErrs(errs []error) string {
	var s []string
	for _, e := range errs {
		s = append(s, e.Error())
	}
	return strings.Join(s, "; ")
}

// chatInput is a chat completion request as the example policy sees it,
// written as the input builders write one; it counts its builds.
type chatInput struct {
	roles  []string
	builds int
}

func (c *chatInput) WriteInput(w inputdoc.Writer, _ Inputs) error {
	if _, ok := w.(*inputdoc.Builder); ok {
		c.builds++
	}
	if w.Object(inputdoc.Name("subject")) {
		w.String(inputdoc.Name("id"), "alice")
		w.Strings(inputdoc.Name("roles"), c.roles)
		w.End()
	}
	if w.Object(inputdoc.Name("request")) {
		w.String(inputdoc.Name("method"), "POST")
		w.String(inputdoc.Name("path"), "/v1/chat/completions")
		w.End()
	}
	if w.Object(inputdoc.Name("model")) {
		w.String(inputdoc.Name("name"), "gpt-4o-mini")
		w.String(inputdoc.Name("operation"), "chat")
		w.End()
	}
	if w.Object(inputdoc.Name("body")) {
		w.Bool(inputdoc.Name("stream"), false)
		w.Int(inputdoc.Name("max_tokens"), 128)
		w.End()
	}
	return nil
}

// TestCacheHitBuildsNoInput: a decision from the cache is found without
// building the input; a miss builds it once, and so does every request
// without the cache.
func TestCacheHitBuildsNoInput(t *testing.T) {
	for _, cache := range []bool{true, false} {
		s := Settings{PolicyDir: examplePolicy, Query: "data.modelguard.authz.decision", Timeout: MaxTimeout, DecisionCache: CacheSettings{Enabled: cache, Size: 16}}
		e, err := Open(t.Context(), s, "", Options{})
		if err != nil {
			t.Fatal(err)
		}
		in := &chatInput{roles: []string{"chat-user"}}
		for i := range 3 {
			r, input, err := e.EvalInput(t.Context(), in)
			if err != nil || !r.Allow {
				t.Fatalf("cache %v, request %d: %+v, %v", cache, i, r, err)
			}
			wantBuilds, built := 1, i == 0
			if !cache {
				wantBuilds, built = i+1, true
			}
			if in.builds != wantBuilds || (input != nil) != built {
				t.Fatalf("cache %v, request %d: %d builds, input %v", cache, i, in.builds, input)
			}
		}
	}
}

// BenchmarkEvalInputCached is a decision of the example policy from the
// cache, its key written from the request's input without building it.
func BenchmarkEvalInputCached(b *testing.B) {
	s := Settings{PolicyDir: examplePolicy, Query: "data.modelguard.authz.decision", DecisionCache: CacheSettings{Enabled: true, Size: 16}}
	e, err := Open(b.Context(), s, "", Options{})
	if err != nil {
		b.Fatal(err)
	}
	in := &chatInput{roles: []string{"chat-user"}}
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if r, _, err := e.EvalInput(ctx, in); err != nil || !r.Allow {
			b.Fatalf("%+v, %v", r, err)
		}
	}
	if in.builds != 1 {
		b.Fatalf("%d builds, want 1", in.builds)
	}
}
