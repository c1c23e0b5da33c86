package policy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/admission"
	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/jwtauth"
	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/policy/models"
	"github.com/modelguard/modelguard/policy/rego"
)

// Options are the Engine's collaborators; all are optional.
type Options struct {
	Logger *slog.Logger
	// Metrics receives counters; nil creates unregistered ones.
	Metrics *metrics.Metrics
	// Audit records one event per decision and the engine's operator
	// events (policy, key file and schema reloads, JWKS refresh failures);
	// nil records nothing. When it is also an Admitter, Evaluate asks it
	// first and denies 503 (audit_unavailable) while the trail cannot take
	// records.
	Audit Recorder
	// Now is the clock for latency; nil means time.Now.
	Now func() time.Time
}

// Recorder receives audit events.
type Recorder interface {
	Record(*audit.Event) error
}

// Admitter says whether the audit trail can take a record now (nil) or not
// (an error): a request must never be served without its record. For Kong,
// which records in the log phase after the response, this check before the
// decision is what keeps that promise. *audit.Writer implements it.
type Admitter interface {
	Admit(ctx context.Context) error
}

// The steps the engine composes, as interfaces so that tests can inject
// failures (panics, errors) the real implementations cannot be made to show.
type (
	tokenVerifier interface {
		Verify(ctx context.Context, token string) (*jwtauth.Identity, error)
	}
	keyStore interface {
		Lookup(key string) (*apikey.Key, error)
	}
	authorizer interface {
		EvalInput(ctx context.Context, build func(parsedBody bool) ast.Value) (rego.Result, error)
	}
	inspector interface {
		Inspect(r models.Request) (*models.Model, *models.Denial, bool)
	}
)

// Engine decides requests. It is safe for concurrent use; the pieces that
// reload (policies, key file, JWKS) each swap immutable snapshots, so a
// decision never sees half a reload and takes no locks.
type Engine struct {
	tokens tokenVerifier // nil: JWT not configured
	keys   keyStore      // nil: API keys not configured
	authz  authorizer
	models inspector

	apiKeyHeader   string
	bearerKeys     bool
	anonymous      bool
	maxCredential  int
	identity       config.IdentityHeaders
	identityRemove []string // every configured identity header name

	log        *slog.Logger
	metrics    *metrics.Metrics
	audit      Recorder
	admit      Admitter // nil: the recorder cannot refuse
	bodySHA256 bool     // audit.body_sha256
	now        func() time.Time

	// Admission limits (config.Admission): checks deciding at once, and
	// request bytes held by the adapters (ReserveBody).
	checks, bodies *admission.Limit
}

// New builds an Engine from a loaded configuration. Background work (JWKS
// refresh, policy and key file watches) runs until ctx ends. Errors name the
// configuration file and line when they concern a field.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Engine, error) {
	e := &Engine{
		apiKeyHeader:  cfg.Authentication.APIKeys.Header,
		bearerKeys:    cfg.Authentication.APIKeys.Bearer == nil || *cfg.Authentication.APIKeys.Bearer,
		anonymous:     cfg.Authentication.AllowAnonymous,
		maxCredential: cfg.Authentication.MaxCredentialBytes,
		identity:      cfg.IdentityHeaders,
		log:           opts.Logger,
		metrics:       opts.Metrics,
		audit:         opts.Audit,
		bodySHA256:    cfg.Audit.BodySHA256,
		now:           opts.Now,
	}
	e.admit, _ = opts.Audit.(Admitter)
	e.setDefaults()
	ad := cfg.Admission
	if ad.MaxConcurrentChecks == 0 {
		ad.MaxConcurrentChecks = 4 * runtime.GOMAXPROCS(0)
	}
	e.checks = admission.NewLimit(int64(ad.MaxConcurrentChecks), ad.MaxWait)
	if ad.MaxInflightBodyBytes > 0 {
		e.bodies = admission.NewLimit(int64(ad.MaxInflightBodyBytes), ad.MaxWait)
	}

	if len(cfg.Authentication.JWT.Issuers) > 0 {
		v, err := jwtauth.New(ctx, cfg.Authentication.JWT, cfg.Dir, jwtauth.Options{
			Logger: e.log,
			OnJWKSRefresh: func(issuer string, err error) {
				e.metrics.JWKSRefreshes.WithLabelValues(issuer, metrics.Outcome(err, "failed")).Inc()
				if err != nil {
					e.operator(audit.Event{Kind: audit.KindJWKSRefresh, Issuer: issuer}, err, "failed")
				}
			},
		})
		if err != nil {
			return nil, cfg.Error(err)
		}
		e.tokens = v
	}
	if f := cfg.Authentication.APIKeys.File; f != "" {
		s, err := apikey.Open(ctx, cfg.Path(f), apikey.Options{
			Logger: e.log,
			OnReload: func(err error) {
				e.metrics.KeyReloads.WithLabelValues(metrics.Outcome(err, "refused")).Inc()
				e.operator(audit.Event{Kind: audit.KindKeyReload, File: cfg.Path(f)}, err, "refused")
			},
		})
		if err != nil {
			return nil, cfg.Error(&config.FieldError{Path: "authentication.api_keys.file", Err: err})
		}
		e.keys = s
		if e.apiKeyHeader == "" {
			e.apiKeyHeader = "x-api-key"
		}
	}
	cat, err := models.Open(ctx, cfg, models.Options{
		Logger: e.log,
		OnReload: func(err error) {
			e.metrics.SchemaReloads.WithLabelValues(metrics.Outcome(err, "refused")).Inc()
			e.operator(audit.Event{Kind: audit.KindSchemaReload}, err, "refused")
		},
	})
	if err != nil {
		return nil, cfg.Error(err)
	}
	e.models = cat
	r, err := rego.Open(ctx, cfg.Authorization, cfg.Dir, rego.Options{
		Logger: e.log,
		OnReload: func(revision string, err error) {
			e.metrics.PolicyReloads.WithLabelValues(metrics.Outcome(err, "refused")).Inc()
			e.operator(audit.Event{Kind: audit.KindPolicyReload, PolicyRevision: revision}, err, "refused")
		},
	})
	if err != nil {
		return nil, cfg.Error(&config.FieldError{Path: "authorization.policy_dir", Err: err})
	}
	e.authz = r
	return e, nil
}

