package policy

import (
	"context"

	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/jwtauth"
	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/policy/models"
	"github.com/modelguard/modelguard/policy/ratelimit"
	"github.com/modelguard/modelguard/policy/rego"
)

// New builds an Engine from a loaded configuration. Background work (JWKS
// refresh, policy and key file watches) runs until ctx ends. Errors name the
// configuration file and line when they concern a field.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Engine, error) {
	e := &Engine{
		apiKeyHeader:  cfg.Authentication.APIKeys.Header,
		bearerKeys:    *cfg.Authentication.APIKeys.Bearer, // config gives it a value
		anonymous:     cfg.Authentication.AllowAnonymous,
		maxCredential: cfg.Authentication.MaxCredentialBytes,
		identity:      cfg.IdentityHeaders,
		log:           opts.Logger,
		metrics:       opts.Metrics,
		audit:         opts.Audit,
		bodySHA256:    cfg.Audit.BodySHA256,
		now:           opts.Now,
		holdLimits:    opts.HoldReservations,
		tracer:        opts.Tracer,
	}
	e.admit, _ = opts.Audit.(Admitter)
	e.setDefaults()
	e.maxBody = maxBodyBytes(cfg)
	e.checks, e.bodies = cfg.Admission.Limits()

	if len(cfg.Authentication.JWT.Issuers) > 0 {
		v, err := jwtauth.New(ctx, cfg.Authentication.JWT, cfg.Dir, jwtauth.Options{
			Logger:        e.log,
			OnCacheLookup: e.cacheLookups("jwt"),
			OnJWKSRefresh: func(issuer string, err error) {
				e.metrics.JWKSRefreshes.WithLabelValues(issuer, metrics.Outcome(err, "failed")).Inc()
				e.dropDecisions()
				if err != nil {
					e.operator(audit.Event{Kind: audit.KindJWKSRefresh, Issuer: issuer}, err, "failed")
				}
			},
		})
		if err != nil {
			return nil, cfg.Error(field.Under("authentication.jwt", err))
		}
		e.tokens = v
	}
	if f := cfg.Authentication.APIKeys.File; f != "" {
		s, err := apikey.Open(ctx, cfg.Path(f), apikey.Options{
			Logger: e.log,
			OnReload: func(err error) {
				e.reloaded(e.metrics.KeyReloads, audit.Event{Kind: audit.KindKeyReload, File: cfg.Path(f)}, err)
			},
		})
		if err != nil {
			return nil, cfg.Error(&config.FieldError{Path: "authentication.api_keys.file", Err: err})
		}
		e.keys = s
	}
	cat, err := models.Open(ctx, cfg.ModelSettings(), cfg.Dir, models.Options{
		Logger: e.log,
		OnReload: func(err error) {
			e.reloaded(e.metrics.SchemaReloads, audit.Event{Kind: audit.KindSchemaReload}, err)
		},
	})
	if err != nil {
		return nil, cfg.Error(err)
	}
	e.models = cat
	r, err := rego.Open(ctx, cfg.Authorization, cfg.Dir, rego.Options{
		Logger:        e.log,
		OnCacheLookup: e.cacheLookups("decision"),
		OnReload:      e.policyReloaded,
	})
	if err != nil {
		return nil, cfg.Error(field.Under("authorization", err))
	}
	e.authz = r
	e.opaEnvoy = r.Input() == rego.ShapeOPAEnvoy
	e.decisions.Store(r)
	e.dryRun = cfg.Authorization.DryRun
	sh, err := rego.OpenShadow(ctx, cfg.Authorization, cfg.Dir, rego.Options{
		Logger: e.log.With("policy", "shadow"),
	})
	if err != nil {
		return nil, cfg.Error(field.Under("authorization", err))
	}
	if sh != nil {
		e.shadow = newShadow(ctx, sh, e.metrics.Shadow, func(ev *audit.Event) {
			if e.audit != nil {
				if err := e.offer(ev); err != nil {
					e.log.Error("audit record failed", "kind", ev.Kind, "decision_id", ev.DecisionID, "error", err)
				}
			}
		}, e.log)
		e.shadowDecisions.Store(sh)
	}
	if err := e.openLimits(ctx, cfg); err != nil {
		return nil, err
	}
	return e, nil
}

// openLimits connects the rate limit store (closed when ctx ends) and
// compiles the rules; no rules, no limiter.
func (e *Engine) openLimits(ctx context.Context, cfg *config.Config) error {
	s := cfg.RateLimits
	if len(s.Rules) == 0 {
		return nil
	}
	b, err := ratelimit.Open(s, e.metrics.RateLimit, e.log)
	if err != nil {
		return cfg.Error(field.Under("rate_limits", err))
	}
	context.AfterFunc(ctx, func() { b.Close() })
	e.limiter = b.Limiter(s)
	e.modelMaxTokens = make(map[string]int64, len(cfg.Models))
	for _, m := range cfg.Models {
		e.modelMaxTokens[m.Name] = int64(m.Limits.MaxTokens)
	}
	return nil
}

// cacheLookups counts lookups in the named cache.
func (e *Engine) cacheLookups(cache string) func(hit bool) {
	hits, misses := e.metrics.CacheLookups.WithLabelValues(cache, "hit"), e.metrics.CacheLookups.WithLabelValues(cache, "miss")
	return func(hit bool) {
		if hit {
			hits.Inc()
		} else {
			misses.Inc()
		}
	}
}

// dropDecisions empties the policy's decision cache. Each cached decision
// is keyed on every input value the policy reads, so a reload of keys or
// schemas cannot make one wrong (a revoked key or an expired token is
// refused before the policy is asked); the cache is dropped all the same,
// so that no decision outlives a reload of anything it was made with.
func (e *Engine) dropDecisions() {
	if r := e.decisions.Load(); r != nil {
		r.DropDecisions()
	}
	if r := e.shadowDecisions.Load(); r != nil {
		r.DropDecisions()
	}
}

// maxBodyBytes is the largest body any model accepts.
func maxBodyBytes(cfg *config.Config) int {
	n := cfg.RequestBody.MaxBytes
	for _, m := range cfg.Models {
		n = max(n, m.Limits.MaxBodyBytes)
	}
	return n
}
