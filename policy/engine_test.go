package policy

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/jwtauth"
	"github.com/modelguard/modelguard/policy/models"
	"github.com/modelguard/modelguard/policy/rego"
	"github.com/modelguard/modelguard/test/testkit"
)

// Fakes for the steps, to reach failure paths the real ones cannot be made
// to show on demand (panics, evaluation errors). The real steps are tested
// in their packages and end to end in test/.
type fakeKeys map[string]*apikey.Key

func (f fakeKeys) Lookup(key string) (*apikey.Key, error) {
	if k, ok := f[key]; ok {
		return k, nil
	}
	return nil, &apikey.Error{Reason: "api_key_unknown", Err: errors.New("unknown")}
}

type fakeTokens struct{}

// cachedIdentity is handed out for every "eyJ.cached.sig", as the
// verified-token cache does.
var cachedIdentity = &jwtauth.Identity{Subject: "carol", Roles: []string{"chat-user"}, Issuer: "https://idp",
	Claims: map[string]any{"sub": "carol", "tier": "gold"}}

func (fakeTokens) Verify(_ context.Context, tok string) (*jwtauth.Identity, error) {
	if tok == "eyJ.cached.sig" {
		return cachedIdentity, nil
	}
	if tok == "eyJ.crlf.sig" {
		return &jwtauth.Identity{Subject: "alice\r\nx-modelguard-roles: admin", Roles: []string{"chat-user"}, Issuer: "https://idp"}, nil
	}
	if tok == "eyJ.comma.sig" {
		return &jwtauth.Identity{Subject: "alice", Roles: []string{"chat-user,admin"}, Issuer: "https://idp"}, nil
	}
	if tok == "eyJ.good.sig" {
		return &jwtauth.Identity{Subject: "alice", Roles: []string{"chat-user"}, Issuer: "https://idp"}, nil
	}
	return nil, &jwtauth.Error{Reason: "jwt_bad_signature", Err: errors.New("bad")}
}

type authzFunc func(ctx context.Context, input ast.Value) (rego.Result, error)

func (f authzFunc) EvalInput(ctx context.Context, in rego.Input) (rego.Result, ast.Value, error) {
	input, err := rego.BuildInput(in, rego.AllInputs)
	if err != nil {
		return rego.Result{}, nil, err
	}
	r, err := f(ctx, input)
	return r, input, err
}

func (f authzFunc) Eval(ctx context.Context, input ast.Value) (rego.Result, error) {
	return f(ctx, input)
}

