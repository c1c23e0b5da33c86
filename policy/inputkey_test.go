package policy

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/policy/models"
	"github.com/modelguard/modelguard/policy/rego"
	"github.com/modelguard/modelguard/policy/rego/inputdoc"
	"github.com/modelguard/modelguard/test/testkit"
)

// modelguardPaths are paths into modelguard's input, after "input": every
// member, into members, through values that are not objects, and to
// members that are never there.
var modelguardPaths = []string{
	``, `.gateway`, `.missing`, `.missing.deeper`,
	`.subject`, `.subject.id`, `.subject.roles`, `.subject.roles.x`, `.subject.auth_method`, `.subject.key_id`, `.subject.issuer`,
	`.subject.claims`, `.subject.claims.sub`, `.subject.claims.roles`, `.subject.claims.nested`, `.subject.claims.nested.a`,
	`.subject.claims.n`, `.subject.claims.flag`, `.subject.claims.none`, `.subject.claims.missing`,
	`.request`, `.request.id`, `.request.method`, `.request.path`, `.request.query`, `.request.query.a`, `.request.host`, `.request.scheme`,
	`.request.headers`, `.request.headers["x-a"]`, `.request.headers["content-type"]`, `.request.headers.authorization`,
	`.request.headers["x-api-key"]`, `.request.headers[":authority"]`, `.request.source_address`, `.request.tls_principal`,
	`.request.context_extensions`, `.request.context_extensions.tenant`,
	`.request.metadata_context`, `.request.metadata_context.ns`, `.request.metadata_context.ns.k`,
	`.model`, `.model.name`, `.model.operation`,
	`.body`, `.body.max_tokens`, `.body.stream`, `.body.n`, `.body.messages`, `.body.prompt_chars`, `.body.tools`, `.body.max_tokens.x`,
	`.parsed_body`, `.parsed_body.model`, `.parsed_body.messages`, `.parsed_body.x.y`,
}

// opaEnvoyPaths are the same for opa-envoy-plugin's input; modelguard's
// are under input.modelguard.
var opaEnvoyPaths = func() []string {
	ps := []string{
		``, `.attributes`, `.attributes.request`, `.attributes.request.http`, `.attributes.request.http.method`,
		`.attributes.request.http.headers`, `.attributes.request.http.headers["x-a"]`, `.attributes.request.http.path`,
		`.attributes.request.http.host`, `.attributes.request.http.scheme`, `.attributes.request.http.rawBody`,
		`.attributes.source`, `.attributes.source.address`, `.attributes.source.address.socketAddress.address`,
		`.attributes.source.address.socketAddress.portValue`, `.attributes.source.principal`,
		`.attributes.contextExtensions`, `.attributes.contextExtensions.tenant`,
		`.attributes.metadataContext`, `.attributes.metadataContext.filterMetadata.ns`,
		`.parsed_path`, `.parsed_query`, `.parsed_query.a`, `.parsed_body`, `.parsed_body.model`, `.parsed_body.a`,
		`.truncated_body`, `.version`, `.version.ext_authz`, `.source_principal`,
	}
	for _, p := range modelguardPaths {
		if !strings.HasPrefix(p, ".parsed_body") {
			ps = append(ps, ".modelguard"+p)
		}
	}
	return ps
}()

// TestInputKeyIsTheBuiltInputsKey: for random requests, identities and
// read sets of both input shapes, the decision cache's key written without
// building the input is, byte for byte, the key of the built input at the
// same paths.
func TestInputKeyIsTheBuiltInputsKey(t *testing.T) {
	for shape, universe := range map[string][]string{rego.ShapeModelguard: modelguardPaths, rego.ShapeOPAEnvoy: opaEnvoyPaths} {
		t.Run(shape, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(12, uint64(len(shape))))
			refused := 0
			for i := range 4000 {
				paths := randomReads(rng, universe)
				reads := rego.InputsAt(paths, shape)
				if rng.IntN(4) == 0 { // a shadow policy reading more
					reads |= rego.Inputs(rng.Uint32()) & rego.AllInputs
				}
				e := &Engine{opaEnvoy: shape == rego.ShapeOPAEnvoy, apiKeyHeader: "x-api-key", anonymous: rng.IntN(4) == 0}
				in := randomInput(rng, e)
				p := inputdoc.NewPaths(paths)
				enc := p.Encoder()
				keyErr := in.WriteInput(enc, reads)
				got, ok := enc.Bytes()
				got = slices.Clone(got)
				enc.Release()
				built, buildErr := rego.BuildInput(in, reads)
				if (keyErr != nil) != (buildErr != nil) {
					t.Fatalf("case %d: writing for the key: %v; building: %v", i, keyErr, buildErr)
				}
				if buildErr != nil {
					refused++
					continue
				}
				want, wantOK := p.AppendValue(nil, built)
				if !ok || !wantOK || !bytes.Equal(got, want) {
					t.Fatalf("case %d: reads %b, paths %v\ninput %v\nwritten %v %x\nbuilt   %v %x", i, reads, paths, built, ok, got, wantOK, want)
				}
			}
			if refused == 0 && shape == rego.ShapeOPAEnvoy {
				t.Fatal("no request refused: the error paths were not exercised")
			}
		})
	}
}

