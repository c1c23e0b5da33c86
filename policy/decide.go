package policy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/codes"

	"github.com/modelguard/modelguard/policy/jwtauth"
	"github.com/modelguard/modelguard/policy/models"
	"github.com/modelguard/modelguard/policy/rego"
)

// Decide evaluates req and records its audit event, and returns once the
// record is as durable as audit.durability says: the whole decision, as an
// adapter whose gateway acts on it at once (Envoy) needs it. An allow whose
// record could not be made durable in time becomes a 503
// (audit_unavailable): no request is served without its record.
func (e *Engine) Decide(ctx context.Context, req *Request) *Decision {
	return e.Commit(req, e.Evaluate(ctx, req))
}

// Commit records d and returns the decision to act on: d, or, for an allow
// whose record could not be made durable in time, a 503 audit_unavailable
// denial with d's id. Decide is Evaluate then Commit; an adapter that reads
// more of the request for the record (Kong, for the body hash) calls them
// apart.
func (e *Engine) Commit(req *Request, d *Decision) *Decision {
	span := e.auditStep(d)
	defer span.End()
	if err := e.RecordDecision(req, d); err != nil && d.Allow {
		e.metrics.AuditDenied.Inc()
		e.log.Error("allowed request denied: its audit record is not durable", d.logIDs(), "request_id", req.ID, "error", err)
		span.SetStatus(codes.Error, "audit_unavailable")
		denied := e.Deny(d.ID, http.StatusServiceUnavailable, "audit_unavailable", "service unavailable")
		denied.Trace = d.Trace
		return denied
	}
	return d
}

// Evaluate authenticates and authorizes req and counts the decision in the
// metrics, without recording an audit event (Decide does both). It never
// returns nil and never allows on an error path: failures, including
// panics, deny.
func (e *Engine) Evaluate(ctx context.Context, req *Request) (d *Decision) {
	start := e.now()
	d = &Decision{ID: NewDecisionID(), Start: start}
	ctx = e.startTrace(ctx, req, d)
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("panic while deciding: denied", d.logIDs(), "panic", r, "stack", string(debug.Stack()))
			*d = Decision{ID: d.ID, Start: start, Trace: d.Trace}
			e.deny(d, http.StatusServiceUnavailable, "internal_error", "service unavailable")
		}
		d.Latency = e.now().Sub(start)
		e.metrics.Decision(result(d), reason(d), req.Gateway).Inc()
		e.metrics.CheckDuration.Observe(d.Latency.Seconds())
		endTrace(req, d)
	}()
	e.decide(ctx, req, d)
	return d
}

func (e *Engine) decide(ctx context.Context, req *Request, d *Decision) {
	if !e.auditAdmits(ctx, req, d) {
		return
	}
	// Under CPU saturation a check waits briefly for a slot, then is shed
	// as overloaded: the policy's timeout then measures evaluation, not a
	// queue of checks all slowing each other down.
	if e.checks != nil {
		if err := e.checks.Acquire(ctx, 1); err != nil {
			e.shed(d, "concurrent_checks")
			return
		}
		defer e.checks.Release(1)
	}
	if !e.screen(ctx, req, d) {
		return
	}
	sctx, span := e.step(ctx, spanAuthenticate)
	id, cred, reason, err := e.authenticate(sctx, req)
	if _, ok := errors.AsType[*Refusal](err); ok { // the gateway could not hand the certificate over
		e.refuse(d, req, err)
		endStep(span, d)
		return
	}
	if err != nil {
		if jwtauth.Unavailable(reason) { // a store or endpoint failing, not the caller
			e.log.Error("authentication dependency unavailable: denied", d.logIDs(), "request_id", req.ID, "reason", reason, "error", err)
			e.deny(d, http.StatusServiceUnavailable, reason, "service unavailable")
			endStep(span, d)
			return
		}
		e.log.Info("authentication failed", d.logIDs(), "request_id", req.ID, "reason", reason, "error", err)
		e.authFailed(ctx, req, d, err)
		e.deny(d, http.StatusUnauthorized, reason, "invalid or missing credentials")
		d.ResponseHeaders = append(d.ResponseHeaders, Header{"www-authenticate", `Bearer realm="modelguard"`})
		endStep(span, d)
		return
	}
	endStep(span, d)
	d.Identity = id

	_, span = e.step(ctx, spanBody)
	mr, ok := e.inspect(req, d)
	endStep(span, d)
	if !ok {
		return
	}

	sctx, span = e.step(ctx, spanPolicy)
	in := &policyInput{e: e, req: req, id: id, model: d.Model, mr: mr}
	res, input, err := e.authz.EvalInput(rego.WithDecisionID(sctx, d.ID), in)
	if err == nil && input == nil && e.shadow != nil {
		// Decided from the cache: the shadow policy still needs the input
		// (a failure to build it is in.err).
		input, _ = rego.BuildInput(in, in.reads)
	}
	buildErr := in.err
	d.PolicyRevision = res.Revision
	if buildErr == nil {
		e.shadow.offer(d, req, input, res, err)
	}
	if buildErr == nil && err == nil {
		err = e.checkResultHeaders(res, cred)
	}
	if buildErr == nil && err == nil {
		d.Metadata = res.DynamicMetadata
	}
	switch {
	case buildErr != nil:
		e.refuse(d, req, buildErr)
	case errors.Is(err, rego.ErrNoPolicy):
		// A bundle source before its first bundle: never served without
		// one, not even in dry-run.
		e.deny(d, http.StatusServiceUnavailable, rego.ReasonUnavailable, "service unavailable")
	case err == nil && res.Allow:
	case e.dryRunLifts(req, d, res, err):
		res, err = rego.Result{Allow: true, RateLimitClass: res.RateLimitClass, Revision: res.Revision}, nil
	default:
		e.policyRefused(d, req, res, err)
	}
	endStep(span, d)
	if buildErr != nil || err != nil || !res.Allow {
		return
	}
	// Limits come after the policy, which may pick their class, and are
	// charged only for requests it allows.
	if e.limiter != nil {
		sctx, span = e.step(ctx, spanRateLimits)
		ok := e.limit(sctx, req, d, id, mr, res.RateLimitClass)
		endStep(span, d)
		if !ok {
			return
		}
	}
	e.allow(d, req, id, cred, res)
}