// testCatalog is the real model catalog with one chat model.
func testCatalog(t *testing.T) *models.Catalog {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse([]byte(`authentication: {allow_anonymous: true}
authorization: {policy_dir: .}
models:
  - {name: gpt-4o-mini, operation: chat}
`), "config.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := models.Open(context.Background(), cfg.ModelSettings(), cfg.Dir, models.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testEngine(t *testing.T, a authorizer) (*Engine, *testkit.EventLog[audit.Event]) {
	rec := &testkit.EventLog[audit.Event]{}
	e := &Engine{
		tokens:        fakeTokens{},
		keys:          fakeKeys{"mg_alice": {ID: "k-alice", Subject: "alice", Roles: []string{"chat-user"}}},
		authz:         a,
		models:        testCatalog(t),
		apiKeyHeader:  "x-api-key",
		bearerKeys:    true,
		maxCredential: 64,
		identity: config.IdentityHeaders{Subject: "x-modelguard-subject", Roles: "x-modelguard-roles",
			AuthMethod: "x-modelguard-auth-method", KeyID: "x-modelguard-key-id", DecisionID: "x-modelguard-decision-id"},
		audit: rec,
	}
	e.setDefaults()
	return e, rec
}

var allowAll = authzFunc(func(context.Context, ast.Value) (rego.Result, error) {
	return rego.Result{Allow: true, Revision: "r1"}, nil
})

func chat(headers map[string]string) *Request {
	h := map[string]string{"content-type": "application/json"}
	for k, v := range headers {
		h[k] = v
	}
	return &Request{Gateway: "envoy", Method: "POST", Path: "/v1/chat/completions", Headers: h,
		Body: []byte(`{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}`)}
}

func TestDecide(t *testing.T) {
	denyWith := func(r rego.Result, err error) authorizer {
		return authzFunc(func(context.Context, ast.Value) (rego.Result, error) { return r, err })
	}
	tests := []struct {
		name   string
		authz  authorizer
		req    *Request
		allow  bool
		status int
		reason string
	}{
		{"api key header", allowAll, chat(map[string]string{"x-api-key": "mg_alice"}), true, 200, "allowed"},
		{"api key as bearer", allowAll, chat(map[string]string{"authorization": "Bearer mg_alice"}), true, 200, "allowed"},
		{"jwt", allowAll, chat(map[string]string{"authorization": "Bearer eyJ.good.sig"}), true, 200, "allowed"},
		{"bearer scheme is case-insensitive", allowAll, chat(map[string]string{"authorization": "bearer mg_alice"}), true, 200, "allowed"},
		{"no credential", allowAll, chat(nil), false, 401, "credentials_missing"},
		{"jwt subject with CR LF", allowAll, chat(map[string]string{"authorization": "Bearer eyJ.crlf.sig"}), false, 401, "jwt_bad_claim"},
		{"jwt role with a comma", allowAll, chat(map[string]string{"authorization": "Bearer eyJ.comma.sig"}), false, 401, "jwt_bad_claim"},
		{"bad jwt", allowAll, chat(map[string]string{"authorization": "Bearer eyJ.bad.sig"}), false, 401, "jwt_bad_signature"},
		{"unknown key", allowAll, chat(map[string]string{"x-api-key": "mg_nope"}), false, 401, "api_key_unknown"},
		{"empty bearer", allowAll, chat(map[string]string{"authorization": "Bearer "}), false, 401, "credential_empty"},
		{"two bearer values joined by Envoy", allowAll, chat(map[string]string{"authorization": "Bearer mg_alice,Bearer mg_alice"}), false, 401, "api_key_unknown"},
		{"credential too long", allowAll, chat(map[string]string{"x-api-key": strings.Repeat("a", 65)}), false, 401, "credential_too_long"},
		{"policy denies with defaults", denyWith(rego.Result{}, nil), chat(map[string]string{"x-api-key": "mg_alice"}), false, 403, "policy_denied"},
		{"policy denies with its status", denyWith(rego.Result{Status: 429, Reason: "budget"}, nil), chat(map[string]string{"x-api-key": "mg_alice"}), false, 429, "budget"},
		{"policy error fails closed", denyWith(rego.Result{Allow: true}, errors.New("eval: boom")), chat(map[string]string{"x-api-key": "mg_alice"}), false, 503, "policy_error"},
		{"policy timeout fails closed", denyWith(rego.Result{}, context.DeadlineExceeded), chat(map[string]string{"x-api-key": "mg_alice"}), false, 503, "policy_error"},
		{"panic fails closed", authzFunc(func(context.Context, ast.Value) (rego.Result, error) { panic("boom") }), chat(map[string]string{"x-api-key": "mg_alice"}), false, 503, "internal_error"},
		{"truncated body fails closed", allowAll, &Request{Method: "POST", Path: "/v1/chat/completions", Headers: map[string]string{"x-api-key": "mg_alice", "content-type": "application/json"}, Body: []byte(`{"model":"gpt`), BodyTruncated: true}, false, 413, "body_truncated"},
		{"body not forwarded fails closed", allowAll, &Request{Method: "POST", Path: "/v1/chat/completions", Headers: map[string]string{"x-api-key": "mg_alice"}, BodyOmitted: true}, false, 503, "body_not_forwarded"},
		{"duplicate model keys", allowAll, &Request{Method: "POST", Path: "/v1/chat/completions", Headers: map[string]string{"x-api-key": "mg_alice", "content-type": "application/json"}, Body: []byte(`{"model":"a","model":"b"}`)}, false, 400, "body_duplicate_key"},
		{"unconfigured model", allowAll, &Request{Method: "POST", Path: "/v2/models/bert/infer", Headers: map[string]string{"x-api-key": "mg_alice", "content-type": "application/json"}, Body: []byte(`{"inputs":[]}`)}, false, 403, "model_not_configured"},
		{"unauthenticated bodies are not parsed", allowAll, &Request{Method: "POST", Path: "/v1/chat/completions", Headers: map[string]string{"content-type": "application/json"}, Body: []byte(`{"model":"a","model":"b"}`)}, false, 401, "credentials_missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, rec := testEngine(t, tc.authz)
			d := e.Decide(context.Background(), tc.req)
			if d.Allow != tc.allow || d.Status != tc.status || d.Reason != tc.reason {
				t.Fatalf("got allow=%v %d %q, want allow=%v %d %q", d.Allow, d.Status, d.Reason, tc.allow, tc.status, tc.reason)
			}
			if d.ID == "" || len(rec.Events()) != 1 || rec.Events()[0].DecisionID != d.ID || rec.Events()[0].Reason != tc.reason {
				t.Fatalf("audit events %+v for decision %s", rec.Events(), d.ID)
			}
			if !d.Allow {
				if len(d.UpstreamHeaders) != 0 {
					t.Errorf("denial carries upstream headers %v", d.UpstreamHeaders)
				}
				if body := string(d.Body()); strings.Contains(body, tc.reason) || strings.Contains(body, "boom") {
					t.Errorf("client body leaks internals: %s", body)
				}
			}
			if tc.status == http.StatusUnauthorized && !slices.ContainsFunc(d.ResponseHeaders, func(h Header) bool { return h.Name == "www-authenticate" }) {
				t.Error("401 without www-authenticate")
			}
		})
	}
}

