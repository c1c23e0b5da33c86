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
	// Settlements count how reservations ended where a gateway settles
	// them: settled, error (the store failed: kept), no_usage (the
	// response reported none: kept), no_response (none seen: kept).
	Settlements   *prometheus.CounterVec // result
	SettledTokens *prometheus.CounterVec // limit, direction (refunded, overrun)
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
		Settlements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_ratelimit_settlements_total",
			Help: "Token reservations a gateway settled from the real usage, by result (settled, error, no_usage, no_response; all but settled keep the reservation as the charge).",
		}, []string{"result"}),
		SettledTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_ratelimit_settled_tokens_total",
			Help: "Tokens settlement moved, by token budget and direction (refunded: unused; overrun: used beyond the reservation, charged up to an empty allowance).",
		}, []string{"limit", "direction"}),
	}
	if reg != nil {
		reg.MustRegister(m.Decisions, m.ReservedTokens, m.StoreErrors, m.StoreDuration, m.Fallbacks, m.Settlements, m.SettledTokens)
	}
	return m
}

// ruleCounters are one limit's counters, resolved once per configuration
// so the request path does no label lookups.
type ruleCounters struct {
	allowed, refused, reserved prometheus.Counter
	refunded, overrun          prometheus.Counter
}

func (m *Metrics) forRule(name string) *ruleCounters {
	return &ruleCounters{
		allowed:  m.Decisions.WithLabelValues(name, "allowed"),
		refused:  m.Decisions.WithLabelValues(name, "refused"),
		reserved: m.ReservedTokens.WithLabelValues(name),
		refunded: m.SettledTokens.WithLabelValues(name, "refunded"),
		overrun:  m.SettledTokens.WithLabelValues(name, "overrun"),
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

// countSettled counts what settling c moves: delta tokens more than
// reserved.
func countSettled(c *charge, delta int64) {
	switch {
	case delta < 0:
		c.rule.counters.refunded.Add(float64(-delta))
	case delta > 0:
		c.rule.counters.overrun.Add(float64(delta))
	}
}
