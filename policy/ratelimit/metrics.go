package ratelimit

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the rate limiter's Prometheus collectors.
type Metrics struct {
	Decisions      *prometheus.CounterVec // limit, result (allowed, refused)
	ReservedTokens *prometheus.CounterVec // limit
	StoreErrors    *prometheus.CounterVec // reason (timeout, error, circuit_open, full)
	StoreDuration  prometheus.Histogram   // one Redis round trip
	Fallbacks      prometheus.Counter
}

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_ratelimit_decisions_total",
			Help: "Requests a limit applied to, by limit and result (allowed, refused).",
		}, []string{"limit", "result"}),
		ReservedTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_ratelimit_reserved_tokens_total",
			Help: "Tokens reserved at admission by admitted requests, by token budget.",
		}, []string{"limit"}),
		StoreErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_ratelimit_store_errors_total",
			Help: "Decisions the store could not make, by reason (timeout, error, circuit_open, full).",
		}, []string{"reason"}),
		StoreDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "modelguard_ratelimit_redis_duration_seconds",
			Help:    "Time of one Redis round trip deciding a request's limits.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		}),
		Fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modelguard_ratelimit_fallbacks_total",
			Help: "Requests decided by local limits because Redis failed (on_error: local).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Decisions, m.ReservedTokens, m.StoreErrors, m.StoreDuration, m.Fallbacks)
	}
	return m
}

// ruleCounters are one limit's counters, resolved once per configuration
// so the request path does no label lookups.
type ruleCounters struct {
	allowed, refused, reserved prometheus.Counter
}

func (m *Metrics) forRule(name string) *ruleCounters {
	return &ruleCounters{
		allowed:  m.Decisions.WithLabelValues(name, "allowed"),
		refused:  m.Decisions.WithLabelValues(name, "refused"),
		reserved: m.ReservedTokens.WithLabelValues(name),
	}
}

func (m *Metrics) count(c *charge, allowed bool, tokens int64) {
	switch {
	case !allowed:
		if c.refused() {
			c.rule.counters.refused.Inc()
		}
	case c.rule.tokens:
		c.rule.counters.allowed.Inc()
		c.rule.counters.reserved.Add(float64(max(tokens, 0)))
	default:
		c.rule.counters.allowed.Inc()
	}
}
