package policy

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/rego"
	"github.com/modelguard/modelguard/policy/tracing"
	"github.com/modelguard/modelguard/test/testkit"
)

// traced is testEngine with tracing: spans, records and logs are kept in
// memory.
type traced struct {
	*Engine
	spans  *tracetest.SpanRecorder
	events *testkit.EventLog[audit.Event]
	logs   *testkit.SyncBuffer
}

func tracedEngine(t *testing.T, a authorizer, sampler sdktrace.Sampler) traced {
	e, events := testEngine(t, a)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans), sdktrace.WithSampler(sampler))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	e.tracer = tracing.New(tp, "test")
	logs := &testkit.SyncBuffer{}
	e.log = slog.New(slog.NewJSONHandler(logs, nil))
	return traced{e, spans, events, logs}
}

const (
	traceID      = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpanID = "00f067aa0ba902b7"
)

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	var names []string
	for _, s := range spans {
		names = append(names, s.Name())
	}
	return names
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestTraceDecision(t *testing.T) {
	policyErr := authzFunc(func(context.Context, ast.Value) (rego.Result, error) { return rego.Result{}, errors.New("eval: boom") })
	tests := []struct {
		name    string
		authz   authorizer
		headers map[string]string
		// spans in the order they end; the decision's span ends before
		// its audit record's.
		spans      []string
		reason     string
		stepReason string // the reason on the step span that denied
		errStatus  bool
	}{
		{"allowed, W3C parent", allowAll, map[string]string{"x-api-key": "mg_alice", "traceparent": "00-" + traceID + "-" + parentSpanID + "-01"},
			[]string{spanAuthenticate, spanBody, spanPolicy, spanDecision, spanAudit}, "allowed", "", false},
		{"allowed, B3 single header", allowAll, map[string]string{"x-api-key": "mg_alice", "b3": traceID + "-" + parentSpanID + "-1"},
			[]string{spanAuthenticate, spanBody, spanPolicy, spanDecision, spanAudit}, "allowed", "", false},
		{"allowed, B3 multiple headers", allowAll, map[string]string{"x-api-key": "mg_alice", "x-b3-traceid": traceID, "x-b3-spanid": parentSpanID, "x-b3-sampled": "1"},
			[]string{spanAuthenticate, spanBody, spanPolicy, spanDecision, spanAudit}, "allowed", "", false},
		{"credential refused", allowAll, map[string]string{"x-api-key": "mg_nope", "traceparent": "00-" + traceID + "-" + parentSpanID + "-01"},
			[]string{spanAuthenticate, spanDecision, spanAudit}, "api_key_unknown", "api_key_unknown", false},
		{"policy error", policyErr, map[string]string{"x-api-key": "mg_alice", "traceparent": "00-" + traceID + "-" + parentSpanID + "-01"},
			[]string{spanAuthenticate, spanBody, spanPolicy, spanDecision, spanAudit}, "policy_error", "policy_error", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := tracedEngine(t, tc.authz, sdktrace.ParentBased(sdktrace.NeverSample()))
			d := e.Decide(context.Background(), chat(tc.headers))
			if d.Reason != tc.reason {
				t.Fatalf("reason %q, want %q", d.Reason, tc.reason)
			}
			spans := e.spans.Ended()
			if got := strings.Join(spanNames(spans), ","); got != strings.Join(tc.spans, ",") {
				t.Fatalf("spans %s, want %s", got, strings.Join(tc.spans, ","))
			}
			var root sdktrace.ReadOnlySpan
			for _, s := range spans {
				if s.SpanContext().TraceID().String() != traceID {
					t.Errorf("%s: trace id %s, want the request's %s", s.Name(), s.SpanContext().TraceID(), traceID)
				}
				if s.Name() == spanDecision {
					root = s
				}
			}
			if root.Parent().SpanID().String() != parentSpanID || !root.Parent().IsRemote() {
				t.Errorf("decision span's parent %v, want the request's span %s", root.Parent(), parentSpanID)
			}
			for _, s := range spans {
				if s != root && s.Parent().SpanID() != root.SpanContext().SpanID() {
					t.Errorf("%s is not a child of the decision span", s.Name())
				}
			}
			a := attrs(root)
			if a[attrDecisionID].AsString() != d.ID || a[attrReason].AsString() != tc.reason || a[attrStatus].AsInt64() != int64(d.Status) ||
				a[attrGateway].AsString() != "envoy" || a[attrMethod].AsString() != "POST" {
				t.Errorf("decision span attributes %v", root.Attributes())
			}
			if (root.Status().Code == codes.Error) != tc.errStatus {
				t.Errorf("decision span status %v", root.Status())
			}
			if tc.stepReason != "" {
				step := spans[len(spans)-3]
				if attrs(step)[attrReason].AsString() != tc.stepReason {
					t.Errorf("%s attributes %v, want reason %s", step.Name(), step.Attributes(), tc.stepReason)
				}
			}
			if d.Trace.TraceID != traceID || d.Trace.SpanID != root.SpanContext().SpanID().String() {
				t.Errorf("decision trace %+v, span %s", d.Trace, root.SpanContext().SpanID())
			}
			if tc.reason != "allowed" && !strings.Contains(e.logs.String(), `"trace_id":"`+traceID+`"`) {
				t.Errorf("decision log without its trace id: %s", e.logs)
			}
			// Nothing the caller sent beyond the trace context is in a span.
			for _, s := range spans {
				for _, kv := range s.Attributes() {
					if v := kv.Value.Emit(); strings.Contains(v, "mg_") || strings.Contains(v, "Hi") {
						t.Errorf("%s: attribute %s=%q holds what the caller sent", s.Name(), kv.Key, v)
					}
				}
			}
		})
	}
}

