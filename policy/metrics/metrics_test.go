package metrics

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Decision counts in the series of its labels, the one WithLabelValues
// names, for the first combinations (cached) and past the cache's bound.
func TestDecisionCountsInItsSeries(t *testing.T) {
	m := New(prometheus.NewRegistry())
	labels := [][3]string{
		{"allow", "allowed", "envoy"},
		{"deny", "policy_denied", "envoy"},
		{"deny", "policy_denied", "kong"},
		{"would_deny", "policy_denied", "envoy"},
	}
	for i := range maxDecisionSeries + 10 {
		labels = append(labels, [3]string{"deny", fmt.Sprintf("reason_%d", i), "envoy"})
	}
	for n, l := range labels {
		for range n%3 + 1 {
			m.Decision(l[0], l[1], l[2]).Inc()
		}
	}
	for n, l := range labels {
		if got, want := testutil.ToFloat64(m.Decisions.WithLabelValues(l[0], l[1], l[2])), float64(n%3+1); got != want {
			t.Fatalf("%v: counted %v, want %v", l, got, want)
		}
	}
	if got, want := testutil.CollectAndCount(m.Decisions), len(labels); got != want {
		t.Errorf("%d series, want %d", got, want)
	}
	if n := len(*m.decisions.known.Load()); n != maxDecisionSeries {
		t.Errorf("%d series cached, want the bound %d", n, maxDecisionSeries)
	}
}

func BenchmarkDecision(b *testing.B) {
	m := New(nil)
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.Decision("allow", "allowed", "envoy").Inc()
		}
	})
	b.Run("with_label_values", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.Decisions.WithLabelValues("allow", "allowed", "envoy").Inc()
		}
	})
}
