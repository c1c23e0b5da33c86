package policy

import (
	"context"
)

// shed denies d as overloaded because limit was reached.
func (e *Engine) shed(d *Decision, limit string) {
	e.metrics.Shed.WithLabelValues(limit).Inc()
	e.log.Warn("overloaded: request shed", d.logIDs(), "limit", limit)
	e.deny(d, 0, "", "") // for the decision id header; SetOverloaded sets the rest
	d.SetOverloaded()
}

// ReserveBody takes n bytes of the budget for request bodies in flight
// (admission.max_inflight_body_bytes), waiting up to admission.max_wait.
// On false the adapter answers an overloaded denial without reading the
// body; on true it calls ReleaseBody(n) when the request no longer holds
// the bytes.
func (e *Engine) ReserveBody(ctx context.Context, n int64) bool {
	if e.bodies == nil {
		return true
	}
	if e.bodies.Acquire(ctx, n) != nil {
		e.metrics.Shed.WithLabelValues("body_bytes").Inc()
		return false
	}
	return true
}

// ReleaseBody gives back bytes taken by ReserveBody.
func (e *Engine) ReleaseBody(n int64) {
	if e.bodies != nil {
		e.bodies.Release(n)
	}
}
