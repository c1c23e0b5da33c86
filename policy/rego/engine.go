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

	"github.com/modelguard/modelguard/policy/field"
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
}

// Engine evaluates the current revision of a watched policy directory.
type Engine struct {
	dir      string
	query    string
	timeout  time.Duration
	onReload func(string, error)
	log      *slog.Logger

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
		dir:      dir,
		query:    s.Query,
		timeout:  s.Timeout,
		onReload: opts.OnReload,
		log:      opts.Logger,
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	snap, err := readPolicyDir(dir, false)
	if err != nil {
		return nil, dirError(fmt.Errorf("policy %s: %w", dir, err))
	}
	p, err := compile(ctx, dir, snap, e.query)
	if errors.Is(err, errNoRule) {
		return nil, &field.Error{Path: "query", Err: err}
	}
	if err != nil {
		return nil, dirError(err)
	}
	e.current.Store(p)
	e.lastSum = snap.sum
	// Subdirectories created later are read on the next change in a watched
	// directory, or on the next poll.
	err = watch.Dirs(ctx, snap.dirs, watch.Options{Poll: opts.Poll},
		func() { e.reload(ctx) },
		func(err error) { e.log.Warn("policy watch", "dir", dir, "error", err) })
	if err != nil {
		return nil, dirError(fmt.Errorf("policy %s: %w", dir, err))
	}
	e.log.Info("policy loaded", "dir", dir, "revision", p.Revision(), "query", e.query)
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
func (e *Engine) EvalInput(ctx context.Context, build func(reads Inputs) ast.Value) (Result, error) {
	p := e.current.Load()
	input := build(p.inputs)
	// The timeout starts after the input is built (converting a large
	// parsed body takes time that is not the policy's): it bounds evaluation.
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	return p.Eval(ctx, input)
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
	p, err := compile(ctx, e.dir, snap, e.query)
	if err != nil {
		e.log.Error("policy reload refused, keeping the running revision", "dir", e.dir, "revision", snap.revision(), "running", running, "error", err)
		e.reloaded(snap.revision(), err)
		return
	}
	e.current.Store(p)
	e.log.Info("policy reloaded", "dir", e.dir, "revision", p.Revision(), "previous", running)
	e.reloaded(p.Revision(), nil)
}

func (e *Engine) reloaded(revision string, err error) {
	if e.onReload != nil {
		e.onReload(revision, err)
	}
}