func TestDecideUpstreamHeaders(t *testing.T) {
	e, _ := testEngine(t, allowAll)
	d := e.Decide(context.Background(), chat(map[string]string{"authorization": "Bearer eyJ.good.sig", "x-modelguard-key-id": "forged"}))
	want := map[string]string{"x-modelguard-subject": "alice", "x-modelguard-roles": "chat-user", "x-modelguard-auth-method": "jwt", "x-modelguard-decision-id": d.ID}
	got := map[string]string{}
	for _, h := range d.UpstreamHeaders {
		got[h.Name] = h.Value
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("upstream %s = %q, want %q", k, got[k], v)
		}
	}
	// JWT callers have no key id: a client-sent one must be removed, and so
	// must the credential.
	for _, h := range []string{"authorization", "x-modelguard-key-id"} {
		if !slices.Contains(d.RemoveHeaders, h) {
			t.Errorf("%s not removed: %v", h, d.RemoveHeaders)
		}
	}
	if slices.Contains(d.RemoveHeaders, "x-modelguard-subject") {
		t.Error("a header that is set must not also be removed (Envoy removes after setting)")
	}
}

func TestDecideInput(t *testing.T) {
	var input ast.Value
	e, _ := testEngine(t, authzFunc(func(_ context.Context, in ast.Value) (rego.Result, error) {
		input = in
		return rego.Result{Allow: true}, nil
	}))
	req := chat(map[string]string{"x-api-key": "mg_alice", "authorization": "", ":path": "/x", "cookie": "s=1", "x-trace": "t"})
	delete(req.Headers, "authorization")
	req.Query = "a=1&a=2"
	e.Decide(context.Background(), req)
	got := input.String()
	for _, want := range []string{`"x-trace": "t"`, `"a": ["1", "2"]`, `"key_id": "k-alice"`, `"name": "gpt-4o-mini"`, `"operation": "chat"`, `"gateway": "envoy"`,
		`"max_tokens": 64`, `"messages": 1`, `"prompt_chars": 2`, `"parsed_body": {`} {
		if !strings.Contains(got, want) {
			t.Errorf("input lacks %s: %s", want, got)
		}
	}
	for _, leak := range []string{"mg_alice", "cookie", ":path"} {
		if strings.Contains(got, leak) {
			t.Errorf("input carries %q: %s", leak, got)
		}
	}
}

