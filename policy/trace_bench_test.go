package policy_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/tracing"
)

// BenchmarkDecideTracing is BenchmarkDecideAPIKey with tracing off, and on
// with a share of decisions sampled (as Open builds it: batched, here to
// an exporter that discards, so the collector's cost is not measured).
// The request carries no trace context: the ratio alone decides.
func BenchmarkDecideTracing(b *testing.B) {
	for _, bc := range []struct {
		name  string
		ratio float64 // < 0: tracing off
	}{{"off", -1}, {"sampled_1pct", 0.01}, {"sampled_all", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			var opts policy.Options
			if bc.ratio >= 0 {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
					sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(bc.ratio))))
				b.Cleanup(func() { tp.Shutdown(context.Background()) })
				opts.Tracer = tracing.New(tp, "bench")
			}
			s := newBenchSetupWith(b, "", "", opts)
			benchDecideCPU(b, s.engine, benchRequest("Bearer "+s.key))
		})
	}
}

// benchDecideCPU is benchDecide that also reports the process's CPU time
// per decision (cpu-ns/op: user and system, every goroutine, the span
// exporter's too). On a machine other work shares, wall time moves with
// the load; CPU time much less.
func benchDecideCPU(b *testing.B, e *policy.Engine, req *policy.Request) {
	ctx := context.Background()
	if d := e.Decide(ctx, req); !d.Allow {
		b.Fatalf("benchmark request denied: %d %s", d.Status, d.Reason)
	}
	b.ReportAllocs()
	before := cpuTime(b)
	b.ResetTimer()
	for b.Loop() {
		e.Decide(ctx, req)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime(b)-before)/float64(b.N), "cpu-ns/op")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
