package policy

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"

	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/lockout"
)

// screen runs the checks that come before authentication, cheapest first:
// the client address lists, then the brute-force lockout. It reports false
// when d has been denied.
func (e *Engine) screen(ctx context.Context, req *Request, d *Decision) bool {
	if e.ipLists == nil && e.lockout == nil {
		return true
	}
	// The address is the one the gateway reports (Envoy's source address,
	// Kong's client IP as the plugin's client_ip setting says), never a
	// header the client controls.
	if err := req.Complete(PartSourceAddress); err != nil {
		e.refuse(d, req, err)
		return false
	}
	if e.ipLists != nil {
		v := e.ipLists.Check(req.SourceAddress)
		d.IPList = v.List
		if v.Reason != "" {
			e.log.Info("client address refused", "decision_id", d.ID, "request_id", req.ID, "reason", v.Reason, "list", v.List, "source_address", req.SourceAddress)
			e.deny(d, http.StatusForbidden, v.Reason, "access denied")
			return false
		}
	}
	if e.lockout != nil {
		left, err := e.lockout.Locked(ctx, req.SourceAddress)
		if err != nil {
			e.log.Error("lockout store unavailable: denied", "decision_id", d.ID, "request_id", req.ID, "error", err)
			e.deny(d, http.StatusServiceUnavailable, "lockout_unavailable", "service unavailable")
			return false
		}
		if left > 0 {
			status := e.lockout.Status()
			e.deny(d, status, "locked_out", "too many failed authentication attempts")
			if status == http.StatusTooManyRequests {
				d.ResponseHeaders = append(d.ResponseHeaders, Header{"retry-after", strconv.Itoa(int(math.Ceil(left.Seconds())))})
			}
			return false
		}
	}
	return true
}

// authFailed counts a failed authentication towards the lockout of its
// source. The request is denied 401 whatever the count says; a store
// failure is logged (and counted by the lockout).
func (e *Engine) authFailed(ctx context.Context, req *Request, d *Decision, err error) {
	if e.lockout == nil {
		return
	}
	var keyID string
	if ke, ok := errors.AsType[*apikey.Error](err); ok {
		keyID = ke.KeyID
	}
	if err := e.lockout.Failed(ctx, req.SourceAddress, keyID); err != nil {
		e.log.Error("authentication failure not counted for lockout", "decision_id", d.ID, "request_id", req.ID, "error", err)
	}
}

// lockedOut logs and records a lockout as it starts.
func (e *Engine) lockedOut(t lockout.Trip) {
	e.log.Warn("client address locked out after failed authentications", "source_address", t.Source, "by", t.By, "key_id", t.KeyID)
	if e.audit == nil {
		return
	}
	ev := audit.Event{Kind: audit.KindLockout, Time: e.now(), SourceAddress: t.Source, KeyID: t.KeyID, Reason: "failures_by_" + t.By}
	if err := e.offer(&ev); err != nil {
		e.log.Error("audit record failed", "kind", ev.Kind, "error", err)
	}
}
