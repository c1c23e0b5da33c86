package policy

import (
	"context"
	"log/slog"
	"slices"

	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/certid"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/dlp"
	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/iplist"
	"github.com/modelguard/modelguard/policy/jwtauth"
	"github.com/modelguard/modelguard/policy/lockout"
	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/policy/models"
	"github.com/modelguard/modelguard/policy/ratelimit"
	"github.com/modelguard/modelguard/policy/rego"
	"github.com/modelguard/modelguard/policy/replay"
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
	store, err := e.openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}

	if len(cfg.Authentication.JWT.Issuers) > 0 {
		v, err := jwtauth.New(ctx, cfg.Authentication.JWT, cfg.Dir, jwtauth.Options{
			Logger:        e.log,
			Replay:        replayStore(cfg, store, e.log),
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
	if s := cfg.Authentication.Introspection; s.Enabled() {
		in, err := jwtauth.NewIntrospector(s, cfg.Dir, jwtauth.Options{Logger: e.log})
		if err != nil {
			return nil, cfg.Error(field.Under("authentication.introspection", err))
		}
		e.opaque = in
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
	e.opaEnvoy = r.Input() == rego.ShapeOPAEnvoy
	if len(cfg.IPLists.Lists) > 0 {
		c, err := iplist.Open(ctx, cfg.IPLists, cfg.Dir, iplist.Options{
			Logger: e.log,
			OnReload: func(list, file string, err error) {
				e.metrics.IPListReloads.WithLabelValues(list, metrics.Outcome(err, "refused")).Inc()
				e.operator(audit.Event{Kind: audit.KindIPListReload, File: file, Detail: list}, err, "refused")
			},
		})
		if err != nil {
			return nil, cfg.Error(field.Under("ip_lists", err))
		}
		e.ipLists = c
	}
	if len(cfg.Authentication.ClientCerts) > 0 {
		e.certs = certid.New(cfg.Authentication.ClientCerts)
	}
	if len(cfg.DLP.Rules) > 0 {
		sc, err := dlp.Compile(cfg.DLP)
		if err != nil {
			return nil, cfg.Error(field.Under("dlp", err))
		}
		e.dlp = sc
	}
	e.openLimits(cfg, store)
	return e, nil
}

// openStore connects the rate limit store (closed when ctx ends), which
// the lockout and token replay protection share; nil when nothing uses it.
func (e *Engine) openStore(ctx context.Context, cfg *config.Config) (*ratelimit.Backend, error) {
	if len(cfg.RateLimits.Rules) == 0 && !cfg.Lockout.Enabled() && !replayUsed(cfg) {
		return nil, nil
	}
	b, err := ratelimit.Open(cfg.RateLimits, e.metrics.RateLimit, e.log)
	if err != nil {
		return nil, cfg.Error(field.Under("rate_limits", err))
	}
	context.AfterFunc(ctx, func() { b.Close() })
	return b, nil
}

// replayUsed reports whether an issuer makes its tokens one-time.
func replayUsed(cfg *config.Config) bool {
	return slices.ContainsFunc(cfg.Authentication.JWT.Issuers, func(is jwtauth.IssuerSettings) bool { return is.ReplayClaim != "" })
}

// replayStore is the store of one-time token values, on b's Redis when
// the rate limits use Redis; nil when no issuer needs one.
func replayStore(cfg *config.Config, b *ratelimit.Backend, log *slog.Logger) jwtauth.ReplayStore {
	if !replayUsed(cfg) {
		return nil
	}
	return replay.New(b.Shared(), log)
}

// openLimits starts the lockout and compiles the rate limit rules on the
// store; no rules, no limiter.
func (e *Engine) openLimits(cfg *config.Config, b *ratelimit.Backend) {
	if cfg.Lockout.Enabled() {
		e.lockout = lockout.New(cfg.Lockout, e.metrics.Lockout, lockout.Options{Logger: e.log, Shared: b.Shared(), OnLockout: e.lockedOut})
	}
	s := cfg.RateLimits
	if len(s.Rules) == 0 {
		return
	}
	e.limiter = b.Limiter(s)
	e.modelMaxTokens = make(map[string]int64, len(cfg.Models))
	for _, m := range cfg.Models {
		e.modelMaxTokens[m.Name] = int64(m.Limits.MaxTokens)
	}
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
