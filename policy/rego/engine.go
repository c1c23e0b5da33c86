package rego

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/watch"
)

// Options tune an Engine.
type Options struct {
	// OnReload, when set, is called after each reload attempt with the new
	// revision ("" when the directory could not be read) and nil on success
	// or the reason the revision was refused. Not called for the policy
	// loaded by Open, nor when the content did not change. Calls come from
	// one goroutine, never concurrently.
	OnReload func(revision string, err error)
	// Logger receives reload logs; nil discards them.
	Logger *slog.Logger
	// Poll is passed to watch.Options.Poll: when positive, the directory is
	// also re-read at this interval.
	Poll time.Duration
	// OnCacheLookup is called after each lookup in the decision cache.
	OnCacheLookup func(hit bool)
}

// Engine evaluates the current revision of a watched policy directory.
type Engine struct {
	dir      string
	query    string
	shape    string // Settings.Input
	timeout  time.Duration
	onReload func(string, error)
	log      *slog.Logger
	// cacheSize is the decision cache's size, 0 when it is off.
	cacheSize     int
	onCacheLookup func(hit bool)

	current atomic.Pointer[Policy]
	// lastSum is the content of the last compile attempt, good or refused,
	// so that an unchanged directory is not compiled (or refused) again.
	// Only the watch goroutine uses it after Open.
	lastSum [sha256.Size]byte
}

// Open compiles the policy directory s.PolicyDir (relative to baseDir) and
// watches it until ctx ends, replacing the policy when a changed one
// compiles. Zero fields of s take their defaults; s is then validated. Any
// error at start fails Open; errors are *field.Error relative to the
// authorization section.
func Open(ctx context.Context, s Settings, baseDir string, opts Options) (*Engine, error) {
	s = s.orDefaults()
	if errs := s.Validate(baseDir); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	dir := resolve(s.PolicyDir, baseDir)
	e := &Engine{
		dir:           dir,
		query:         s.Query,
		shape:         s.Input,
		timeout:       s.Timeout,
		onReload:      opts.OnReload,
		log:           opts.Logger,
		onCacheLookup: opts.OnCacheLookup,
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.onCacheLookup == nil {
		e.onCacheLookup = func(bool) {}
	}
	if s.DecisionCache.Enabled {
		e.cacheSize = s.DecisionCache.Size
	}
	snap, err := readPolicyDir(dir, false)
	if err != nil {
		return nil, dirError(fmt.Errorf("policy %s: %w", dir, err))
	}
	p, err := compile(ctx, dir, snap, e.query, e.shape, logPrints{e.log})
	if err != nil {
		return nil, dirError(err)
	}
	e.install(p)
	e.lastSum = snap.sum
	// Subdirectories created later are read on the next change in a watched
	// directory, or on the next poll.
	err = watch.Dirs(ctx, snap.dirs, watch.Options{Poll: opts.Poll},
		func() { e.reload(ctx) },
		func(err error) { e.log.Warn("policy watch", "dir", dir, "error", err) })
	if err != nil {
		return nil, dirError(fmt.Errorf("policy %s: %w", dir, err))
	}
	e.log.Info("policy loaded", "dir", dir, "revision", p.Revision(), "query", e.query, "input", e.shape)
	return e, nil
}

// Eval decides on input with the current policy, within the configured
// timeout. It never returns Allow with an error; on error the caller must deny.
func (e *Engine) Eval(ctx context.Context, input ast.Value) (Result, error) {
	return e.EvalInput(ctx, func(Inputs) ast.Value { return input })
}

// EvalInput is Eval with an input built for the policy now deciding:
// build learns which optional members that policy reads, so the full body
// is converted to Rego values, and a gateway asked for the query, scheme or
// client address, only for policies that use them.
//
// A cacheable policy's decision comes from the decision cache when one
// was made for the same values of everything the policy reads.
func (e *Engine) EvalInput(ctx context.Context, build func(reads Inputs) ast.Value) (Result, error) {
	p := e.current.Load()
	input := build(p.reads.inputs)
	var key cacheKey
	keyed := false
	// A request whose context has ended is evaluated, and refused, as
	// without the cache.
	if p.cache != nil && ctx.Err() == nil {
		if key, keyed = p.cache.key(input); keyed {
			r, hit := p.cache.lru.Get(key)
			e.onCacheLookup(hit)
			if hit {
				return r, nil
			}
		}
	}
	r, err := e.eval(ctx, p, input)
	if keyed && err == nil {
		p.cache.lru.Add(key, r)
	}
	return r, err
}

func (e *Engine) eval(ctx context.Context, p *Policy, input ast.Value) (Result, error) {
	// The timeout starts after the input is built (converting a large
	// parsed body takes time that is not the policy's): it bounds evaluation.
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	return p.Eval(ctx, input)
}

// Input is the shape of the input document the policy reads
// (ShapeModelguard or ShapeOPAEnvoy).
func (e *Engine) Input() string { return e.shape }

// DropDecisions empties the decision cache. A reload of the policy starts
// a new cache by itself; the engine's owner calls this when anything else
// it decides with reloads (keys, schemas, configuration).
func (e *Engine) DropDecisions() {
	if c := e.current.Load().cache; c != nil {
		c.lru.Purge()
	}
}

// install makes p, with a new decision cache if its decisions may be
// cached, the policy deciding.
func (e *Engine) install(p *Policy) {
	if ok, why := p.Cacheable(); !ok {
		if e.cacheSize > 0 {
			e.log.Info("policy decisions are not cached", "revision", p.Revision(), "reason", why)
		}
	} else if e.cacheSize > 0 {
		p.cache = newDecisionCache(e.cacheSize, p.reads.paths)
	}
	e.current.Store(p)
}

// Revision is the revision of the policy now deciding.
func (e *Engine) Revision() string { return e.current.Load().Revision() }

// reload compiles the directory's current content and swaps it in when it
// changed and compiles; otherwise the running policy stays.
func (e *Engine) reload(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	running := e.current.Load().Revision()
	snap, err := readPolicyDir(e.dir, false)
	if err != nil {
		err = fmt.Errorf("policy %s: %w", e.dir, err)
		e.log.Error("policy reload refused, keeping the running revision", "dir", e.dir, "running", running, "error", err)
		e.reloaded("", err)
		return
	}
	if snap.sum == e.lastSum {
		return
	}
	e.lastSum = snap.sum
	p, err := compile(ctx, e.dir, snap, e.query, e.shape, logPrints{e.log})
	if err != nil {
		e.log.Error("policy reload refused, keeping the running revision", "dir", e.dir, "revision", snap.revision(), "running", running, "error", err)
		e.reloaded(snap.revision(), err)
		return
	}
	e.install(p)
	e.log.Info("policy reloaded", "dir", e.dir, "revision", p.Revision(), "previous", running)
	e.reloaded(p.Revision(), nil)
}

func (e *Engine) reloaded(revision string, err error) {
	if e.onReload != nil {
		e.onReload(revision, err)
	}
}
