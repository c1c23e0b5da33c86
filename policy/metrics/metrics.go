// Package metrics holds modelguard's Prometheus collectors. They are created
// per registry, never as globals, so tests and several engines in one process
// do not collide.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the collectors the core and the servers update.
type Metrics struct {
	Decisions     *prometheus.CounterVec // result, reason
	CheckDuration prometheus.Histogram
	PolicyReloads *prometheus.CounterVec // outcome
	KeyReloads    *prometheus.CounterVec // outcome
	SchemaReloads *prometheus.CounterVec // outcome
	JWKSRefreshes *prometheus.CounterVec // issuer, outcome
}

// New creates the collectors and registers them on reg (nil: not registered).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_decisions_total",
			Help: "Decisions by result (allow, deny) and reason.",
		}, []string{"result", "reason"}),
		CheckDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "modelguard_decision_duration_seconds",
			Help:    "Time to decide one request, from the core's entry to its answer.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}),
		PolicyReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_policy_reloads_total",
			Help: "Policy reload attempts by outcome (ok, refused).",
		}, []string{"outcome"}),
		KeyReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_api_key_reloads_total",
			Help: "API key file reload attempts by outcome (ok, refused).",
		}, []string{"outcome"}),
		SchemaReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_schema_reloads_total",
			Help: "User JSON Schema file reload attempts by outcome (ok, refused).",
		}, []string{"outcome"}),
		JWKSRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_jwks_refreshes_total",
			Help: "JWKS refresh attempts by issuer and outcome (ok, failed).",
		}, []string{"issuer", "outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.Decisions, m.CheckDuration, m.PolicyReloads, m.KeyReloads, m.SchemaReloads, m.JWKSRefreshes)
	}
	return m
}

// Outcome maps a reload or refresh error to its label value.
func Outcome(err error, failed string) string {
	if err != nil {
		return failed
	}
	return "ok"
}
