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

	"github.com/modelguard/modelguard/policy/bundle"
	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/rego/inputdoc"
	"github.com/modelguard/modelguard/policy/watch"
)

// ErrNoPolicy is EvalInput's error before a bundle source delivered its
// first policy: the caller denies (503 ReasonUnavailable), never serving
// without a policy.
var ErrNoPolicy = errors.New("no policy activated yet")

// ReasonUnavailable is the reason of a denial because no policy is active.
const ReasonUnavailable = "policy_unavailable"

// Options tune an Engine.
type Options struct {
	// OnReload, when set, is called after each reload attempt with the new
	// revision ("" when the directory could not be read or the bundle not
	// downloaded) and nil on success or the reason the revision was
	// refused (a *bundle.FetchError when the bundle service could not be
	// reached). Not called for the directory loaded by Open, nor when the
	// content did not change; called for every bundle, the persisted one
	// too. Calls come from one goroutine, never concurrently.
	OnReload func(revision string, err error)
	// Logger receives reload logs; nil discards them.
	Logger *slog.Logger
	// Poll is passed to watch.Options.Poll: when positive, the directory is
	// also re-read at this interval.
	Poll time.Duration
	// OnCacheLookup is called after each lookup in the decision cache.
	OnCacheLookup func(hit bool)
}

// Engine evaluates the current revision of a policy source: a watched
// directory or an OPA bundle service.
type Engine struct {
	source   string // the directory or bundle URL, for logs
	query    string
	shape    string // Settings.Input
	timeout  time.Duration
	onReload func(string, error)
	log      *slog.Logger
	// cacheSize is the decision cache's size, 0 when it is off.
	cacheSize     int
	onCacheLookup func(hit bool)

	// current is the policy deciding; nil until a bundle source delivers
	// its first one. Only install stores it.
	current atomic.Pointer[Policy]
	// lastSum is the content of the last compile attempt of a directory,
	// good or refused, so that an unchanged directory is not compiled (or
	// refused) again. Only the watch goroutine uses it after Open.
	lastSum [sha256.Size]byte
}

// Open starts the policy source of s: it compiles the policy directory
// s.PolicyDir (relative to baseDir) and watches it, or starts the bundle
// source s.Bundle, until ctx ends; a changed policy replaces the running
// one once it compiled. Zero fields of s take their defaults; s is then
// validated. Any error at start fails Open (a bundle service being down
// does not: the engine then denies with ErrNoPolicy until the first
// bundle); errors are *field.Error relative to the authorization section.
func Open(ctx context.Context, s Settings, baseDir string, opts Options) (*Engine, error) {
	s = s.orDefaults()
	if errs := s.Validate(baseDir); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return open(ctx, s, baseDir, opts)
}

