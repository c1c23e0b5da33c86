package policy

import (
	"context"
	"net/http"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelguard/modelguard/policy/admission"
	"github.com/modelguard/modelguard/policy/rego"
)

// TestDecideShedsWhenSaturated: with every check slot taken (one check
// held inside the policy), the next check is refused at once as
// overloaded (503, retry-after, its own reason and metric, audited), not
// queued into a policy timeout; once the slot is free checks pass again.
func TestDecideShedsWhenSaturated(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	blocking := authzFunc(func(context.Context, ast.Value) (rego.Result, error) {
		entered <- struct{}{}
		<-release
		return rego.Result{Allow: true, Revision: "r1"}, nil
	})
	e, rec := testEngine(t, blocking)
	e.checks = admission.NewLimit(1, 0)
	key := map[string]string{"x-api-key": "mg_alice"}

	first := make(chan *Decision)
	go func() { first <- e.Decide(context.Background(), chat(key)) }()
	<-entered

	d := e.Decide(context.Background(), chat(key))
	if d.Allow || d.Status != http.StatusServiceUnavailable || d.Reason != ReasonOverloaded {
		t.Fatalf("saturated: got allow=%v %d %s, want 503 %s", d.Allow, d.Status, d.Reason, ReasonOverloaded)
	}
	if !hasHeader(d.ResponseHeaders, "retry-after") || !hasHeader(d.ResponseHeaders, "x-modelguard-decision-id") {
		t.Errorf("response headers %v, want retry-after and the decision id", d.ResponseHeaders)
	}
	if n := testutil.ToFloat64(e.metrics.Shed.WithLabelValues("concurrent_checks")); n != 1 {
		t.Errorf("modelguard_overload_shed_total{limit=concurrent_checks} = %v, want 1", n)
	}
	if n := testutil.ToFloat64(e.metrics.Decisions.WithLabelValues("deny", ReasonOverloaded, "envoy")); n != 1 {
		t.Errorf("modelguard_decisions_total{deny,overloaded} = %v, want 1", n)
	}

	close(release)
	if d := <-first; !d.Allow {
		t.Fatalf("the admitted check: %d %s", d.Status, d.Reason)
	}
	go func() { <-entered }()
	if d := e.Decide(context.Background(), chat(key)); !d.Allow {
		t.Fatalf("after the slot was released: %d %s", d.Status, d.Reason)
	}
	if evs := rec.Events(); len(evs) != 3 || evs[0].Reason != ReasonOverloaded || evs[0].Status != 503 {
		t.Errorf("audit events %+v, want the shed check recorded as overloaded", evs)
	}
}

func TestReserveBody(t *testing.T) {
	e, _ := testEngine(t, allowAll)
	if !e.ReserveBody(context.Background(), 1<<40) {
		t.Fatal("no budget configured: every reservation succeeds")
	}
	e.bodies = admission.NewLimit(100, 0)
	if !e.ReserveBody(context.Background(), 60) {
		t.Fatal("60 of 100 bytes refused")
	}
	if e.ReserveBody(context.Background(), 41) {
		t.Fatal("41 more bytes admitted over a budget of 100")
	}
	if n := testutil.ToFloat64(e.metrics.Shed.WithLabelValues("body_bytes")); n != 1 {
		t.Errorf("modelguard_overload_shed_total{limit=body_bytes} = %v, want 1", n)
	}
	e.ReleaseBody(60)
	if !e.ReserveBody(context.Background(), 100) {
		t.Fatal("the whole budget refused after release")
	}
}
