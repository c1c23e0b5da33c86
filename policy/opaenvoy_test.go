package policy

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/test/testkit"
)

// opaEnvoyEngine is a real engine with input opa-envoy deciding with
// module (package envoy.authz) and the authentication section auth.
func opaEnvoyEngine(t testing.TB, auth, module string) *Engine {
	t.Helper()
	return shapedEngine(t, "input: opa-envoy", auth, "package envoy.authz\n\n"+module, Options{})
}

// shapedEngine is a real engine with the authorization keys authz (the
// input shape, say), policy module and authentication section auth; one
// chat model, no audit.
func shapedEngine(t testing.TB, authz, auth, module string, opts Options) *Engine {
	t.Helper()
	dir := t.TempDir()
	testkit.ReplaceFile(t, dir, "policy/p.rego", module)
	testkit.WriteFile(t, dir, "keys.yaml", "keys:\n  - {id: k1, hash: \""+apikey.Hash("mg_alice")+"\", subject: alice, roles: [chat-user]}\n")
	cfg, err := config.Parse([]byte(auth+`
authorization: {policy_dir: policy, `+authz+`}
models:
  - {name: gpt-4o-mini, operation: chat}
audit: {output: "off"}
`), "config.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

const anonymous = "authentication: {allow_anonymous: true}"

// echoInput answers every request with its input as dynamic metadata.
const echoInput = `allow := {"allowed": true, "dynamic_metadata": {"input": input}}`

// inputOf decides req and returns the input the policy saw, as JSON.
func inputOf(t *testing.T, e *Engine, req *Request) map[string]any {
	t.Helper()
	d := e.Decide(context.Background(), req)
	if !d.Allow {
		t.Fatalf("denied: %d %s", d.Status, d.Reason)
	}
	b, err := json.Marshal(d.Metadata["input"])
	if err != nil {
		t.Fatal(err)
	}
	var in map[string]any
	if err := json.Unmarshal(b, &in); err != nil {
		t.Fatal(err)
	}
	return in
}

func TestOPAEnvoyInput(t *testing.T) {
	e := opaEnvoyEngine(t, anonymous, echoInput)
	in := inputOf(t, e, &Request{Gateway: "envoy", ID: "r1", Method: "POST", Path: "/api/v%31/items", Query: "a=1&a=2&b=",
		Host: "api.example", Scheme: "https", SourceAddress: "10.0.0.7:51000", TLSPrincipal: "spiffe://c/ns/a/sa/b",
		Headers:           map[string]string{"content-type": "application/json", "authorization": "Bearer t0k", ":path": "/x", "x-a": "1"},
		Body:              []byte(`{"n": 1.50, "s": "x"}`),
		ContextExtensions: map[string]string{"tenant": "acme"},
		MetadataContext:   map[string]any{"envoy.filters.http.jwt_authn": map[string]any{"payload": map[string]any{"sub": "alice"}}}})
	mg := in["modelguard"].(map[string]any)
	delete(in, "modelguard")
	want := map[string]any{
		"attributes": map[string]any{
			"request": map[string]any{"http": map[string]any{
				"method": "POST", "path": "/api/v%31/items?a=1&a=2&b=", "host": "api.example", "scheme": "https",
				// No authenticator: the credential reaches the policy.
				"headers": map[string]any{"content-type": "application/json", "authorization": "Bearer t0k", "x-a": "1"},
				"rawBody": "eyJuIjogMS41MCwgInMiOiAieCJ9",
			}},
			"source": map[string]any{
				"address":   map[string]any{"socketAddress": map[string]any{"address": "10.0.0.7", "portValue": float64(51000)}},
				"principal": "spiffe://c/ns/a/sa/b",
			},
			"contextExtensions": map[string]any{"tenant": "acme"},
			"metadataContext":   map[string]any{"filterMetadata": map[string]any{"envoy.filters.http.jwt_authn": map[string]any{"payload": map[string]any{"sub": "alice"}}}},
		},
		"parsed_path":      []any{"api", "v1", "items"},
		"parsed_query":     map[string]any{"a": []any{"1", "2"}, "b": []any{""}},
		"parsed_body":      map[string]any{"n": 1.5, "s": "x"},
		"truncated_body":   false,
		"version":          map[string]any{"ext_authz": "v3", "encoding": "protojson"},
		"source_principal": "spiffe://c/ns/a/sa/b",
	}
	if !reflect.DeepEqual(in, want) {
		got, _ := json.MarshalIndent(in, "", " ")
		t.Errorf("input:\n%s", got)
	}
	if mg["gateway"] != "envoy" || mg["subject"].(map[string]any)["auth_method"] != "none" {
		t.Errorf("input.modelguard: %v", mg)
	}
	req := mg["request"].(map[string]any)
	if req["context_extensions"].(map[string]any)["tenant"] != "acme" || req["metadata_context"] == nil {
		t.Errorf("input.modelguard.request: %v", req)
	}
}

// TestOPAEnvoyParsedBody follows opa-envoy-plugin's rules for parsed_body
// and truncated_body.
func TestOPAEnvoyParsedBody(t *testing.T) {
	e := opaEnvoyEngine(t, anonymous, `allow := {"allowed": true, "dynamic_metadata": {"b": input.parsed_body, "t": input.truncated_body}}`)
	multipart := "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\none\r\n--XX\r\nContent-Disposition: form-data; name=\"j\"\r\nContent-Type: application/json\r\n\r\n{\"k\": [1]}\r\n--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\ntwo\r\n--XX--\r\n"
	tests := []struct {
		name      string
		headers   map[string]string
		body      string
		truncated bool
		want      any
		wantTrunc bool
	}{
		{"json", map[string]string{"content-type": "application/json; charset=utf-8"}, `[1, {"a": null}]`, false, []any{float64(1), map[string]any{"a": nil}}, false},
		{"form", map[string]string{"content-type": "application/x-www-form-urlencoded"}, "a=1&b=x+y", false, map[string]any{"a": []any{"1"}, "b": []any{"x y"}}, false},
		{"multipart", map[string]string{"content-type": "multipart/form-data; boundary=XX"}, multipart, false, map[string]any{"a": []any{"one", "two"}, "j": []any{map[string]any{"k": []any{float64(1)}}}}, false},
		{"multipart without a boundary", map[string]string{"content-type": "multipart/form-data"}, multipart, false, nil, false},
		{"other content type", map[string]string{"content-type": "text/plain"}, "{}", false, nil, false},
		{"no content type", nil, "{}", false, nil, false},
		{"json without a body", map[string]string{"content-type": "application/json"}, "", false, nil, false},
		{"cut by the gateway", map[string]string{"content-type": "application/json"}, `{"a":`, true, nil, true},
		{"envoy's partial body header", map[string]string{"content-type": "application/json", "x-envoy-auth-partial-body": "true"}, `{"a":`, false, nil, true},
		{"shorter than content-length", map[string]string{"content-type": "application/json", "content-length": "100"}, `{}`, false, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := e.Decide(context.Background(), &Request{Gateway: "kong", Method: "PUT", Path: "/items", Headers: tc.headers, Body: []byte(tc.body), BodyTruncated: tc.truncated})
			if !d.Allow {
				t.Fatalf("denied: %d %s", d.Status, d.Reason)
			}
			got, _ := json.Marshal(d.Metadata)
			want, _ := json.Marshal(map[string]any{"b": tc.want, "t": tc.wantTrunc})
			if string(got) != string(want) {
				t.Errorf("got %s, want %s", got, want)
			}
		})
	}
}

// TestOPAEnvoyRefusesWhatItCannotParse: what opa-envoy-plugin refuses
// (400) while building its input is refused, never decided on.
func TestOPAEnvoyRefusesWhatItCannotParse(t *testing.T) {
	e := opaEnvoyEngine(t, anonymous, `allow if { input.parsed_query; input.parsed_body }`)
	tests := []struct {
		name, path, query, body, reason string
	}{
		{"path escape", "/a%zz", "", "{}", "path_invalid"},
		{"query escape", "/a", "x=%zz", "{}", "query_invalid"},
		{"json", "/a", "", `{"a":`, "body_invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := e.Decide(context.Background(), &Request{Gateway: "envoy", Method: "POST", Path: tc.path, Query: tc.query,
				Headers: map[string]string{"content-type": "application/json"}, Body: []byte(tc.body)})
			if d.Allow || d.Status != http.StatusBadRequest || d.Reason != tc.reason {
				t.Errorf("got %v %d %s, want 400 %s", d.Allow, d.Status, d.Reason, tc.reason)
			}
		})
	}
}