// auditAdmits reports whether the trail can take the request's record. No
// request is served without its audit record: when the trail cannot take
// one (queue full, sink failing), d is denied before any work is done.
func (e *Engine) auditAdmits(ctx context.Context, req *Request, d *Decision) bool {
	if e.admit == nil {
		return true
	}
	if err := e.admit.Admit(ctx); err != nil {
		e.metrics.AuditDenied.Inc()
		e.log.Debug("audit trail unavailable: denied", d.logIDs(), "request_id", req.ID, "error", err)
		e.deny(d, http.StatusServiceUnavailable, "audit_unavailable", "service unavailable")
		return false
	}
	return true
}

// inspect fetches the request's target (and, for model routes, its body)
// from the gateway if it hands them over on demand, runs the body checks
// and sets d.Model. It reports false when d has been denied.
func (e *Engine) inspect(req *Request, d *Decision) (*models.Model, bool) {
	if err := req.Complete(PartTarget); err != nil {
		e.refuse(d, req, err)
		return nil, false
	}
	// Bodies are read and parsed only for authenticated callers of model
	// routes.
	if req.Fetch != nil && e.models.ReadsBody(req.Method, req.Path) {
		if err := req.Complete(PartBody); err != nil {
			e.refuse(d, req, err)
			return nil, false
		}
	}
	mr, denial, isModel := e.models.Inspect(models.Request{
		Method: req.Method, Path: req.Path,
		ContentType: req.Headers["content-type"], Encoding: req.Headers["content-encoding"],
		Body: req.Body, BodyTruncated: req.BodyTruncated, BodyOmitted: req.BodyOmitted,
		HeadersOnly: req.HeadersOnly,
	})
	if denial != nil {
		e.deny(d, denial.Status, denial.Reason, denial.Message)
		return nil, false
	}
	if isModel {
		d.Model = Model{Name: mr.Name, Operation: mr.Operation}
		d.BodyUnchecked = mr.Unchecked
		if !e.scanPrompt(req, d, mr) {
			return nil, false
		}
	} else {
		d.Model = listing(req)
	}
	return mr, true
}

// policyRefused denies d as the policy answered: its error (503
// policy_error) or its denial, with the defaults for what the result
// leaves out (403, policy_denied, "access denied").
func (e *Engine) policyRefused(d *Decision, req *Request, res rego.Result, err error) {
	if err != nil {
		e.log.Error("policy evaluation failed: denied", d.logIDs(), "request_id", req.ID, "error", err)
		e.deny(d, http.StatusServiceUnavailable, "policy_error", "service unavailable")
		return
	}
	status, reason, msg := policyDenial(res)
	e.deny(d, status, reason, msg)
	d.ResponseHeaders = appendHeaderMap(d.ResponseHeaders, res.ResponseHeaders)
	d.PolicyBody = res.Body
}

// checkResultHeaders refuses a result that would set or remove headers
// modelguard owns: the identity headers and the credential a built-in
// authenticator verified (removed before the upstream).
func (e *Engine) checkResultHeaders(res rego.Result, cred credential) error {
	owned := func(name string) bool {
		return name == cred.header || slices.Contains(e.identityRemove, name)
	}
	for name := range res.Headers {
		if owned(name) {
			return fmt.Errorf("policy %s: result sets %s, a header modelguard owns", res.Revision, name)
		}
	}
	for _, name := range res.RemoveHeaders {
		if owned(name) {
			return fmt.Errorf("policy %s: result removes %s, a header modelguard owns", res.Revision, name)
		}
	}
	return nil
}

