// Package reload keeps the core built from a configuration file current
// while a server runs: on a change to the file (or a call to Reload, which
// serve makes on SIGHUP) it loads the file again, builds a new
// policy.Engine from it and swaps it in atomically; checks in flight finish
// on the engine they started with. A configuration that does not load or
// build is refused with its file:line, counted and audited, and the engine
// in force stays, as policies and key files do.
//
// Some settings are read once by the process around the engine (listen
// addresses, TLS files, the audit trail, logging, tracing): a change to them is
// reported as needing a restart, in the log and the audit record, and the
// rest of the new configuration applies.
//
// A new engine starts its caches (verified tokens, decisions) and its
// local rate-limit counters afresh; counters in Redis carry over.
package reload

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/policy/watch"
)

// Build makes an engine from a configuration; its background work (policy
// and key file watches, JWKS refresh) runs until ctx ends.
type Build func(ctx context.Context, cfg *config.Config) (*policy.Engine, error)

// Options configure a Live engine.
type Options struct {
	Build Build
	// Fixed names the configuration sections the process reads once
	// ("server", "audit", "log", "admission", "tracing"): a change to one
	// is reported as needing a restart.
	Fixed   []string
	Logger  *slog.Logger
	Metrics *metrics.Metrics // nil: not counted
	// Audit records a config_reload event per attempt; nil records none.
	Audit policy.AuditSink
	// Grace is how long a replaced engine's background work (its rate
	// limit store among it) outlives the swap, for the checks in flight.
	Grace time.Duration
}

// Live is the engine of the configuration in force. It has the engine's
// request methods (extauthz.Decider, extauthz.BodyBudget); each check is
// decided wholly by the engine current when it started.
type Live struct {
	opts Options
	path string
	cur  atomic.Pointer[generation]
	// budget is the first engine: the in-flight body budget must be
	// released where it was reserved, across swaps (admission is Fixed).
	budget *policy.Engine

	mu sync.Mutex // one reload at a time; guards sum
	// sum is the SHA-256 of the file last loaded, good or refused, so that
	// a change elsewhere in its directory does not rebuild.
	sum [sha256.Size]byte
}

// generation is one configuration and the engine built from it.
type generation struct {
	cfg    *config.Config
	engine *policy.Engine
	stop   context.CancelFunc
}

// New builds the first engine from cfg (loaded from cfg.File); background
// work of every generation ends with ctx.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Live, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Live{opts: opts, path: cfg.File}
	if data, err := os.ReadFile(cfg.File); err == nil {
		l.sum = sha256.Sum256(data)
	}
	g, err := l.build(ctx, cfg)
	if err != nil {
		return nil, err
	}
	l.cur.Store(g)
	l.budget = g.engine
	return l, nil
}

func (l *Live) build(ctx context.Context, cfg *config.Config) (*generation, error) {
	gctx, stop := context.WithCancel(ctx)
	e, err := l.opts.Build(gctx, cfg)
	if err != nil {
		stop()
		return nil, err
	}
	return &generation{cfg: cfg, engine: e, stop: stop}, nil
}

// Engine is the engine in force.
func (l *Live) Engine() *policy.Engine { return l.cur.Load().engine }

// Decide decides req with the engine in force.
func (l *Live) Decide(ctx context.Context, req *policy.Request) *policy.Decision {
	return l.cur.Load().engine.Decide(ctx, req)
}

// Deny is the engine in force's Deny.
func (l *Live) Deny(id string, status int, reason, message string) *policy.Decision {
	return l.cur.Load().engine.Deny(id, status, reason, message)
}

// MaxBodyBytes is the engine in force's largest accepted body.
func (l *Live) MaxBodyBytes() int { return l.cur.Load().engine.MaxBodyBytes() }

// RecordsBody reports whether the engine in force hashes bodies into the
// audit record (audit is a section reload does not change).
func (l *Live) RecordsBody() bool { return l.cur.Load().engine.RecordsBody() }