// PolicyRevision is the revision of the policy in force ("" if unknown),
// for the config_loaded audit event the server records.
func (e *Engine) PolicyRevision() string {
	if r, ok := e.authz.(interface{ Revision() string }); ok {
		return r.Revision()
	}
	return ""
}

// maxDetail bounds an operator event's detail (a reload error can list many
// policy compile errors).
const maxDetail = 2048

// operator records an operator event whose outcome is "ok", or failed with
// err's message as the detail.
func (e *Engine) operator(ev audit.Event, err error, failed string) {
	if e.audit == nil {
		return
	}
	ev.Outcome = metrics.Outcome(err, failed)
	if err != nil {
		ev.Detail = err.Error()
		if len(ev.Detail) > maxDetail {
			ev.Detail = ev.Detail[:maxDetail] + "..."
		}
	}
	if err := e.audit.Record(&ev); err != nil {
		e.log.Error("audit record failed", "kind", ev.Kind, "error", err)
	}
}

func (e *Engine) setDefaults() {
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.metrics == nil {
		e.metrics = metrics.New(nil)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.maxCredential <= 0 {
		e.maxCredential = 8192
	}
	e.identityRemove = e.identityRemove[:0]
	for _, h := range []string{e.identity.Subject, e.identity.Roles, e.identity.AuthMethod, e.identity.KeyID, e.identity.DecisionID} {
		if h != "" {
			e.identityRemove = append(e.identityRemove, h)
		}
	}
}

// Decide evaluates req and records its audit event: the whole decision, as
// an adapter whose gateway acts on it at once (Envoy) needs it.
func (e *Engine) Decide(ctx context.Context, req *Request) *Decision {
	d := e.Evaluate(ctx, req)
	e.Record(req, d, d.Status, d.Latency)
	return d
}

// Evaluate authenticates and authorizes req and counts the decision in the
// metrics, without recording an audit event: adapters that learn the final
// status later (Kong's log phase) call Record then. It never returns nil
// and never allows on an error path: failures, including panics, deny.
func (e *Engine) Evaluate(ctx context.Context, req *Request) (d *Decision) {
	start := e.now()
	d = &Decision{ID: newDecisionID(), Start: start}
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("panic while deciding: denied", "decision_id", d.ID, "panic", r, "stack", string(debug.Stack()))
			*d = Decision{ID: d.ID, Start: start}
			e.deny(d, http.StatusServiceUnavailable, "internal_error", "service unavailable")
		}
		d.Latency = e.now().Sub(start)
		e.metrics.Decisions.WithLabelValues(result(d), d.Reason).Inc()
		e.metrics.CheckDuration.Observe(d.Latency.Seconds())
	}()
	e.decide(ctx, req, d)
	return d
}

