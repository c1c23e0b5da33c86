package policy

import (
	"context"
	"errors"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/policy/rego"
	"github.com/modelguard/modelguard/test/testkit"
)

func answer(r rego.Result, err error) authzFunc {
	return authzFunc(func(context.Context, ast.Value) (rego.Result, error) { return r, err })
}

func TestDryRun(t *testing.T) {
	alice := map[string]string{"x-api-key": "mg_alice"}
	deny := answer(rego.Result{Status: 429, Reason: "role_missing", Revision: "r1", ResponseHeaders: map[string]string{"x-why": "role"}}, nil)
	everything := rego.DryRun{All: true}
	tests := []struct {
		name   string
		dryRun rego.DryRun
		authz  authorizer
		req    *Request
		// want: the answer (status, reason) and the record (result, status, reason)
		status       int
		reason       string
		record       string
		recordStatus int
		recordReason string
	}{
		{"policy denial lifted", everything, deny, chat(alice), 200, "allowed", "would_deny", 429, "role_missing"},
		{"policy error lifted", everything, answer(rego.Result{Revision: "r1"}, errors.New("boom")), chat(alice), 200, "allowed", "would_deny", 503, "policy_error"},
		{"undefined lifted", everything, answer(rego.Result{Reason: rego.ReasonUndefined}, nil), chat(alice), 200, "allowed", "would_deny", 403, rego.ReasonUndefined},
		{"allow stays allow", everything, allowAll, chat(alice), 200, "allowed", "allow", 200, "allowed"},
		{"authentication never lifted", everything, deny, chat(nil), 401, "credentials_missing", "deny", 401, "credentials_missing"},
		{"body checks never lifted", everything, deny, func() *Request { r := chat(alice); r.Body = []byte(`{"model":"gpt-4o-mini"}`); return r }(), 400, "body_schema_violation", "deny", 400, "body_schema_violation"},
		{"unknown model never lifted", everything, deny, func() *Request { r := chat(alice); r.Body = []byte(`{"model":"other","messages":[]}`); return r }(), 403, "model_not_configured", "deny", 403, "model_not_configured"},
		{"no policy never lifted", everything, answer(rego.Result{}, rego.ErrNoPolicy), chat(alice), 503, rego.ReasonUnavailable, "deny", 503, rego.ReasonUnavailable},
		{"model in dry-run", rego.DryRun{Models: []string{"gpt-4o-mini"}}, deny, chat(alice), 200, "allowed", "would_deny", 429, "role_missing"},
		{"other model enforced", rego.DryRun{Models: []string{"llama"}}, deny, chat(alice), 429, "role_missing", "deny", 429, "role_missing"},
		{"path in dry-run", rego.DryRun{Paths: []string{"/v1/chat/completions"}}, deny, chat(alice), 200, "allowed", "would_deny", 429, "role_missing"},
		{"path prefix in dry-run", rego.DryRun{Paths: []string{"/v1/"}}, deny, chat(alice), 200, "allowed", "would_deny", 429, "role_missing"},
		{"path spelled otherwise enforced", rego.DryRun{Paths: []string{"/v1/"}}, deny, func() *Request { r := chat(alice); r.Method = "GET"; r.Path = "/v1/../admin"; r.Body = nil; return r }(), 429, "role_missing", "deny", 429, "role_missing"},
		{"other path enforced", rego.DryRun{Paths: []string{"/v1/embeddings"}}, deny, chat(alice), 429, "role_missing", "deny", 429, "role_missing"},
		{"off", rego.DryRun{}, deny, chat(alice), 429, "role_missing", "deny", 429, "role_missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, rec := testEngine(t, tt.authz)
			e.dryRun = tt.dryRun
			d := e.Decide(context.Background(), tt.req)
			if d.Status != tt.status || d.Reason != tt.reason {
				t.Fatalf("answer %d %s, want %d %s", d.Status, d.Reason, tt.status, tt.reason)
			}
			if d.Allow && hasHeader(d.ResponseHeaders, "x-why") {
				t.Error("a lifted denial's response headers reached the client")
			}
			evs := rec.Events()
			if len(evs) != 1 {
				t.Fatalf("%d records, want 1", len(evs))
			}
			ev := evs[0]
			if ev.Result != tt.record || ev.Status != tt.recordStatus || ev.Reason != tt.recordReason {
				t.Fatalf("record %s %d %s, want %s %d %s", ev.Result, ev.Status, ev.Reason, tt.record, tt.recordStatus, tt.recordReason)
			}
			if n := testutil.ToFloat64(e.metrics.Decisions.WithLabelValues(tt.record, tt.recordReason, "envoy")); n != 1 {
				t.Fatalf("modelguard_decisions_total{result=%q,reason=%q} = %v, want 1", tt.record, tt.recordReason, n)
			}
		})
	}
}