// The trace ids reach the audit record; an unsampled request records the
// caller's trace id (its trace exists upstream) but no span id, and a
// decision with neither exports nothing and records no id.
func TestTraceAuditAndSampling(t *testing.T) {
	for _, tc := range []struct {
		name            string
		traceparent     string
		spans           int
		traceID, spanID bool
	}{
		{"sampled parent", "00-" + traceID + "-" + parentSpanID + "-01", 5, true, true},
		{"unsampled parent", "00-" + traceID + "-" + parentSpanID + "-00", 0, true, false},
		{"no parent, ratio 0", "", 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := tracedEngine(t, allowAll, sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0)))
			headers := map[string]string{"x-api-key": "mg_alice"}
			if tc.traceparent != "" {
				headers["traceparent"] = tc.traceparent
			}
			d := e.Decide(context.Background(), chat(headers))
			if got := len(e.spans.Ended()); got != tc.spans {
				t.Errorf("%d spans exported, want %d", got, tc.spans)
			}
			ev := e.events.Events()[0]
			if (ev.TraceID != "") != tc.traceID || (ev.SpanID != "") != tc.spanID || ev.TraceID != d.Trace.TraceID || ev.SpanID != d.Trace.SpanID {
				t.Errorf("audit trace_id %q span_id %q", ev.TraceID, ev.SpanID)
			}
			if tc.traceID && ev.TraceID != traceID {
				t.Errorf("audit trace_id %q, want the caller's %s", ev.TraceID, traceID)
			}
		})
	}
}

// With tracing off a decision reads no trace header and records no id.
func TestTracingOff(t *testing.T) {
	e, rec := testEngine(t, allowAll)
	d := e.Decide(context.Background(), chat(map[string]string{"x-api-key": "mg_alice", "traceparent": "00-" + traceID + "-" + parentSpanID + "-01"}))
	if d.Trace != (Trace{}) || rec.Events()[0].TraceID != "" {
		t.Errorf("untraced decision has trace %+v, record %+v", d.Trace, rec.Events()[0])
	}
}

// TraceBenchCases are the tracing benchmarks' settings (bench_test's too):
// off, and on with a share of decisions sampled.
var TraceBenchCases = []struct {
	Name  string
	Ratio float64 // < 0: tracing off
}{{"off", -1}, {"sampled_1pct", 0.01}, {"sampled_all", 1}}

// BenchTracer is tracing as Open builds it (batched), with ratio sampled
// and an exporter that discards, so a collector's cost is not measured;
// nil for a ratio < 0 (off).
func BenchTracer(tb testing.TB, ratio float64) Tracer {
	if ratio < 0 {
		return nil
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))))
	tb.Cleanup(func() { tp.Shutdown(context.Background()) })
	return tracing.New(tp, "bench")
}

// BenchmarkTraceOverhead is what tracing adds to one decision, alone: the
// decision span and its five steps' hooks, as Evaluate and Commit run
// them, without the work between them (BenchmarkDecideTracing in
// bench_test measures whole decisions).
func BenchmarkTraceOverhead(b *testing.B) {
	for _, bc := range TraceBenchCases {
		b.Run(bc.Name, func(b *testing.B) {
			e := &Engine{tracer: BenchTracer(b, bc.Ratio)}
			req := chat(map[string]string{"x-api-key": "mg_alice", "user-agent": "OpenAI/Python 1.54.0", "x-request-id": "bench"})
			b.ReportAllocs()
			for b.Loop() {
				d := &Decision{ID: "d", Status: 200, Reason: "allowed", Allow: true, Model: Model{Name: "gpt-4o-mini", Operation: "chat"}}
				ctx := e.startTrace(context.Background(), req, d)
				for _, name := range []string{spanAuthenticate, spanBody, spanPolicy, spanRateLimits} {
					_, span := e.step(ctx, name)
					endStep(span, d)
				}
				endTrace(req, d)
				e.auditStep(d).End()
			}
		})
	}
}