// TestDecideInputClaims: every request bearing a cached token sees its
// claims, converted once.
func TestDecideInputClaims(t *testing.T) {
	var inputs []string
	e, _ := testEngine(t, authzFunc(func(_ context.Context, in ast.Value) (rego.Result, error) {
		inputs = append(inputs, in.String())
		return rego.Result{Allow: true}, nil
	}))
	for range 2 {
		e.Decide(context.Background(), chat(map[string]string{"authorization": "Bearer eyJ.cached.sig"}))
	}
	if len(inputs) != 2 {
		t.Fatalf("%d evaluations, want 2", len(inputs))
	}
	for i, got := range inputs {
		if !strings.Contains(got, `"claims": {"sub": "carol", "tier": "gold"}`) {
			t.Errorf("request %d: input lacks the claims: %s", i, got)
		}
	}
}

func TestListing(t *testing.T) {
	tests := []struct {
		method, path string
		want         Model
	}{
		{"GET", "/v1/models", Model{"", "list"}},
		{"GET", "/v1/models/gpt-4o", Model{"gpt-4o", "list"}},
		{"GET", "/v2/models/resnet", Model{"resnet", "list"}},
		{"GET", "/v2/models/resnet/ready", Model{"resnet", "list"}},
		{"HEAD", "/v2", Model{"", "list"}},
		{"POST", "/v1/models", Model{}},
		{"GET", "/other", Model{}},
	}
	for _, tc := range tests {
		if got := listing(&Request{Method: tc.method, Path: tc.path}); got != tc.want {
			t.Errorf("%s %s: got %+v, want %+v", tc.method, tc.path, got, tc.want)
		}
	}
}

// A member of input reaches the policy only when the policy reads it.
func TestDecideInputOnlyWhatIsRead(t *testing.T) {
	tests := []struct {
		reads rego.Inputs
		want  string
	}{
		{0, `{}`},
		{rego.InputRoles, `{"subject": {"roles": ["chat-user"]}}`},
		{rego.InputMethod | rego.InputModel, `{"model": {"name": "gpt-4o-mini", "operation": "chat"}, "request": {"method": "POST"}}`},
		{rego.InputHeaders, `{"request": {"headers": {"content-type": "application/json", "x-test": "1"}}}`},
		{rego.InputBody, `{"body": {"max_tokens": 64, "messages": 1, "prompt_chars": 2, "stream": false, "tools": []}}`},
		{rego.InputParsedBody, `{"parsed_body": {"max_tokens": 64, "messages": [{"content": "Hi", "role": "user"}], "model": "gpt-4o-mini"}}`},
		{rego.InputGateway | rego.InputSubjectID | rego.InputAuthMethod, `{"gateway": "envoy", "subject": {"auth_method": "api_key", "id": "alice"}}`},
	}
	for _, tc := range tests {
		var input ast.Value
		e, _ := testEngine(t, evalInputFunc(func(build func(rego.Inputs) ast.Value) { input = build(tc.reads) }))
		e.Decide(context.Background(), chat(map[string]string{"x-api-key": "mg_alice", "x-test": "1"}))
		if input.Compare(ast.MustParseTerm(tc.want).Value) != 0 {
			t.Errorf("reads %b: input %s, want %s", tc.reads, input, tc.want)
		}
	}
}

type evalInputFunc func(build func(rego.Inputs) ast.Value)

