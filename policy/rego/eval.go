package rego

import (
	"context"
	"log/slog"

	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/print"
)

// Per-evaluation values ride on the context, so that the prepared query and
// its print hook stay shared by every request.
type (
	decisionIDKey struct{}
	tracerKey     struct{}
)

// WithDecisionID returns ctx carrying the decision id that print() output
// of an evaluation under it is logged with.
func WithDecisionID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, decisionIDKey{}, id)
}

// WithTracer returns ctx under which evaluations record OPA's evaluation
// trace into t (for check -explain; tracing slows evaluation down).
func WithTracer(ctx context.Context, t *topdown.BufferTracer) context.Context {
	return context.WithValue(ctx, tracerKey{}, t)
}

func tracerFrom(ctx context.Context) *topdown.BufferTracer {
	t, _ := ctx.Value(tracerKey{}).(*topdown.BufferTracer)
	return t
}

// logPrints sends print() output to the operator log with the decision id
// and the print call's location.
type logPrints struct{ log *slog.Logger }

func (p logPrints) Print(pc print.Context, msg string) error {
	id, _ := pc.Context.Value(decisionIDKey{}).(string)
	loc := ""
	if pc.Location != nil {
		loc = pc.Location.String()
	}
	p.log.Info("rego print", "decision_id", id, "location", loc, "message", msg)
	return nil
}

// discardPrints drops print() output (policies compiled without an Engine).
type discardPrints struct{}

func (discardPrints) Print(print.Context, string) error { return nil }