// TestOPAEnvoyLazy: the gateway is asked only for the parts the policy's
// input needs.
func TestOPAEnvoyLazy(t *testing.T) {
	tests := []struct {
		name, module string
		want         Part
	}{
		{"headers", `allow if input.attributes.request.http.headers["x-a"] == "1"`, PartTarget},
		{"parsed_path", `allow if input.parsed_path[0] == "items"`, PartTarget},
		{"http path", `allow if input.attributes.request.http.path != ""`, PartTarget | PartQuery},
		{"parsed_body", `allow if input.parsed_body`, PartTarget | PartBody},
		{"rawBody", `allow if input.attributes.request.http.rawBody`, PartTarget | PartBody},
		{"source", `allow if input.attributes.source.address`, PartTarget | PartSourceAddress},
		{"modelguard scheme", `allow if input.modelguard.request.scheme`, PartTarget | PartScheme},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := opaEnvoyEngine(t, anonymous, tc.module)
			var asked Part
			e.Decide(context.Background(), &Request{Gateway: "kong", Headers: map[string]string{"x-a": "1", "content-type": "application/json"},
				Fetch: func(r *Request, p Part) error {
					asked |= p
					r.Method, r.Path, r.Body, r.Query, r.Scheme, r.SourceAddress = "PUT", "/items", []byte("{}"), "q=1", "https", "10.0.0.1"
					return nil
				}})
			if asked != tc.want {
				t.Errorf("asked for %05b, want %05b", asked, tc.want)
			}
		})
	}
}