// PolicyRevision is the revision of the policy in force.
func (l *Live) PolicyRevision() string { return l.cur.Load().engine.PolicyRevision() }

// ReserveBody takes room in the body budget (see policy.Engine).
func (l *Live) ReserveBody(ctx context.Context, n int64) bool {
	return l.budget.ReserveBody(ctx, n)
}

// ReleaseBody gives back room taken by ReserveBody.
func (l *Live) ReleaseBody(n int64) { l.budget.ReleaseBody(n) }

// Watch reloads when the configuration file changes, until ctx ends. It
// watches the file's directory, so editors' renames and Kubernetes
// ConfigMap symlink swaps are seen.
func (l *Live) Watch(ctx context.Context) error {
	return watch.Dirs(ctx, []string{filepath.Dir(l.path)}, watch.Options{},
		func() { l.reload(ctx, false) },
		func(err error) { l.opts.Logger.Warn("configuration watch", "file", l.path, "error", err) })
}

// Reload loads the configuration file again and swaps in an engine built
// from it, even when the file is unchanged (key or certificate files it
// names may have changed). On error the engine in force stays.
func (l *Live) Reload(ctx context.Context) error { return l.reload(ctx, true) }

func (l *Live) reload(ctx context.Context, force bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	data, err := os.ReadFile(l.path)
	if err == nil {
		sum := sha256.Sum256(data)
		if sum == l.sum && !force {
			return nil
		}
		l.sum = sum
	}
	old := l.cur.Load()
	var g *generation
	if err == nil {
		var cfg *config.Config
		if cfg, err = config.Parse(data, l.path, filepath.Dir(l.path)); err == nil {
			g, err = l.build(ctx, cfg)
		}
	} else {
		err = fmt.Errorf("config: %w", err)
	}
	ev := audit.Event{Kind: audit.KindConfigReload, File: l.path}
	if err != nil {
		l.opts.Logger.Error("configuration reload refused, keeping the one in force", "file", l.path, "error", err.Error())
		l.record(ev, err)
		return err
	}
	l.cur.Store(g)
	time.AfterFunc(l.opts.Grace, old.stop)
	ev.PolicyRevision = g.engine.PolicyRevision()
	restart := Changed(old.cfg, g.cfg, l.opts.Fixed)
	if len(restart) > 0 {
		ev.Detail = fmt.Sprintf("needs restart: %v (the running values stay)", restart)
		l.opts.Logger.Warn("configuration reloaded; some changes need a restart and are not in force", "file", l.path, "needs_restart", restart)
	} else {
		l.opts.Logger.Info("configuration reloaded", "file", l.path, "policy_revision", ev.PolicyRevision)
	}
	l.record(ev, nil)
	return nil
}

// record counts a reload attempt and records it in the audit trail.
func (l *Live) record(ev audit.Event, err error) {
	outcome := metrics.Outcome(err, "refused")
	if l.opts.Metrics != nil {
		l.opts.Metrics.ConfigReloads.WithLabelValues(outcome).Inc()
	}
	if l.opts.Audit == nil {
		return
	}
	ev.Outcome = outcome
	if err != nil {
		ev.Detail = err.Error()
	}
	if err := l.opts.Audit.Record(&ev); err != nil {
		l.opts.Logger.Error("audit record failed", "kind", ev.Kind, "error", err)
	}
}

// Changed returns the sections among names whose settings differ between
// two configurations: "server", "audit", "log", "admission" or "tracing".
func Changed(old, cur *config.Config, names []string) []string {
	var out []string
	for _, name := range names {
		if a := section(old, name); a != nil && !reflect.DeepEqual(a, section(cur, name)) {
			out = append(out, name)
		}
	}
	return out
}

func section(c *config.Config, name string) any {
	switch name {
	case "server":
		return c.Server
	case "audit":
		return c.Audit
	case "log":
		return c.Log
	case "admission":
		return c.Admission
	case "tracing":
		return c.Tracing
	}
	return nil
}
