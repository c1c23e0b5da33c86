package policy

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"

	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/dlp"
	"github.com/modelguard/modelguard/policy/lockout"
	"github.com/modelguard/modelguard/policy/models"
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
			e.log.Info("client address refused", d.logIDs(), "request_id", req.ID, "reason", v.Reason, "list", v.List, "source_address", req.SourceAddress)
			e.deny(d, http.StatusForbidden, v.Reason, "access denied")
			return false
		}
	}
	if e.lockout != nil {
		left, err := e.lockout.Locked(ctx, req.SourceAddress)
		if err != nil {
			e.log.Error("lockout store unavailable: denied", d.logIDs(), "request_id", req.ID, "error", err)
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
		e.log.Error("authentication failure not counted for lockout", d.logIDs(), "request_id", req.ID, "error", err)
	}
}

// scanPrompt runs the DLP rules over the prompt text of a model request.
// It reports false when d has been denied; flagging rules are named in
// d.DLP and counted.
func (e *Engine) scanPrompt(req *Request, d *Decision, mr *models.Model) bool {
	if e.dlp == nil {
		return true
	}
	f := e.dlp.Scan(mr.Prompts())
	if f == 0 {
		return true
	}
	if rule, denied := e.dlp.Denied(f); denied {
		e.metrics.DLPMatches.WithLabelValues(rule, dlp.ActionDeny).Inc()
		e.log.Info("prompt refused by a data-loss rule", d.logIDs(), "request_id", req.ID, "rule", rule)
		e.deny(d, http.StatusBadRequest, "dlp_denied", "request blocked by data-loss rule "+strconv.Quote(rule))
		d.DLP = rule
		return false
	}
	for _, rule := range e.dlp.Names(f) {
		e.metrics.DLPMatches.WithLabelValues(rule, dlp.ActionFlag).Inc()
	}
	d.DLP = e.dlp.Joined(f)
	return true
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
