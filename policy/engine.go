package policy

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/admission"
	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/certid"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/dlp"
	"github.com/modelguard/modelguard/policy/iplist"
	"github.com/modelguard/modelguard/policy/jwtauth"
	"github.com/modelguard/modelguard/policy/lockout"
	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/policy/models"
	"github.com/modelguard/modelguard/policy/ratelimit"
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
	Audit AuditSink
	// Now is the clock for latency; nil means time.Now.
	Now func() time.Time
	// HoldReservations keeps each admitted request's token reservation on
	// its Decision (Decision.Reservation), for a gateway that settles it
	// from the real usage (Kong's response phase). Off, checking limits
	// allocates nothing.
	HoldReservations bool
	// Tracer traces decisions (policy/tracing); nil traces nothing.
	Tracer Tracer
}

// The steps the engine composes, as interfaces so that tests can inject
// failures (panics, errors) the real implementations cannot be made to show.
type (
	tokenVerifier interface {
		Verify(ctx context.Context, token string) (*jwtauth.Identity, error)
	}
	introspector interface {
		Introspect(ctx context.Context, token string) (*jwtauth.Identity, error)
	}
	keyStore interface {
		Lookup(key string) (*apikey.Key, error)
	}
	authorizer interface {
		EvalInput(ctx context.Context, in rego.Input) (rego.Result, ast.Value, error)
	}
	addressChecker interface {
		Check(address string) iplist.Verdict
	}
	failureGuard interface {
		Locked(ctx context.Context, address string) (time.Duration, error)
		Failed(ctx context.Context, address, keyID string) error
		Status() int
	}
	inspector interface {
		Inspect(r models.Request) (*models.Model, *models.Denial, bool)
		ReadsBody(method, path string) bool
	}
)

// Engine decides requests. It is safe for concurrent use; the pieces that
// reload (policies, key file, JWKS) each swap immutable snapshots, so a
// decision never sees half a reload and takes no locks.
type Engine struct {
	tokens  tokenVerifier // nil: JWT not configured
	keys    keyStore      // nil: API keys not configured
	opaque  introspector  // nil: opaque tokens not introspected
	authz   authorizer
	models  inspector
	ipLists addressChecker // nil: no address lists
	lockout failureGuard   // nil: no brute-force lockout
	dlp     *dlp.Scanner   // nil: no prompt rules
	certs   *certid.Map    // nil: client certificates do not authenticate
	// shadow evaluates authorization.shadow beside authz (nil: none);
	// dryRun lifts the policy's denials it covers.
	shadow *shadow
	dryRun rego.DryRun

	apiKeyHeader string
	bearerKeys   bool
	anonymous    bool
	opaEnvoy     bool // authorization.input: opa-envoy
	// decisions is the policy engine whose decision cache dropDecisions
	// empties: stored by New once rego.Open returns, while the watchers
	// started before it may already call back.
	decisions atomic.Pointer[rego.Engine]
	// shadowDecisions is the shadow policy engine, likewise (nil: none).
	shadowDecisions atomic.Pointer[rego.Engine]
	maxCredential   int
	identity        config.IdentityHeaders
	identityRemove  []string // every configured identity header name
	// guarded are identityRemove and the API key header: their spellings
	// with "_" are removed from allowed requests (UnderscoreVariants).
	guarded []string

	log        *slog.Logger
	metrics    *metrics.Metrics
	audit      AuditSink
	admit      Admitter // nil: the sink cannot refuse
	bodySHA256 bool     // audit.body_sha256
	maxBody    int      // the largest body any model accepts

	limiter        *ratelimit.Limiter // nil: no rate limits
	modelMaxTokens map[string]int64   // models[].limits.max_tokens, the completion reserved by default
	limitResults   sync.Pool          // *ratelimit.Result with their buffers: checking limits does not allocate
	holdLimits     bool               // Options.HoldReservations
	now            func() time.Time
	tracer         Tracer // nil: tracing off

	// Admission limits (config.Admission): checks deciding at once, and
	// request bytes held by the adapters (ReserveBody).
	checks, bodies *admission.Limit
}

// PolicyRevision is the revision of the policy in force ("" if unknown),
// for the config_loaded audit event the server records.
func (e *Engine) PolicyRevision() string {
	if r, ok := e.authz.(interface{ Revision() string }); ok {
		return r.Revision()
	}
	return ""
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
	e.identityRemove = e.identityRemove[:0]
	for _, h := range []string{e.identity.Subject, e.identity.Roles, e.identity.AuthMethod, e.identity.KeyID, e.identity.DecisionID} {
		if h != "" {
			e.identityRemove = append(e.identityRemove, h)
		}
	}
	e.guarded = append(e.identityRemove[:len(e.identityRemove):len(e.identityRemove)], e.apiKeyHeader)
}

// Compile-time checks that the real steps satisfy the engine's interfaces.
var (
	_ tokenVerifier  = (*jwtauth.Verifier)(nil)
	_ keyStore       = (*apikey.Store)(nil)
	_ introspector   = (*jwtauth.Introspector)(nil)
	_ authorizer     = (*rego.Engine)(nil)
	_ inspector      = (*models.Catalog)(nil)
	_ addressChecker = (*iplist.Checker)(nil)
	_ failureGuard   = (*lockout.Guard)(nil)
)