// TestOPAEnvoyResultApplied: opa-envoy-plugin's result object becomes the
// decision, and headers modelguard owns stay out of the policy's reach.
func TestOPAEnvoyResultApplied(t *testing.T) {
	t.Run("allow", func(t *testing.T) {
		e := opaEnvoyEngine(t, anonymous, `allow := {"allowed": true, "headers": {"x-user": "alice"}, "request_headers_to_remove": ["authorization"],
	"response_headers_to_add": {"x-policy": "p"}, "dynamic_metadata": {"tenant": "acme"}}`)
		d := e.Decide(context.Background(), &Request{Gateway: "envoy", Method: "GET", Path: "/v1/models", Headers: map[string]string{"authorization": "Bearer t"}})
		if !d.Allow || !hasHeader(d.UpstreamHeaders, "x-user") || !slices.Contains(d.RemoveHeaders, "authorization") ||
			!hasHeader(d.ResponseHeaders, "x-policy") || d.Metadata["tenant"] != "acme" {
			t.Errorf("decision %+v", d)
		}
	})
	t.Run("deny with a body", func(t *testing.T) {
		e := opaEnvoyEngine(t, anonymous, `allow := {"allowed": false, "http_status": 401, "body": "go away", "headers": {"www-authenticate": "Bearer"}}`)
		d := e.Decide(context.Background(), &Request{Gateway: "envoy", Method: "GET", Path: "/v1/models"})
		if d.Allow || d.Status != 401 || string(d.Body()) != "go away" || d.Reason != "policy_denied" {
			t.Errorf("decision %+v body %q", d, d.Body())
		}
		hs := d.DenialHeaders()
		if !slices.Contains(hs, Header{"content-type", "text/plain; charset=utf-8"}) || !slices.Contains(hs, Header{"www-authenticate", "Bearer"}) {
			t.Errorf("denial headers %v", hs)
		}
	})
	t.Run("deny with a body and its content type", func(t *testing.T) {
		e := opaEnvoyEngine(t, anonymous, `allow := {"allowed": false, "body": "{}", "headers": {"content-type": "application/json"}}`)
		d := e.Decide(context.Background(), &Request{Gateway: "envoy", Method: "GET", Path: "/v1/models"})
		if hs := d.DenialHeaders(); d.Status != 403 || len(hs) != 2 || !slices.Contains(hs, Header{"content-type", "application/json"}) {
			t.Errorf("status %d, denial headers %v", d.Status, hs)
		}
	})
	for _, tc := range []struct{ name, auth, module string }{
		{"setting an identity header", anonymous, `allow := {"allowed": true, "headers": {"x-modelguard-subject": "root"}}`},
		{"removing the decision id header", anonymous, `allow := {"allowed": true, "request_headers_to_remove": ["x-modelguard-decision-id"]}`},
		{"setting the verified credential", "authentication: {api_keys: {file: keys.yaml}}", `allow := {"allowed": true, "headers": {"x-api-key": "mg_other"}}`},
		{"keeping the verified credential", "authentication: {api_keys: {file: keys.yaml}}", `allow := {"allowed": true, "request_headers_to_remove": ["x-api-key"]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := opaEnvoyEngine(t, tc.auth, tc.module)
			d := e.Decide(context.Background(), &Request{Gateway: "envoy", Method: "GET", Path: "/v1/models", Headers: map[string]string{"x-api-key": "mg_alice"}})
			if d.Allow || d.Status != http.StatusServiceUnavailable || d.Reason != "policy_error" {
				t.Errorf("got %v %d %s, want 503 policy_error", d.Allow, d.Status, d.Reason)
			}
		})
	}
}

// TestCredentialsReachAPolicyThatVerifies: with allow_anonymous and no
// authenticator, Authorization reaches the policy and the upstream
// untouched; with one, the verified credential reaches neither.
func TestCredentialsReachAPolicyThatVerifies(t *testing.T) {
	const module = `allow := {"allowed": true, "dynamic_metadata": {"h": input.attributes.request.http.headers}}`
	e := opaEnvoyEngine(t, anonymous, module)
	d := e.Decide(context.Background(), &Request{Gateway: "envoy", Method: "GET", Path: "/v1/models", Headers: map[string]string{"authorization": "Bearer not-a-jwt", "cookie": "s=1"}})
	h, _ := d.Metadata["h"].(map[string]any)
	if !d.Allow || h["authorization"] != "Bearer not-a-jwt" || h["cookie"] != "s=1" || slices.Contains(d.RemoveHeaders, "authorization") {
		t.Errorf("anonymous: %+v", d)
	}
	e = opaEnvoyEngine(t, "authentication: {api_keys: {file: keys.yaml}}", module)
	d = e.Decide(context.Background(), &Request{Gateway: "envoy", Method: "GET", Path: "/v1/models", Headers: map[string]string{"authorization": "Bearer mg_alice", "cookie": "s=1"}})
	h, _ = d.Metadata["h"].(map[string]any)
	if !d.Allow || len(h) != 0 || !slices.Contains(d.RemoveHeaders, "authorization") {
		t.Errorf("api key: %+v, policy saw %v", d, h)
	}
	if got := strings.Join(d.RemoveHeaders, ","); !strings.Contains(got, "authorization") {
		t.Errorf("remove %s", got)
	}
}

// TestOPAEnvoyCachedDecisions: decisions of an opa-envoy policy are
// cached on the values it reads of opa-envoy-plugin's input.
func TestOPAEnvoyCachedDecisions(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	e := shapedEngine(t, "input: opa-envoy", anonymous, `package envoy.authz

allow if {
	input.attributes.request.http.headers["x-tenant"] == "acme"
	input.parsed_path[0] == "v1"
}`, Options{Metrics: m})
	for i, tc := range []struct {
		tenant, path string
		allow        bool
	}{{"acme", "/v1/models", true}, {"acme", "/v1/models", true}, {"globex", "/v1/models", false}, {"acme", "/v2/models", false}, {"acme", "/v1/x", true}} {
		d := e.Decide(context.Background(), &Request{Gateway: "envoy", Method: "GET", Path: tc.path, Headers: map[string]string{"x-tenant": tc.tenant}})
		if d.Allow != tc.allow {
			t.Errorf("request %d (%s %s): allow %v, want %v", i, tc.tenant, tc.path, d.Allow, tc.allow)
		}
	}
	if hits := testutil.ToFloat64(m.CacheLookups.WithLabelValues("decision", "hit")); hits != 1 {
		t.Errorf("%v cache hits, want 1", hits)
	}
}

// TestPrintCarriesTheDecisionID: print() output reaches the operator log
// with the id of the decision it was printed for.
func TestPrintCarriesTheDecisionID(t *testing.T) {
	var logs testkit.SyncBuffer
	e := shapedEngine(t, "input: modelguard", anonymous, "package modelguard.authz\n\nallow if print(\"method\", input.request.method)\n",
		Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	d := e.Decide(context.Background(), &Request{Gateway: "envoy", Method: "GET", Path: "/v1/models"})
	if !d.Allow {
		t.Fatalf("denied: %s", d.Reason)
	}
	if out := logs.String(); !strings.Contains(out, `"msg":"rego print","decision_id":"`+d.ID+`"`) || !strings.Contains(out, `"message":"method GET"`) {
		t.Errorf("log:\n%s", out)
	}
}

// BenchmarkDecideInputShape is one decision with each input shape, in one
// run: the same request and equivalent policies (method, a header, the
// path; then also the parsed body), as modelguard's input and as
// opa-envoy-plugin's.
func BenchmarkDecideInputShape(b *testing.B) {
	req := &Request{Gateway: "envoy", ID: "bench", Method: "POST", Path: "/v1/chat/completions", Host: "models.local", Scheme: "https",
		Headers: map[string]string{":authority": "models.local", ":method": "POST", ":path": "/v1/chat/completions", ":scheme": "https",
			"content-type": "application/json", "user-agent": "OpenAI/Python 1.54.0", "x-request-id": "bench", "accept": "application/json", "x-tenant": "acme"},
		SourceAddress: "10.0.0.7:51000",
		Body:          []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"Hello there"}],"max_tokens":128}`),
	}
	for _, bc := range []struct{ name, input, module string }{
		{"modelguard", "modelguard", `package modelguard.authz

allow if {
	input.request.method == "POST"
	input.request.headers["x-tenant"] == "acme"
	startswith(input.request.path, "/v1/")
}`},
		{"opa-envoy", "opa-envoy", `package envoy.authz

allow if {
	input.attributes.request.http.method == "POST"
	input.attributes.request.http.headers["x-tenant"] == "acme"
	input.parsed_path[0] == "v1"
}`},
		{"modelguard+parsed_body", "modelguard", `package modelguard.authz

allow if {
	input.request.method == "POST"
	input.request.headers["x-tenant"] == "acme"
	startswith(input.request.path, "/v1/")
	input.parsed_body.max_tokens <= 1024
}`},
		{"opa-envoy+parsed_body", "opa-envoy", `package envoy.authz

allow if {
	input.attributes.request.http.method == "POST"
	input.attributes.request.http.headers["x-tenant"] == "acme"
	input.parsed_path[0] == "v1"
	input.parsed_body.max_tokens <= 1024
}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			// Without the decision cache, which would answer every
			// repeat: this measures building the input and evaluating.
			e := shapedEngine(b, "input: "+bc.input+", decision_cache: {enabled: false}", anonymous, bc.module, Options{})
			ctx := context.Background()
			if d := e.Decide(ctx, req); !d.Allow {
				b.Fatalf("denied: %d %s", d.Status, d.Reason)
			}
			b.ReportAllocs()
			for b.Loop() {
				e.Decide(ctx, req)
			}
		})
	}
}