func (f evalInputFunc) EvalInput(_ context.Context, in rego.Input) (rego.Result, ast.Value, error) {
	var (
		input ast.Value
		err   error
	)
	f(func(reads rego.Inputs) ast.Value {
		if input, err = rego.BuildInput(in, reads); err != nil {
			return ast.NewObject()
		}
		return input
	})
	return rego.Result{Allow: true}, input, err
}

// TestEvaluateFetchesOnlyWhatItNeeds: with a Fetch, the method and path
// are read only for an authenticated caller, the body only for a model
// route, and the query, scheme and source address only for a policy that
// reads them; a failing read denies with the adapter's refusal.
func TestEvaluateFetchesOnlyWhatItNeeds(t *testing.T) {
	const all = PartQuery | PartScheme | PartSourceAddress
	readsAll := evalInputFunc(func(build func(rego.Inputs) ast.Value) {
		build(rego.InputQuery | rego.InputScheme | rego.InputSourceAddress)
	})
	readsNone := evalInputFunc(func(build func(rego.Inputs) ast.Value) { build(0) })
	refused := &Refusal{Status: 413, Reason: "adapter_refused", Message: "no", Err: errors.New("injected")}
	tests := []struct {
		name         string
		authz        authorizer
		method, path string
		headers      map[string]string
		fail         Part  // the read that fails
		failWith     error // its error
		want         []Part
		status       int
		reason       string
	}{
		{"no credential", readsAll, "POST", "/v1/chat/completions", nil, 0, nil, nil, 401, "credentials_missing"},
		{"model request", readsNone, "POST", "/v1/chat/completions", map[string]string{"x-api-key": "mg_alice"}, 0, nil, []Part{PartTarget, PartBody}, 200, "allowed"},
		{"listing", readsNone, "GET", "/v1/models", map[string]string{"x-api-key": "mg_alice"}, 0, nil, []Part{PartTarget}, 200, "allowed"},
		{"policy reading the request", readsAll, "POST", "/v1/chat/completions", map[string]string{"x-api-key": "mg_alice"}, 0, nil, []Part{PartTarget, PartBody, all}, 200, "allowed"},
		{"target unreadable", readsAll, "POST", "/v1/chat/completions", map[string]string{"x-api-key": "mg_alice"}, PartTarget, errors.New("gone"), []Part{PartTarget}, 503, "gateway_read_error"},
		{"body refused", readsAll, "POST", "/v1/chat/completions", map[string]string{"x-api-key": "mg_alice"}, PartBody, refused, []Part{PartTarget, PartBody}, 413, "adapter_refused"},
		{"policy input refused", readsAll, "POST", "/v1/chat/completions", map[string]string{"x-api-key": "mg_alice"}, all, refused, []Part{PartTarget, PartBody, all}, 413, "adapter_refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := testEngine(t, tc.authz)
			full := chat(tc.headers)
			var asked []Part
			req := &Request{Gateway: "kong", Headers: full.Headers, Fetch: func(r *Request, parts Part) error {
				asked = append(asked, parts)
				if parts == tc.fail {
					return tc.failWith
				}
				if parts&PartTarget != 0 {
					r.Method, r.Path = tc.method, tc.path
				}
				if parts&PartBody != 0 {
					r.Body = full.Body
				}
				return nil
			}}
			d := e.Evaluate(context.Background(), req)
			if !slices.Equal(asked, tc.want) || d.Status != tc.status || d.Reason != tc.reason {
				t.Errorf("asked for %v, decided %d %s; want %v, %d %s", asked, d.Status, d.Reason, tc.want, tc.status, tc.reason)
			}
			var fetched Part
			for _, p := range tc.want {
				fetched |= p
			}
			if err := req.Complete(fetched); err != nil || len(asked) != len(tc.want) {
				t.Errorf("Complete asked again for parts already fetched: %v (%v)", asked, err)
			}
		})
	}
}