// shadowPolicy is a fake shadow: it answers with f and reads no optional input.
type shadowPolicy struct{ authzFunc }

func (shadowPolicy) Inputs() rego.Inputs { return 0 }

func TestShadow(t *testing.T) {
	alice := map[string]string{"x-api-key": "mg_alice"}
	allow := answer(rego.Result{Allow: true, Revision: "r1"}, nil)
	deny := answer(rego.Result{Reason: "role_missing", Revision: "r1"}, nil)
	shadowDeny := answer(rego.Result{Reason: "new_rule", Revision: "s1"}, nil)
	tests := []struct {
		name            string
		enforced        authorizer
		shadow          authzFunc
		status          int // the answer, the shadow's whatever it says
		outcome         string
		record          bool
		result, sresult string
		reason, sreason string
	}{
		{"agree allow", allow, allow, 200, "agree", false, "", "", "", ""},
		{"agree deny", deny, shadowDeny, 403, "agree", false, "", "", "", ""},
		{"shadow denies", allow, shadowDeny, 200, "disagree", true, "allow", "deny", "", "new_rule"},
		{"shadow allows", deny, allow, 403, "disagree", true, "deny", "allow", "role_missing", ""},
		{"shadow fails", allow, answer(rego.Result{Revision: "s1"}, errors.New("boom")), 200, "shadow_error", true, "allow", "error", "", "policy_error"},
		{"shadow has no policy yet", allow, answer(rego.Result{}, rego.ErrNoPolicy), 200, "shadow_error", true, "allow", "error", "", rego.ReasonUnavailable},
		{"shadow panics", allow, authzFunc(func(context.Context, ast.Value) (rego.Result, error) { panic("boom") }), 200, "shadow_error", true, "allow", "error", "", "internal_error"},
		{"enforced fails, shadow allows", answer(rego.Result{}, errors.New("boom")), allow, 503, "disagree", true, "error", "allow", "policy_error", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, rec := testEngine(t, tt.enforced)
			outcomes := metrics.New(prometheus.NewRegistry()).Shadow
			e.shadow = newShadow(t.Context(), shadowPolicy{tt.shadow}, outcomes, func(ev *audit.Event) { rec.Record(ev) }, e.log)
			d := e.Decide(context.Background(), chat(alice))
			if d.Status != tt.status {
				t.Fatalf("answer %d (%s), want %d whatever the shadow says", d.Status, d.Reason, tt.status)
			}
			testkit.Eventually(t, "the shadow outcome", func() bool { return testutil.ToFloat64(outcomes.WithLabelValues(tt.outcome)) == 1 })
			var shadows []audit.Event
			for _, ev := range rec.Events() {
				if ev.Kind == audit.KindShadow {
					shadows = append(shadows, ev)
				}
			}
			if !tt.record {
				if len(shadows) != 0 {
					t.Fatalf("shadow records %+v for an agreement", shadows)
				}
				return
			}
			if len(shadows) != 1 {
				t.Fatalf("%d shadow records, want 1", len(shadows))
			}
			ev := shadows[0]
			if ev.DecisionID != d.ID || ev.Result != tt.result || ev.ShadowResult != tt.sresult || ev.Reason != tt.reason || ev.ShadowReason != tt.sreason {
				t.Fatalf("shadow record %+v, want decision %s, %s/%s vs %s/%s", ev, d.ID, tt.result, tt.reason, tt.sresult, tt.sreason)
			}
		})
	}
}

// A full shadow queue drops decisions (counted) instead of slowing
// requests down.
func TestShadowQueueFull(t *testing.T) {
	e, _ := testEngine(t, allowAll)
	outcomes := metrics.New(nil).Shadow
	release := make(chan struct{})
	blocked := shadowPolicy{authzFunc(func(context.Context, ast.Value) (rego.Result, error) {
		<-release
		return rego.Result{Allow: true}, nil
	})}
	e.shadow = newShadow(t.Context(), blocked, outcomes, func(*audit.Event) {}, e.log)
	defer close(release)
	for i := range shadowQueue + 2 {
		if d := e.Decide(context.Background(), chat(map[string]string{"x-api-key": "mg_alice"})); !d.Allow {
			t.Fatalf("request %d: %d %s", i, d.Status, d.Reason)
		}
	}
	if n := testutil.ToFloat64(outcomes.WithLabelValues("dropped")); n < 1 {
		t.Fatalf("%v dropped with a full queue, want at least 1", n)
	}
}
