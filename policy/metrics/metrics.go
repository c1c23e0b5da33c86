// Package metrics holds modelguard's Prometheus collectors. They are created
// per registry, never as globals, so tests and several engines in one process
// do not collide.
package metrics

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/modelguard/modelguard/policy/lockout"
	"github.com/modelguard/modelguard/policy/ratelimit"
)

// Metrics are the collectors the core and the servers update.
type Metrics struct {
	Decisions     *prometheus.CounterVec // result, reason, gateway; count with Decision
	CheckDuration prometheus.Histogram
	PolicyReloads *prometheus.CounterVec // outcome
	KeyReloads    *prometheus.CounterVec // outcome
	SchemaReloads *prometheus.CounterVec // outcome
	ConfigReloads *prometheus.CounterVec // outcome (policy/reload)
	JWKSRefreshes *prometheus.CounterVec // issuer, outcome
	IPListReloads *prometheus.CounterVec // list, outcome
	DLPMatches    *prometheus.CounterVec // rule, action (deny, flag)
	CacheLookups  *prometheus.CounterVec // cache (jwt, decision), result (hit, miss)

	// The audit trail (policy/audit).
	AuditRecords       *prometheus.CounterVec   // sink
	AuditQueueDepth    prometheus.Gauge         // records waiting for the writer
	AuditSyncDuration  *prometheus.HistogramVec // sink
	AuditSyncedSeq     prometheus.Gauge         // last seq durable on every sink
	AuditSpoolBytes    prometheus.Gauge
	AuditHTTPDelivered prometheus.Counter
	AuditSinkErrors    *prometheus.CounterVec // sink, op
	AuditDenied        prometheus.Counter     // requests denied 503 because the trail could not take records
	AuditLost          *prometheus.CounterVec // reason

	// Rate limits (policy/ratelimit owns its collectors).
	RateLimit *ratelimit.Metrics
	// Brute-force lockout (policy/lockout owns its collectors).
	Lockout *lockout.Metrics
	// Load shedding (policy/admission).
	Shed *prometheus.CounterVec // limit
	// Shadow policy answers compared with the enforced one's.
	Shadow *prometheus.CounterVec // outcome

	decisions decisionCounters
}

// Decision is the modelguard_decisions_total series of one decision's
// labels. Every decision counts in it: WithLabelValues would hash the
// values and allocate each time.
func (m *Metrics) Decision(result, reason, gateway string) prometheus.Counter {
	k := decisionLabels{result, reason, gateway}
	if known := m.decisions.known.Load(); known != nil {
		if c, ok := (*known)[k]; ok {
			return c
		}
	}
	return m.decisions.add(m.Decisions, k)
}

// decisionLabels are the label values of one decisions series.
type decisionLabels struct{ result, reason, gateway string }

// decisionCounters caches the children of Decisions, which are never
// deleted. The combinations are few (results, the reasons modelguard and
// the policy give, gateways), so the map is replaced when one is added,
// never changed, and lookups take no lock. Past maxDecisionSeries
// combinations (a policy that puts request data in its reasons) the rest
// are resolved each time rather than copying an ever larger map.
type decisionCounters struct {
	mu    sync.Mutex // held while adding
	known atomic.Pointer[map[decisionLabels]prometheus.Counter]
}

const maxDecisionSeries = 1024

func (d *decisionCounters) add(vec *prometheus.CounterVec, k decisionLabels) prometheus.Counter {
	c := vec.WithLabelValues(k.result, k.reason, k.gateway)
	d.mu.Lock()
	defer d.mu.Unlock()
	var known map[decisionLabels]prometheus.Counter
	if p := d.known.Load(); p != nil {
		known = *p
	}
	if len(known) >= maxDecisionSeries {
		return c
	}
	next := make(map[decisionLabels]prometheus.Counter, len(known)+1)
	maps.Copy(next, known)
	next[k] = c
	d.known.Store(&next)
	return c
}

// New creates the collectors and registers them on reg (nil: not registered).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_decisions_total",
			Help: "Decisions by result (allow, deny), reason and gateway (the adapter: envoy, kong, envoy_http, nginx, forward_auth).",
		}, []string{"result", "reason", "gateway"}),
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
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_config_reloads_total",
			Help: "Configuration file reload attempts by outcome (ok, refused).",
		}, []string{"outcome"}),
		JWKSRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_jwks_refreshes_total",
			Help: "JWKS refresh attempts by issuer and outcome (ok, failed).",
		}, []string{"issuer", "outcome"}),
		IPListReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_ip_list_reloads_total",
			Help: "IP list file reload attempts by list and outcome (ok, refused).",
		}, []string{"list", "outcome"}),
		DLPMatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_dlp_matches_total",
			Help: "Requests whose prompt a data-loss rule matched, by rule and action (deny, flag).",
		}, []string{"rule", "action"}),
		CacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_cache_lookups_total",
			Help: "Lookups in modelguard's caches by cache (jwt: verified tokens, decision: policy decisions) and result (hit, miss).",
		}, []string{"cache", "result"}),
		AuditRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_audit_records_written_total",
			Help: "Audit records written by sink (file, stdout; http counts records spooled).",
		}, []string{"sink"}),
		AuditQueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "modelguard_audit_queue_depth",
			Help: "Audit records queued for the writer.",
		}),
		AuditSyncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "modelguard_audit_fsync_duration_seconds",
			Help:    "Time to make one group of audit records durable, by sink.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"sink"}),
		AuditSyncedSeq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "modelguard_audit_synced_seq",
			Help: "Sequence number of the last audit record durable on every sink.",
		}),
		AuditSpoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "modelguard_audit_spool_bytes",
			Help: "Bytes of audit records spooled and not yet acknowledged by the HTTP endpoint.",
		}),
		AuditHTTPDelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modelguard_audit_http_delivered_total",
			Help: "Audit records acknowledged by the HTTP endpoint (at least once: retries may deliver a record again).",
		}),
		AuditSinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_audit_sink_errors_total",
			Help: "Failed audit sink operations by sink and operation (write, sync, send); each is retried.",
		}, []string{"sink", "op"}),
		AuditDenied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modelguard_audit_denied_total",
			Help: "Requests denied with 503 because the audit trail could not take records (queue full or sink failing).",
		}),
		AuditLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_audit_records_lost_total",
			Help: "Audit records that could not be recorded, by reason (queue_full, closed, write_failed, shutdown).",
		}, []string{"reason"}),
		Shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_overload_shed_total",
			Help: "Requests refused with 503 overloaded, by the limit that was reached (body_bytes, concurrent_checks).",
		}, []string{"limit"}),
		Shadow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_shadow_decisions_total",
			Help: "Shadow policy answers by outcome: agree or disagree with the enforced policy (allow, deny or error), shadow_error (the shadow failed where the enforced policy did not), dropped (the shadow queue was full).",
		}, []string{"outcome"}),
	}
	m.RateLimit = ratelimit.NewMetrics(reg)
	m.Lockout = lockout.NewMetrics(reg)
	if reg != nil {
		reg.MustRegister(m.Decisions, m.CheckDuration, m.PolicyReloads, m.KeyReloads, m.SchemaReloads, m.ConfigReloads, m.JWKSRefreshes, m.IPListReloads, m.DLPMatches, m.CacheLookups,
			m.AuditRecords, m.AuditQueueDepth, m.AuditSyncDuration, m.AuditSyncedSeq, m.AuditSpoolBytes,
			m.AuditHTTPDelivered, m.AuditSinkErrors, m.AuditDenied, m.AuditLost, m.Shed, m.Shadow)
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