func (e *Engine) decide(ctx context.Context, req *Request, d *Decision) {
	// No request is served without its audit record: when the trail cannot
	// take one (queue full, sink failing), deny before doing any work.
	if e.admit != nil {
		if err := e.admit.Admit(ctx); err != nil {
			e.metrics.AuditDenied.Inc()
			e.log.Debug("audit trail unavailable: denied", "decision_id", d.ID, "request_id", req.ID, "error", err)
			e.deny(d, http.StatusServiceUnavailable, "audit_unavailable", "service unavailable")
			return
		}
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
	id, cred, reason, err := e.authenticate(ctx, req)
	if err != nil {
		e.log.Info("authentication failed", "decision_id", d.ID, "request_id", req.ID, "reason", reason, "error", err)
		e.deny(d, http.StatusUnauthorized, reason, "invalid or missing credentials")
		d.ResponseHeaders = append(d.ResponseHeaders, Header{"www-authenticate", `Bearer realm="modelguard"`})
		return
	}
	d.Identity = id

	// Bodies are parsed only for authenticated callers.
	mr, denial, isModel := e.models.Inspect(models.Request{
		Method: req.Method, Path: req.Path,
		ContentType: req.Headers["content-type"], Encoding: req.Headers["content-encoding"],
		Body: req.Body, BodyTruncated: req.BodyTruncated, BodyOmitted: req.BodyOmitted,
	})
	if denial != nil {
		if denial.Reason == "body_not_forwarded" {
			e.log.Error("a model request arrived without its body: enable with_request_body (Envoy) so bodies can be checked", "decision_id", d.ID, "path", req.Path)
		}
		e.deny(d, denial.Status, denial.Reason, denial.Message)
		return
	}
	if isModel {
		d.Model = Model{Name: mr.Name, Operation: mr.Operation}
	} else {
		d.Model = listing(req)
	}

	res, err := e.authz.EvalInput(ctx, func(parsedBody bool) ast.Value { return e.input(req, id, d.Model, mr, parsedBody) })
	d.PolicyRevision = res.Revision
	if err != nil {
		e.log.Error("policy evaluation failed: denied", "decision_id", d.ID, "request_id", req.ID, "error", err)
		e.deny(d, http.StatusServiceUnavailable, "policy_error", "service unavailable")
		return
	}
	if !res.Allow {
		status, reason, msg := res.Status, res.Reason, res.Message
		if status == 0 {
			status = http.StatusForbidden
		}
		if reason == "" {
			reason = "policy_denied"
		}
		if msg == "" {
			msg = "access denied"
		}
		e.deny(d, status, reason, msg)
		d.ResponseHeaders = appendHeaderMap(d.ResponseHeaders, res.ResponseHeaders)
		return
	}
	e.allow(d, id, cred, res)
}

// shed denies d as overloaded because limit was reached.
func (e *Engine) shed(d *Decision, limit string) {
	e.metrics.Shed.WithLabelValues(limit).Inc()
	e.log.Warn("overloaded: request shed", "decision_id", d.ID, "limit", limit)
	e.deny(d, 0, "", "") // for the decision id header; SetOverloaded sets the rest
	d.SetOverloaded()
}

// ReserveBody takes n bytes of the budget for request bodies in flight
// (admission.max_inflight_body_bytes), waiting up to admission.max_wait.
// On false the adapter answers Overloaded() without reading the body; on
// true it calls ReleaseBody(n) when the request no longer holds the bytes.
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

// credential names where a credential was found, so that it can be removed
// before the request goes upstream.
type credential struct{ header string }

// authenticate finds exactly one credential and verifies it. It returns the
// failure reason code for operators alongside the error.
func (e *Engine) authenticate(ctx context.Context, req *Request) (*Identity, credential, string, error) {
	var (
		token, key string
		cred       credential
	)
	if e.keys != nil {
		if v, ok := req.Headers[e.apiKeyHeader]; ok {
			key, cred.header = v, e.apiKeyHeader
		}
	}
	if v, ok := req.Headers["authorization"]; ok {
		if cred.header != "" {
			return nil, cred, "credentials_ambiguous", errors.New("both an API key header and Authorization are present")
		}
		cred.header = "authorization"
		scheme, rest, found := strings.Cut(v, " ")
		if !found || !strings.EqualFold(scheme, "bearer") {
			return nil, cred, "auth_scheme_unsupported", errors.New("authorization is not a Bearer credential")
		}
		switch {
		case jwtauth.LooksLikeJWT(rest) && e.tokens != nil:
			token = rest
		case e.keys != nil && e.bearerKeys && !jwtauth.LooksLikeJWT(rest):
			key = rest
		default:
			return nil, cred, "credential_type_not_enabled", errors.New("bearer credential of a type that is not configured")
		}
	}
	if len(token)+len(key) > e.maxCredential {
		return nil, cred, "credential_too_long", fmt.Errorf("credential of %d bytes exceeds %d", len(token)+len(key), e.maxCredential)
	}
	switch {
	case token != "":
		ji, err := e.tokens.Verify(ctx, token)
		if err != nil {
			return nil, cred, reasonOf(err, "jwt_invalid"), err
		}
		// Subject and roles become upstream header values: a signed token
		// must not smuggle header syntax (CR, LF) or split the roles list.
		if !headerSafe(ji.Subject) || slices.ContainsFunc(ji.Roles, func(r string) bool { return !headerSafe(r) || strings.Contains(r, ",") }) {
			return nil, cred, "jwt_bad_claim", errors.New("subject or role holds characters not allowed in a header value")
		}
		return &Identity{Subject: ji.Subject, Roles: ji.Roles, Method: "jwt", Issuer: ji.Issuer, Claims: ji.Claims}, cred, "", nil
	case key != "":
		k, err := e.keys.Lookup(key)
		if err != nil {
			return nil, cred, reasonOf(err, "api_key_invalid"), err
		}
		return &Identity{Subject: k.Subject, Roles: k.Roles, Method: "api_key", KeyID: k.ID}, cred, "", nil
	case cred.header != "":
		return nil, cred, "credential_empty", errors.New("empty credential")
	case e.anonymous:
		return &Identity{Method: "none"}, cred, "", nil
	default:
		return nil, cred, "credentials_missing", errors.New("no credential in the request")
	}
}

// headerSafe reports whether s can be an HTTP header value: no control
// characters (RFC 9110 field-value).
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// reasonOf extracts the reason code carried by the authentication packages'
// errors.
func reasonOf(err error, fallback string) string {
	var je *jwtauth.Error
	if errors.As(err, &je) {
		return je.Reason
	}
	var ke *apikey.Error
	if errors.As(err, &ke) {
		return ke.Reason
	}
	return fallback
}

func (e *Engine) allow(d *Decision, id *Identity, cred credential, res rego.Result) {
	d.Allow = true
	d.Status = http.StatusOK
	d.Reason = "allowed"
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

func result(d *Decision) string {
	if d.Allow {
		return "allow"
	}
	return "deny"
}

// Record writes the audit event for d. status and latency are what the
// gateway finally observed (the upstream's status, the whole request's
// time); pass d.Status and d.Latency when the decision ends the story. The
// recorder queues the event (waiting a bounded time for room if it must);
// a record it cannot take is counted and logged by it, and logged here.
func (e *Engine) Record(req *Request, d *Decision, status int, latency time.Duration) {
	if e.audit == nil {
		return
	}
	ev := audit.Event{
		Kind:           audit.KindDecision,
		Time:           d.Start,
		DecisionID:     d.ID,
		RequestID:      req.ID,
		Gateway:        req.Gateway,
		Model:          d.Model.Name,
		Operation:      d.Model.Operation,
		Method:         req.Method,
		Path:           req.Path,
		SourceAddress:  req.SourceAddress,
		Result:         result(d),
		Status:         status,
		Reason:         d.Reason,
		PolicyRevision: d.PolicyRevision,
		LatencyMicros:  latency.Microseconds(),
	}
	if id := d.Identity; id != nil {
		ev.Subject, ev.AuthMethod, ev.KeyID, ev.Issuer = id.Subject, id.Method, id.KeyID, id.Issuer
	}
	if e.bodySHA256 && len(req.Body) > 0 {
		sum := sha256.Sum256(req.Body)
		ev.BodySHA256 = hex.EncodeToString(sum[:])
	}
	if err := e.audit.Record(&ev); err != nil {
		e.log.Error("audit record failed", "decision_id", d.ID, "error", err)
	}
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

// newDecisionID returns 128 random bits in hex. crypto/rand does not fail
// on supported platforms (Go 1.24+).
func newDecisionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Compile-time checks that the real steps satisfy the engine's interfaces.
var (
	_ tokenVerifier = (*jwtauth.Verifier)(nil)
	_ keyStore      = (*apikey.Store)(nil)
	_ authorizer    = (*rego.Engine)(nil)
	_ inspector     = (*models.Catalog)(nil)
)
