package policy

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Tracer starts the spans of decisions; policy/tracing's Provider is the
// real one. With none (tracing off) a decision starts no span and reads no
// trace header: it costs nothing.
type Tracer interface {
	trace.Tracer
	// Extract returns ctx with the trace context the request headers
	// carry (W3C traceparent, B3), which becomes the decision's parent.
	Extract(ctx context.Context, headers map[string]string) context.Context
}

// Trace links a decision to its trace: TraceID when the decision was
// traced (sampled) or the request carried a trace context, SpanID when its
// span was sampled; both "" with tracing off. They go to the audit record
// and the operator logs.
type Trace struct {
	TraceID, SpanID string
	span            trace.Span // the decision's span; nil with tracing off
}

// The span names: the decision, and its steps as children.
const (
	spanDecision     = "modelguard.decision"
	spanAuthenticate = "modelguard.authenticate"
	spanBody         = "modelguard.body"
	spanPolicy       = "modelguard.policy"
	spanRateLimits   = "modelguard.rate_limits"
	spanAudit        = "modelguard.audit"
)

// Span attributes. Never a credential, subject, key id, claim or body
// text: spans go to collectors that more people read, and keep longer,
// than the audit trail, which the decision id leads to.
var (
	attrDecisionID     = attribute.Key("modelguard.decision_id")
	attrGateway        = attribute.Key("modelguard.gateway")
	attrResult         = attribute.Key("modelguard.result")
	attrStatus         = attribute.Key("modelguard.status")
	attrReason         = attribute.Key("modelguard.reason")
	attrModel          = attribute.Key("modelguard.model")
	attrOperation      = attribute.Key("modelguard.operation")
	attrAuthMethod     = attribute.Key("modelguard.auth_method")
	attrPolicyRevision = attribute.Key("modelguard.policy_revision")
	attrRateLimit      = attribute.Key("modelguard.rate_limit")
	attrMethod         = attribute.Key("http.request.method")
)

// decisionSpan are the options of a decision's span, built once.
var decisionSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}

// noSpan is what step returns with tracing off: a span that does nothing.
var noSpan = trace.SpanFromContext(context.Background())

// startTrace starts d's span as a child of the trace context req carries
// and returns ctx with it; with tracing off it returns ctx as it is.
func (e *Engine) startTrace(ctx context.Context, req *Request, d *Decision) context.Context {
	if e.tracer == nil {
		return ctx
	}
	ctx = e.tracer.Extract(ctx, req.Headers)
	parent := trace.SpanContextFromContext(ctx)
	ctx, span := e.tracer.Start(ctx, spanDecision, decisionSpan...)
	d.Trace.span = span
	sc := span.SpanContext()
	if sc.IsSampled() || parent.IsValid() {
		d.Trace.TraceID = sc.TraceID().String()
	}
	if sc.IsSampled() {
		d.Trace.SpanID = sc.SpanID().String()
	}
	return ctx
}

// endTrace ends d's span with what was decided.
func endTrace(req *Request, d *Decision) {
	span := d.Trace.span
	switch {
	case span == nil:
		return
	case !span.IsRecording(): // not sampled: nothing to say
		span.End()
		return
	}
	attrs := append(make([]attribute.KeyValue, 0, 11), attrDecisionID.String(d.ID), attrGateway.String(req.Gateway),
		attrResult.String(result(d)), attrStatus.Int(d.Status), attrReason.String(d.Reason))
	for _, kv := range []attribute.KeyValue{attrMethod.String(req.Method), attrModel.String(d.Model.Name),
		attrOperation.String(d.Model.Operation), attrPolicyRevision.String(d.PolicyRevision), attrRateLimit.String(d.RateLimit)} {
		if kv.Value.AsString() != "" {
			attrs = append(attrs, kv)
		}
	}
	if d.Identity != nil {
		attrs = append(attrs, attrAuthMethod.String(d.Identity.Method))
	}
	span.SetAttributes(attrs...)
	if d.Status >= 500 {
		span.SetStatus(codes.Error, d.Reason)
	}
	span.End()
}

// step starts the child span of one step of the decision whose span ctx
// holds; with tracing off, or when the decision is not sampled (its steps,
// in the same trace, would not be either), it returns ctx and a span that
// does nothing.
func (e *Engine) step(ctx context.Context, name string) (context.Context, trace.Span) {
	if e.tracer == nil || !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, noSpan
	}
	return e.tracer.Start(ctx, name)
}

// endStep ends a step's span; when the step denied d, the span says why.
func endStep(span trace.Span, d *Decision) {
	if d.Reason != "" && span.IsRecording() {
		span.SetAttributes(attrReason.String(d.Reason))
		if d.Status >= 500 {
			span.SetStatus(codes.Error, d.Reason)
		}
	}
	span.End()
}

// auditStep starts the span of d's audit record, a child of d's span (which
// has ended: the record is written once the decision is made).
func (e *Engine) auditStep(d *Decision) trace.Span {
	// (Sampled, not recording: the decision's span has ended.)
	if e.tracer == nil || d.Trace.span == nil || !d.Trace.span.SpanContext().IsSampled() {
		return noSpan
	}
	_, span := e.tracer.Start(trace.ContextWithSpan(context.Background(), d.Trace.span), spanAudit)
	return span
}

// logIDs names d in operator logs: its decision id and, when traced, its
// trace and span ids.
func (d *Decision) logIDs() slog.Attr {
	if d.Trace.TraceID == "" {
		return slog.String("decision_id", d.ID)
	}
	ids := []slog.Attr{slog.String("decision_id", d.ID), slog.String("trace_id", d.Trace.TraceID)}
	if d.Trace.SpanID != "" {
		ids = append(ids, slog.String("span_id", d.Trace.SpanID))
	}
	return slog.Attr{Value: slog.GroupValue(ids...)} // no key: inlined
}
