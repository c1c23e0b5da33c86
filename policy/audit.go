package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/bundle"
	"github.com/modelguard/modelguard/policy/metrics"
)

// AuditSink takes audit events; *audit.Writer, the trail, is the real one.
type AuditSink interface {
	// Record returns once the event is as durable as the trail promises
	// (audit.durability), or an error: then the event may not be recorded.
	Record(*audit.Event) error
}

// offerer is an AuditSink that can also queue an event without waiting:
// the records of denials, which acknowledge nothing, so that a denial is
// answered at once even while the trail is slow or full (a record it cannot
// take is counted and logged by the sink).
type offerer interface {
	Offer(*audit.Event) error
}

// Admitter says whether the audit trail can take a record now (nil) or not
// (an error): a request must never be served without its record, and a
// request the trail cannot take is denied before any work is done.
// *audit.Writer implements it.
type Admitter interface {
	Admit(ctx context.Context) error
}

// reloaded counts one reload attempt of a subsystem (key file, schemas,
// policies) and records its operator event: ok, or refused with the error.
// The decision cache is dropped either way.
func (e *Engine) reloaded(counter *prometheus.CounterVec, ev audit.Event, err error) {
	counter.WithLabelValues(metrics.Outcome(err, "refused")).Inc()
	e.dropDecisions()
	e.operator(ev, err, "refused")
}

// policyReloaded counts and records a policy reload attempt, ok or
// refused. A bundle service that could not be reached refused nothing (the
// running policy stays): it is counted as unavailable and logged by the
// source, not recorded, so that an outage does not fill the trail.
func (e *Engine) policyReloaded(revision string, err error) {
	if _, fetch := errors.AsType[*bundle.FetchError](err); fetch {
		e.metrics.PolicyReloads.WithLabelValues("unavailable").Inc()
		return
	}
	e.reloaded(e.metrics.PolicyReloads, audit.Event{Kind: audit.KindPolicyReload, PolicyRevision: revision}, err)
}

// maxDetail bounds an operator event's detail (a reload error can list many
// policy compile errors).
const maxDetail = 2048

// truncate bounds an event's detail to maxDetail bytes.
func truncate(detail string) string {
	if len(detail) > maxDetail {
		return detail[:maxDetail] + "..."
	}
	return detail
}

// operator records an operator event whose outcome is "ok", or failed with
// err's message as the detail.
func (e *Engine) operator(ev audit.Event, err error, failed string) {
	if e.audit == nil {
		return
	}
	ev.Outcome = metrics.Outcome(err, failed)
	if err != nil {
		ev.Detail = truncate(err.Error())
	}
	if err := e.audit.Record(&ev); err != nil {
		e.log.Error("audit record failed", "kind", ev.Kind, "error", err)
	}
}

// RecordDecision writes the audit record of d, as soon as it is decided. For
// an allow it returns once the record is durable (audit.durability), or an
// error, and the request must then not be served; a denial's record is
// queued without waiting. A record the sink cannot take is counted and
// logged by it, and logged here. What the gateway learns after the
// response is a separate record (RecordCompletion).
func (e *Engine) RecordDecision(req *Request, d *Decision) error {
	if e.audit == nil {
		return nil
	}
	ev := audit.Event{
		Kind:          audit.KindDecision,
		Time:          d.Start,
		DecisionID:    d.ID,
		RequestID:     req.ID,
		Gateway:       req.Gateway,
		Model:         d.Model.Name,
		Operation:     d.Model.Operation,
		Method:        req.Method,
		Path:          req.Path,
		SourceAddress: req.SourceAddress,
		// For a dry-run lift: would_deny, with the policy's status and reason.
		Result: result(d), Status: status(d), Reason: reason(d),
		PolicyRevision: d.PolicyRevision,
		LatencyMicros:  d.Latency.Microseconds(),
		RateLimit:      d.RateLimit,
		RateLimitKey:   d.RateLimitKey,
		TraceID:        d.Trace.TraceID,
		SpanID:         d.Trace.SpanID,
		IPList:         d.IPList,
		DLP:            d.DLP,
	}
	if d.BodyUnchecked {
		ev.BodyCheck = audit.BodyCheckSkipped
	}
	if id := d.Identity; id != nil {
		ev.Subject, ev.AuthMethod, ev.KeyID, ev.Issuer = id.Subject, id.Method, id.KeyID, id.Issuer
	}
	if e.bodySHA256 && len(req.Body) > 0 {
		sum := sha256.Sum256(req.Body)
		ev.BodySHA256 = hex.EncodeToString(sum[:])
	}
	var err error
	if d.Allow {
		err = e.audit.Record(&ev)
	} else {
		err = e.offer(&ev)
	}
	if err != nil {
		e.log.Error("audit record failed", d.logIDs(), "result", ev.Result, "error", err)
	}
	return err
}

// Completion is what a gateway learns of a request only after the
// response (Kong's log phase).
type Completion struct {
	Gateway string
	// Status is what the client finally got (the upstream's, on an allow);
	// Latency the time from the decision to the end of the response.
	Status  int
	Latency time.Duration
	// Method, Path and SourceAddress are set when the decision record
	// lacks them: the gateway hands them over only when the decision needs
	// them (Kong: not for a request without a valid credential).
	Method, Path, SourceAddress string
}

// RecordCompletion adds c to the record of d, written before the response
// (Kong: the decision in the access phase, this in the log phase), as a
// completion record linked by decision id, with d's reason (d as the
// adapter last answered: an allow it had to overturn is a denial). It
// acknowledges nothing, so it is queued without waiting; a record the sink
// cannot take is counted and logged by it, and logged here.
func (e *Engine) RecordCompletion(d *Decision, c Completion) error {
	if e.audit == nil {
		return nil
	}
	ev := audit.Event{
		Kind:          audit.KindCompletion,
		DecisionID:    d.ID,
		Gateway:       c.Gateway,
		Method:        c.Method,
		Path:          c.Path,
		SourceAddress: c.SourceAddress,
		Status:        c.Status,
		Reason:        d.Reason,
		LatencyMicros: c.Latency.Microseconds(),
	}
	err := e.offer(&ev)
	if err != nil {
		e.log.Error("audit record failed", "kind", ev.Kind, d.logIDs(), "error", err)
	}
	return err
}

// offer queues a record that acknowledges nothing without waiting, when the
// sink can (the trail's writer); otherwise it records it.
func (e *Engine) offer(ev *audit.Event) error {
	if o, ok := e.audit.(offerer); ok {
		return o.Offer(ev)
	}
	return e.audit.Record(ev)
}