// dryRunLifts reports whether the policy's denial or error on req is let
// through by authorization.dry_run, and then sets d.WouldDeny to what it
// would have answered. Only the policy's answer is ever lifted.
func (e *Engine) dryRunLifts(req *Request, d *Decision, res rego.Result, err error) bool {
	if !e.dryRun.Applies(d.Model.Name, req.Path) {
		return false
	}
	w := &PolicyDenial{Status: http.StatusServiceUnavailable, Reason: "policy_error"}
	if err == nil {
		w.Status, w.Reason, _ = policyDenial(res)
	}
	d.WouldDeny = w
	e.log.Info("dry-run: the policy would deny, let through", d.logIDs(), "request_id", req.ID, "status", w.Status, "reason", w.Reason, "error", err)
	return true
}

func (e *Engine) allow(d *Decision, req *Request, id *Identity, cred credential, res rego.Result) {
	d.Allow = true
	d.Status = http.StatusOK
	d.Reason = "allowed"
	// Each list in one allocation: the identity headers (identityRemove
	// names those configured) and the policy's, and what is removed.
	d.UpstreamHeaders = slices.Grow(d.UpstreamHeaders, len(e.identityRemove)+len(res.Headers))
	d.RemoveHeaders = slices.Grow(d.RemoveHeaders, len(res.RemoveHeaders)+1+len(e.identityRemove))
	set := func(name, value string) {
		if name != "" && value != "" {
			d.UpstreamHeaders = append(d.UpstreamHeaders, Header{name, value})
		}
	}
	set(e.identity.Subject, id.Subject)
	set(e.identity.Roles, strings.Join(id.Roles, ","))
	set(e.identity.AuthMethod, id.Method)
	set(e.identity.KeyID, id.KeyID)
	set(e.identity.DecisionID, d.ID)
	d.UpstreamHeaders = appendHeaderMap(d.UpstreamHeaders, res.Headers)
	d.ResponseHeaders = appendHeaderMap(d.ResponseHeaders, res.ResponseHeaders)
	d.RemoveHeaders = append(d.RemoveHeaders, res.RemoveHeaders...)

	// Identity headers the client sent that we did not overwrite must not
	// reach the upstream; neither may the credential.
	if cred.header != "" {
		d.RemoveHeaders = append(d.RemoveHeaders, cred.header)
	}
	for _, h := range e.identityRemove {
		if !hasHeader(d.UpstreamHeaders, h) {
			d.RemoveHeaders = append(d.RemoveHeaders, h)
		}
	}
	// ...nor may their spellings with "_" for "-", which upstreams fold.
	d.RemoveHeaders = append(d.RemoveHeaders, UnderscoreVariants(req.Headers, e.guarded)...)
}

func (e *Engine) deny(d *Decision, status int, reason, message string) {
	d.Allow = false
	d.Status = status
	d.Reason = reason
	d.Message = message
	if e.identity.DecisionID != "" {
		d.ResponseHeaders = append(d.ResponseHeaders, Header{e.identity.DecisionID, d.ID})
	}
}

// refuse denies a request whose Fetch failed, or that could not be made
// into the policy's input: with the Refusal, or 503 gateway_read_error.
func (e *Engine) refuse(d *Decision, req *Request, err error) {
	r := asRefusal(err)
	e.log.Error("request refused before the policy: denied", d.logIDs(), "request_id", req.ID, "reason", r.Reason, "error", err)
	e.deny(d, r.Status, r.Reason, r.Message)
}

// asRefusal is err's Refusal, or 503 gateway_read_error.
func asRefusal(err error) *Refusal {
	if r, ok := errors.AsType[*Refusal](err); ok {
		return r
	}
	return &Refusal{Status: http.StatusServiceUnavailable, Reason: "gateway_read_error", Message: "service unavailable", Err: err}
}

// inputParts are the request parts the policy's optional inputs need.
// opa-envoy-plugin's input parses any request's body, modelguard's only
// model requests' (read already).
func (e *Engine) inputParts(reads rego.Inputs) Part {
	var p Part
	if e.opaEnvoy && (reads.Has(rego.InputParsedBody) || reads.Has(rego.InputRawBody)) {
		p |= PartBody
	}
	if reads.Has(rego.InputQuery) {
		p |= PartQuery
	}
	if reads.Has(rego.InputScheme) {
		p |= PartScheme
	}
	if reads.Has(rego.InputSourceAddress) {
		p |= PartSourceAddress
	}
	if reads.Has(rego.InputTLSPrincipal) {
		p |= PartTLSPrincipal
	}
	return p
}

// result, status and reason are d as recorded (audit, metrics): an allow
// that dry-run lifted is would_deny with the policy's status and reason.
func result(d *Decision) string {
	switch {
	case d.Allow && d.WouldDeny != nil:
		return "would_deny"
	case d.Allow:
		return "allow"
	}
	return "deny"
}

func status(d *Decision) int {
	if d.Allow && d.WouldDeny != nil {
		return d.WouldDeny.Status
	}
	return d.Status
}

func reason(d *Decision) string {
	if d.Allow && d.WouldDeny != nil {
		return d.WouldDeny.Reason
	}
	return d.Reason
}

func appendHeaderMap(hs []Header, m map[string]string) []Header {
	for k, v := range m {
		hs = append(hs, Header{strings.ToLower(k), v})
	}
	return hs
}

func hasHeader(hs []Header, name string) bool {
	for _, h := range hs {
		if h.Name == name {
			return true
		}
	}
	return false
}
