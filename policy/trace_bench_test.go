package policy_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/modelguard/modelguard/policy"
)

// BenchmarkDecideTracing is BenchmarkDecideAPIKey with tracing off, and on
// with a share of decisions sampled (policy.BenchTracer). The request
// carries no trace context: the ratio alone decides.
func BenchmarkDecideTracing(b *testing.B) {
	for _, bc := range policy.TraceBenchCases {
		b.Run(bc.Name, func(b *testing.B) {
			s := newBenchSetupWith(b, "", "", "", policy.Options{Tracer: policy.BenchTracer(b, bc.Ratio)})
			benchDecideCPU(b, s.engine, benchRequest("Bearer "+s.key))
		})
	}
}

// benchDecideCPU is benchDecide that also reports the process's CPU time
// per decision (cpu-ns/op: user and system, every goroutine, the span
// exporter's too). On a machine other work shares, wall time moves with
// the load; CPU time less.
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