// randomReads are a few paths of universe, sorted, none inside another.
func randomReads(rng *rand.Rand, universe []string) []ast.Ref {
	var all []ast.Ref
	for range rng.IntN(6) {
		all = append(all, ast.MustParseRef("input"+universe[rng.IntN(len(universe))]))
	}
	return inputdoc.Minimal(all)
}

// randomInput is a request, its identity and its model from small domains,
// with and without each member, and values of every JSON type.
func randomInput(rng *rand.Rand, e *Engine) *policyInput {
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	some := func() bool { return rng.IntN(2) == 0 }
	jsonValue := func() any {
		return []any{"s", "", 1.5, json.Number("2"), json.Number("1.0"), true, false, nil, []any{"a", 1.0}, map[string]any{"a": "b", "c": []any{}}}[rng.IntN(10)]
	}
	req := &Request{
		Gateway: pick("envoy", "kong"), ID: pick("r1", "r2"), Method: pick("GET", "POST"),
		Path:  pick("/v1/chat/completions", "/v1/models/a%2Fb", "/x/%zz", "/", ""),
		Query: pick("", "", "a=1&b=2&a=3", "a=%zz", "a"), Host: pick("", "models.local"), Scheme: pick("", "https"),
		Headers:       map[string]string{},
		SourceAddress: pick("", "10.0.0.1:443", "10.0.0.1", "[::1]:80", "10.0.0.1:0"), TLSPrincipal: pick("", "spiffe://a"),
		BodyTruncated: rng.IntN(8) == 0,
	}
	for _, h := range []string{"content-type", "x-a", "x-b", "authorization", "x-api-key", "cookie", ":authority", "x-envoy-auth-partial-body", "content-length"} {
		if some() {
			req.Headers[h] = pick("application/json", "application/x-www-form-urlencoded", "1", "true", "")
		}
	}
	if some() {
		req.ContextExtensions = map[string]string{"tenant": pick("a", "b")}
		if some() {
			req.ContextExtensions["other"] = ""
		}
	}
	if some() {
		req.MetadataContext = map[string]any{"ns": map[string]any{"k": jsonValue(), "l": jsonValue()}}
	}
	var body any
	switch rng.IntN(4) {
	case 0:
		req.Body = []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"n":1.0}`)
		body = map[string]any{"model": "m", "messages": []any{map[string]any{"role": "user"}}, "n": json.Number("1.0")}
	case 1:
		req.Body = []byte("a=1&b=2")
	case 2:
		req.Body = []byte(`{"a": `) // not JSON
	}
	id := &Identity{Subject: pick("", "alice"), Method: pick("api_key", "jwt", "none"), KeyID: pick("", "k1"), Issuer: pick("", "https://idp")}
	if some() {
		id.Roles = []string{}
		for range rng.IntN(3) {
			id.Roles = append(id.Roles, pick("admin", "chat-user", ""))
		}
	}
	if some() {
		id.Claims = map[string]any{"sub": jsonValue(), "roles": []any{"a", "b"}, "nested": map[string]any{"a": jsonValue()}, "n": json.Number("3"), "flag": true, "none": nil}
		if some() {
			id.claimsValue = claimsObject(id.Claims)
		}
	}
	in := &policyInput{e: e, req: req, id: id}
	if some() {
		in.model = Model{Name: pick("", "gpt-4o-mini"), Operation: pick("", "chat", "list")}
	}
	if some() {
		in.mr = &models.Model{Name: in.model.Name, Operation: in.model.Operation, Body: body, Unchecked: rng.IntN(5) == 0,
			Facts: models.Facts{MaxTokens: []int64{0, 100, 1 << 40}[rng.IntN(3)], Stream: some(), N: int64(rng.IntN(3)), Messages: rng.IntN(3), PromptChars: rng.IntN(1000)}}
		for range rng.IntN(3) {
			in.mr.Facts.Tools = append(in.mr.Facts.Tools, pick("f", "g"))
		}
	}
	return in
}

// TestShadowSeesCachedDecisions: a decision from the decision cache, made
// without building the input, is still offered to the shadow policy with
// its input.
func TestShadowSeesCachedDecisions(t *testing.T) {
	dir := t.TempDir()
	testkit.ReplaceFile(t, dir, "policy/p.rego", "package modelguard.authz\n\nallow if input.request.method == \"POST\"\n")
	testkit.ReplaceFile(t, dir, "shadow/p.rego", "package modelguard.authz\n\nallow if input.request.headers[\"x-a\"] == \"1\"\n")
	cfg, err := config.Parse([]byte(anonymous+`
authorization: {policy_dir: policy, shadow: {policy_dir: shadow}}
audit: {output: "off"}
`), "config.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(nil)
	e, err := New(t.Context(), cfg, Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		req := &Request{Gateway: "envoy", ID: "r", Method: "POST", Path: "/v1/models", Headers: map[string]string{"x-a": "0"}}
		if d := e.Decide(t.Context(), req); !d.Allow {
			t.Fatalf("request %d: %d %s", i, d.Status, d.Reason)
		}
	}
	if hits := testutil.ToFloat64(m.CacheLookups.WithLabelValues("decision", "hit")); hits != 2 {
		t.Fatalf("%v decision cache hits, want 2", hits)
	}
	testkit.Eventually(t, "three disagreements", func() bool { return testutil.ToFloat64(m.Shadow.WithLabelValues("disagree")) == 3 })
}