// open starts the engine on s's source (s validated).
func open(ctx context.Context, s Settings, baseDir string, opts Options) (*Engine, error) {
	e := &Engine{
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
	if s.Bundle.Configured() {
		return e, e.openBundle(ctx, s.Bundle, baseDir)
	}
	return e, e.openDir(ctx, resolve(s.PolicyDir, baseDir), opts.Poll)
}

func (e *Engine) openDir(ctx context.Context, dir string, poll time.Duration) error {
	e.source = dir
	snap, err := readPolicyDir(dir, false)
	if err != nil {
		return dirError(fmt.Errorf("policy %s: %w", dir, err))
	}
	c, err := snap.content(dir)
	if err != nil {
		return dirError(err)
	}
	p, err := compile(ctx, c, e.query, e.shape, logPrints{e.log})
	if errors.Is(err, errNoRule) {
		return &field.Error{Path: "query", Err: err}
	}
	if err != nil {
		return dirError(err)
	}
	e.install(p)
	e.lastSum = snap.sum
	// Subdirectories created later are read on the next change in a watched
	// directory, or on the next poll.
	err = watch.Dirs(ctx, snap.dirs, watch.Options{Poll: poll},
		func() { e.reload(ctx) },
		func(err error) { e.log.Warn("policy watch", "dir", dir, "error", err) })
	if err != nil {
		return dirError(fmt.Errorf("policy %s: %w", dir, err))
	}
	e.log.Info("policy loaded", "dir", dir, "revision", p.Revision(), "query", e.query, "input", e.shape)
	return nil
}

func (e *Engine) openBundle(ctx context.Context, s bundle.Settings, baseDir string) error {
	e.source = s.URL + "/" + s.Resource
	err := bundle.Start(ctx, s, baseDir, bundle.Options{
		Logger:    e.log,
		Activate:  e.activateBundle,
		OnFailure: func(err error) { e.reloaded("", err) },
	})
	if err != nil {
		return &field.Error{Path: "bundle", Err: err}
	}
	if e.current.Load() == nil {
		e.log.Warn("no policy yet: requests are denied (503 policy_unavailable) until the first bundle arrives", "bundle", e.source)
	}
	return nil
}

// activateBundle compiles a verified bundle and swaps it in. It runs on
// the bundle source's goroutine: requests keep the running policy until
// the new one is compiled.
func (e *Engine) activateBundle(ctx context.Context, u bundle.Update) error {
	running := e.Revision()
	if u.Revision == running {
		return nil
	}
	p, err := compile(ctx, content{
		source:   e.source,
		revision: u.Revision,
		modules:  u.Bundle.ParsedModules("bundle"),
		data:     u.Bundle.Data,
	}, e.query, e.shape, logPrints{e.log})
	if err != nil {
		e.log.Error("bundle refused, keeping the running revision", "bundle", e.source, "revision", u.Revision, "running", running, "error", err)
		e.reloaded(u.Revision, err)
		return err
	}
	e.install(p)
	e.log.Info("bundle activated", "bundle", e.source, "revision", p.Revision(), "previous", running,
		"manifest_revision", u.Bundle.Manifest.Revision, "persisted", u.Persisted)
	e.reloaded(p.Revision(), nil)
	return nil
}

// Input is a request's input document. WriteInput writes the members a
// policy reading reads can see to w, which builds them for evaluation or
// encodes the decision cache's key from them: the one description of the
// input, so that the key holds exactly what evaluation would see. It may
// be called twice for a request (key, then build on a miss) and must
// write the same members both times; its error refuses the request.
type Input interface {
	WriteInput(w inputdoc.Writer, reads Inputs) error
}

// BuildInput makes in's document for a policy reading reads.
func BuildInput(in Input, reads Inputs) (ast.Value, error) {
	return inputdoc.Build(func(w inputdoc.Writer) error { return in.WriteInput(w, reads) })
}

// Eval decides on input with the current policy, within the configured
// timeout. It never returns Allow with an error; on error the caller must deny.
func (e *Engine) Eval(ctx context.Context, input ast.Value) (Result, error) {
	p := e.current.Load()
	if p == nil {
		return Result{}, ErrNoPolicy
	}
	return e.evalCached(ctx, p, input, cacheKey{}, false)
}

// EvalInput is Eval with in's document for the policy now deciding: only
// the optional members that policy reads are built (the full body as Rego
// values; a gateway is asked for the query, scheme or client address only
// for policies that use them). It returns the input it built, nil when the
// decision came from the cache; before a bundle source delivered a policy,
// ErrNoPolicy without writing in. An error of in is returned as it is.
//
// A cacheable policy's decision comes from the decision cache when one was
// made for the same values of everything the policy reads: the key is
// encoded as in is written, and the input is built only when the cache has
// no decision for it.
func (e *Engine) EvalInput(ctx context.Context, in Input) (Result, ast.Value, error) {
	p := e.current.Load()
	if p == nil {
		return Result{}, nil, ErrNoPolicy
	}
	var key cacheKey
	keyed := false
	// A request whose context has ended is evaluated, and refused, as
	// without the cache.
	if p.cache != nil && ctx.Err() == nil {
		var err error
		if key, keyed, err = p.cache.inputKey(in, p.reads.inputs); err != nil {
			return Result{Revision: p.Revision()}, nil, err
		}
		if keyed {
			if r, hit := e.cached(p, key); hit {
				return r, nil, nil
			}
		}
	}
	input, err := BuildInput(in, p.reads.inputs)
	if err != nil {
		return Result{Revision: p.Revision()}, nil, err
	}
	r, err := e.evalCached(ctx, p, input, key, keyed)
	return r, input, err
}

// evalCached evaluates input with p and keeps a successful decision in p's
// cache under key, when keyed, or else under input's own key, unless a
// decision is kept there already.
func (e *Engine) evalCached(ctx context.Context, p *Policy, input ast.Value, key cacheKey, keyed bool) (Result, error) {
	if !keyed && p.cache != nil && ctx.Err() == nil {
		if key, keyed = p.cache.key(input); keyed {
			if r, hit := e.cached(p, key); hit {
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

// cached is p's decision kept under key, counted as a lookup.
func (e *Engine) cached(p *Policy, key cacheKey) (Result, bool) {
	r, hit := p.cache.lru.Get(key)
	e.onCacheLookup(hit)
	return r, hit
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
	if p := e.current.Load(); p != nil && p.cache != nil {
		p.cache.lru.Purge()
	}
}

// install makes p, with a new decision cache if its decisions may be
// cached, the policy deciding: the one place a revision changes, whatever
// the source (directory or bundle).
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

// Revision is the revision of the policy now deciding, "" before the first.
func (e *Engine) Revision() string {
	if p := e.current.Load(); p != nil {
		return p.Revision()
	}
	return ""
}

// reload compiles the directory's current content and swaps it in when it
// changed and compiles; otherwise the running policy stays.
func (e *Engine) reload(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	dir := e.source
	running := e.Revision()
	snap, err := readPolicyDir(dir, false)
	if err != nil {
		err = fmt.Errorf("policy %s: %w", dir, err)
		e.log.Error("policy reload refused, keeping the running revision", "dir", dir, "running", running, "error", err)
		e.reloaded("", err)
		return
	}
	if snap.sum == e.lastSum {
		return
	}
	e.lastSum = snap.sum
	c, err := snap.content(dir)
	var p *Policy
	if err == nil {
		p, err = compile(ctx, c, e.query, e.shape, logPrints{e.log})
	}
	if err != nil {
		e.log.Error("policy reload refused, keeping the running revision", "dir", dir, "revision", snap.revision(), "running", running, "error", err)
		e.reloaded(snap.revision(), err)
		return
	}
	e.install(p)
	e.log.Info("policy reloaded", "dir", dir, "revision", p.Revision(), "previous", running)
	e.reloaded(p.Revision(), nil)
}

func (e *Engine) reloaded(revision string, err error) {
	if e.onReload != nil {
		e.onReload(revision, err)
	}
}
