package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelguard/modelguard/examples"
	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/rego"
	"github.com/modelguard/modelguard/test/testkit"
)

// gatedSink holds every write until its gate closes: a sink that hangs.
type gatedSink struct {
	gate    chan struct{}
	entered chan struct{}
}

func (g *gatedSink) Name() string { return "gated" }
func (g *gatedSink) Write(recs []audit.Line) (int, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.gate
	return len(recs), nil
}
func (g *gatedSink) Sync() error  { return nil }
func (g *gatedSink) Close() error { return nil }

// While the trail cannot take records, requests are denied 503 before any
// work, through Decide (Envoy) and Evaluate (Kong, which records later);
// once it drains, they are served again.
func TestAuditUnavailableDenies(t *testing.T) {
	e, _ := testEngine(t, allowAll)
	sink := &gatedSink{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	// async: the queue, not the write, is what this test holds; block_timeout
	// of an hour: the denials must not wait for room to record themselves.
	w, err := audit.NewWriter(audit.Settings{Durability: audit.DurabilityAsync, QueueSize: 1, BlockTimeout: time.Hour}, audit.Options{Metrics: e.metrics}, sink)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	e.audit, e.admit = w, w
	ctx := context.Background()
	req := func() *Request { return chat(map[string]string{"x-api-key": "mg_alice"}) }

	if d := e.Decide(ctx, req()); !d.Allow {
		t.Fatalf("first request denied: %d %s", d.Status, d.Reason)
	}
	<-sink.entered // its record is held in a write that hangs
	if d := e.Decide(ctx, req()); !d.Allow {
		t.Fatalf("second request (queue has room) denied: %d %s", d.Status, d.Reason)
	}
	for _, step := range []struct {
		name   string
		decide func() *Decision
	}{
		{"Decide", func() *Decision { return e.Decide(ctx, req()) }},
		{"Evaluate", func() *Decision { return e.Evaluate(ctx, req()) }},
	} {
		d := step.decide()
		if d.Allow || d.Status != 503 || d.Reason != "audit_unavailable" || d.Message != "service unavailable" {
			t.Errorf("%s with a full audit queue: allow=%v %d %s %q", step.name, d.Allow, d.Status, d.Reason, d.Message)
		}
	}
	if got := testutil.ToFloat64(e.metrics.AuditDenied); got != 2 {
		t.Errorf("modelguard_audit_denied_total = %v, want 2", got)
	}
	close(sink.gate)
	testkit.Eventually(t, "requests served after the trail drained", func() bool { return e.Decide(ctx, req()).Allow })
}

// Decide returns once the allowed request's record is written (the default
// durability): the record is in the file when the answer comes. When the
// record cannot be written (a sink that hangs), the allow becomes a 503.
func TestDecideWaitsForTheRecord(t *testing.T) {
	e, _ := testEngine(t, allowAll)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := audit.NewWriter(audit.Settings{BlockTimeout: time.Hour}, audit.Options{Metrics: e.metrics}, audit.NewFileSink(path, 0, 0, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	e.audit, e.admit = w, w
	ctx := context.Background()
	for i := range 20 {
		d := e.Decide(ctx, chat(map[string]string{"x-api-key": "mg_alice"}))
		if !d.Allow {
			t.Fatalf("denied: %d %s", d.Status, d.Reason)
		}
		data, err := os.ReadFile(path)
		if err != nil || !strings.Contains(string(data), `"decision_id":"`+d.ID+`"`) {
			t.Fatalf("request %d answered before its record was written (%v)", i, err)
		}
	}

	// A hung sink: the record is never written, so the allow is withdrawn.
	e2, _ := testEngine(t, allowAll)
	hungTrail(t, e2)
	d := e2.Decide(ctx, chat(map[string]string{"x-api-key": "mg_alice"}))
	if d.Allow || d.Status != http.StatusServiceUnavailable || d.Reason != "audit_unavailable" || len(d.UpstreamHeaders) != 0 || d.ID == "" {
		t.Errorf("allow with an unwritten record: allow=%v %d %s %v", d.Allow, d.Status, d.Reason, d.UpstreamHeaders)
	}
	if got := testutil.ToFloat64(e2.metrics.AuditDenied); got != 1 {
		t.Errorf("modelguard_audit_denied_total = %v, want 1", got)
	}
}

func TestAuditRecordFields(t *testing.T) {
	req := chat(map[string]string{"x-api-key": "mg_alice"})
	req.ID, req.SourceAddress = "req-1", "10.0.0.7:51000"
	sum := sha256.Sum256(req.Body)
	for _, withHash := range []bool{false, true} {
		e, rec := testEngine(t, allowAll)
		e.bodySHA256 = withHash
		d := e.Evaluate(context.Background(), req)
		e.RecordDecision(req, d)
		if len(rec.Events()) != 1 {
			t.Fatalf("%d events", len(rec.Events()))
		}
		ev := rec.Events()[0]
		want := audit.Event{Kind: audit.KindDecision, Time: d.Start, DecisionID: d.ID, RequestID: "req-1", Gateway: "envoy",
			Subject: "alice", AuthMethod: "api_key", KeyID: "k-alice", Model: "gpt-4o-mini", Operation: "chat",
			Method: "POST", Path: "/v1/chat/completions", SourceAddress: "10.0.0.7:51000", Result: "allow",
			Status: 200, Reason: "allowed", PolicyRevision: "r1", LatencyMicros: d.Latency.Microseconds()}
		if withHash {
			want.BodySHA256 = hex.EncodeToString(sum[:])
		}
		if ev != want {
			t.Errorf("body_sha256 %v: event\n got  %+v\n want %+v", withHash, ev, want)
		}
	}
}

// hungTrail gives e a trail whose sink hangs until the test ends, and whose
// records wait at most a millisecond.
func hungTrail(t *testing.T, e *Engine) {
	t.Helper()
	sink := &gatedSink{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	w, err := audit.NewWriter(audit.Settings{BlockTimeout: time.Millisecond}, audit.Options{Metrics: e.metrics}, sink)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	t.Cleanup(func() { close(sink.gate) }) // first: the writer can then close
	e.audit, e.admit = w, w
}

// TestAuditCompletion: the record a gateway adds after the response names
// the decision, the final status and reason, and is queued without waiting
// for the trail (the response has gone: there is nothing to hold back).
func TestAuditCompletion(t *testing.T) {
	e, rec := testEngine(t, allowAll)
	d := e.Deny("d-1", http.StatusServiceUnavailable, "kong_pdk_error", "service unavailable")
	if err := e.RecordCompletion(d, Completion{Gateway: "kong", Status: 502, Latency: 7 * time.Millisecond, Method: "POST", Path: "/v1/models"}); err != nil {
		t.Fatal(err)
	}
	want := audit.Event{Kind: audit.KindCompletion, DecisionID: "d-1", Gateway: "kong", Method: "POST", Path: "/v1/models",
		Status: 502, Reason: "kong_pdk_error", LatencyMicros: 7000}
	if evs := rec.Events(); len(evs) != 1 || evs[0] != want {
		t.Fatalf("events %+v, want %+v", evs, want)
	}

	// A hung sink: an allow's record times out, a completion is queued.
	e2, _ := testEngine(t, allowAll)
	hungTrail(t, e2)
	allowed := &Decision{ID: "d-2", Allow: true, Status: http.StatusOK, Reason: "allowed"}
	if err := e2.RecordDecision(&Request{}, allowed); err == nil {
		t.Fatal("an allow's record was acknowledged by a hung sink")
	}
	if err := e2.RecordCompletion(allowed, Completion{Gateway: "kong", Status: 200, Latency: time.Millisecond}); err != nil {
		t.Fatalf("a completion waited for the hung sink: %v", err)
	}
}

// The engine records operator events: JWKS refresh failures, and policy and
// key file reloads, refused or in force.
func TestAuditOperatorEvents(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, examples.Demo); err != nil {
		t.Fatal(err)
	}
	key, _ := apikey.Mint("")
	keys := filepath.Join(dir, "keys.yaml")
	os.WriteFile(keys, []byte("keys:\n"+apikey.Entry("k1", "bob", []string{"chat-user"}, key)), 0o644)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", 500) }))
	t.Cleanup(jwks.Close)
	cfg, err := config.Parse([]byte(`authentication:
  api_keys: {file: keys.yaml}
  jwt:
    issuers:
      - {issuer: https://idp, audiences: [x], algorithms: [RS256], jwks_url: "`+jwks.URL+`/jwks"}
authorization: {policy_dir: policy}
`), "test.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	rec := &testkit.EventLog[audit.Event]{}
	e, err := New(ctx, cfg, Options{Audit: rec})
	if err != nil {
		t.Fatal(err)
	}
	loaded := e.PolicyRevision()
	if loaded == "" {
		t.Fatal("no policy revision")
	}

	wait := func(kind, outcome string) *audit.Event {
		t.Helper()
		var found []audit.Event
		testkit.Eventually(t, "a "+kind+" event with outcome "+outcome, func() bool {
			found = rec.Filter(func(e audit.Event) bool { return e.Kind == kind && e.Outcome == outcome })
			return len(found) > 0
		})
		return &found[0]
	}
	if e := wait(audit.KindJWKSRefresh, "failed"); e.Issuer != "https://idp" || e.Detail == "" {
		t.Errorf("JWKS refresh failure: %+v", e)
	}
	os.WriteFile(keys, []byte("keys: [not a key]\n"), 0o644)
	if e := wait(audit.KindKeyReload, "refused"); e.File != keys || e.Detail == "" {
		t.Errorf("refused key reload: %+v", e)
	}
	os.WriteFile(keys, []byte("keys: []\n"), 0o644)
	wait(audit.KindKeyReload, "ok")

	rego := filepath.Join(dir, "policy", "extra.rego")
	os.WriteFile(rego, []byte("package modelguard.extra\nnot valid rego {\n"), 0o644)
	if e := wait(audit.KindPolicyReload, "refused"); e.Detail == "" {
		t.Errorf("refused policy reload: %+v", e)
	}
	os.WriteFile(rego, []byte("package modelguard.extra\n\nx := 1\n"), 0o644)
	if e := wait(audit.KindPolicyReload, "ok"); e.PolicyRevision == "" || e.PolicyRevision == loaded {
		t.Errorf("policy reload in force: %+v", e)
	}
}

// TestHeadersOnlyModelRequest: a model request decided on its headers
// (an authentication subrequest, Request.HeadersOnly) reaches the policy
// without body facts or a model its body would name, and its record says
// that its body was not checked.
func TestHeadersOnlyModelRequest(t *testing.T) {
	var input ast.Value
	capture := authzFunc(func(_ context.Context, in ast.Value) (rego.Result, error) {
		input = in
		return rego.Result{Allow: true, Revision: "r1"}, nil
	})
	e, rec := testEngine(t, capture)
	req := chat(map[string]string{"x-api-key": "mg_alice"})
	req.Body, req.HeadersOnly = nil, true
	d := e.Decide(context.Background(), req)
	if !d.Allow || !d.BodyUnchecked {
		t.Fatalf("got allow=%v %d %s unchecked=%v", d.Allow, d.Status, d.Reason, d.BodyUnchecked)
	}
	for _, member := range []string{"body", "parsed_body", "model"} {
		if v, _ := input.(ast.Object).Find(ast.Ref{ast.StringTerm(member)}); v != nil {
			t.Errorf("input.%s = %v, want absent", member, v)
		}
	}
	if evs := rec.Events(); len(evs) != 1 || evs[0].BodyCheck != audit.BodyCheckSkipped || evs[0].Model != "" {
		t.Errorf("audit events %+v, want one with body_check skipped", evs)
	}

	// With its body, the same request is checked as usual.
	e2, rec2 := testEngine(t, allowAll)
	d = e2.Decide(context.Background(), chat(map[string]string{"x-api-key": "mg_alice"}))
	if !d.Allow || d.BodyUnchecked || rec2.Events()[0].BodyCheck != "" {
		t.Errorf("checked request: unchecked=%v body_check=%q", d.BodyUnchecked, rec2.Events()[0].BodyCheck)
	}
}
