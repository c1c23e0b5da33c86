package kongplugin

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/policy/reload"
	"github.com/modelguard/modelguard/policy/watch"
)

// A configuration that failed to load answers 503 for retryAfter, then the
// next event tries again, so that a fixed file takes effect without
// restarting Kong; the wait doubles with each failure up to maxRetryAfter,
// so a file that stays broken is not reloaded (and logged) all the time.
const (
	retryAfter    = 5 * time.Second
	maxRetryAfter = time.Minute
)

// errStdoutAudit refuses an audit trail on stdout (the default) in Kong
// mode: Kong logs the plugin server's stdout at INFO, below its default
// log_level, so the records would be dropped.
var errStdoutAudit = errors.New(`"stdout" is lost behind Kong (Kong logs the plugin server's stdout at INFO, below its default log level): write the audit trail to a file, audit.http, or "off"`)

// core is the policy engine built from one configuration file, shared by
// every plugin instance that names the file: Kong's instance churn (a new
// instance per configuration change, evictions) then costs a map lookup.
type core struct {
	p    *Plugin
	path string // absolute and clean, or as configured when relative

	build sync.Mutex // held while loading
	state atomic.Pointer[coreState]
	// watching is set once the configuration file's directory is watched
	// (from the first good load on); guarded by build.
	watching bool
}

// coreState is one load attempt: an engine, or why there is none.
type coreState struct {
	engine *policy.Engine
	err    error
	at     time.Time
	// failures counts consecutive failed loads.
	failures int

	stop    context.CancelFunc
	audit   io.Closer // nil: nothing to close
	tracing io.Closer // nil: nothing to close
	// cfg, sink, tracer and sum are those of a loaded engine: a reload
	// keeps the audit trail (one writer per trail) and the tracing, and
	// skips an unchanged file.
	cfg    *config.Config
	sink   policy.AuditSink
	tracer policy.Tracer
	sum    [sha256.Size]byte
}

// coreFor returns the core for a configured path; paths naming the same
// file the same way share it (two cores on one file would mean two audit
// writers on one trail).
func (p *Plugin) coreFor(path string) *core {
	if path == "" {
		path = DefaultConfigPath
	}
	if filepath.IsAbs(path) {
		path = filepath.Clean(path)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.cores[path]
	if c == nil {
		c = &core{p: p, path: path}
		p.cores[path] = c
	}
	return c
}

// get returns the current state, loading the configuration on first use and
// again once a failure is old enough. While one event loads, the others
// wait on the first load and answer with the last failure after it.
func (c *core) get() *coreState {
	s := c.state.Load()
	if s != nil && !c.retry(s) {
		return s
	}
	if s == nil {
		c.build.Lock()
	} else if !c.build.TryLock() {
		return s
	}
	defer c.build.Unlock()
	prev := c.state.Load()
	if prev != nil && !c.retry(prev) {
		return prev
	}
	s = c.load(nil)
	if s.err != nil && prev != nil {
		s.failures = prev.failures + 1
	}
	c.state.Store(s)
	if s.err == nil {
		c.watch()
	}
	return s
}

// watch reloads the configuration when its file changes, from the first
// good load until the plugin server stops: Kong need not restart. Called
// with build held.
func (c *core) watch() {
	if c.watching {
		return
	}
	err := watch.Dirs(c.p.ctx, []string{filepath.Dir(c.path)}, watch.Options{}, c.reload,
		func(err error) { c.p.log.Warn("configuration watch", "config_path", c.path, "error", err) })
	if err != nil {
		c.p.log.Error("configuration file not watched: changes need a restart of the plugin server", "config_path", c.path, "error", err)
		return
	}
	c.watching = true
}

// reload swaps in an engine built from the configuration file as it now
// is, keeping the audit trail of the engine in force; a file that does not
// load is refused and the engine in force stays (reload.Live does the same
// for serve). A core whose last load failed is left to get's retry.
func (c *core) reload() {
	c.build.Lock()
	defer c.build.Unlock()
	prev := c.state.Load()
	if prev == nil || prev.engine == nil || c.p.ctx.Err() != nil {
		return
	}
	if data, err := os.ReadFile(c.path); err == nil && sha256.Sum256(data) == prev.sum {
		return // another file in the directory changed
	}
	next := c.load(prev)
	ev := audit.Event{Kind: audit.KindConfigReload, File: c.path, Outcome: metrics.Outcome(next.err, "refused")}
	c.p.metrics.ConfigReloads.WithLabelValues(ev.Outcome).Inc()
	defer func() {
		if prev.sink == nil {
			return
		}
		if err := prev.sink.Record(&ev); err != nil {
			c.p.log.Error("audit record failed", "kind", ev.Kind, "error", err)
		}
	}()
	if next.err != nil {
		ev.Detail = next.err.Error()
		return // load logged it; the engine in force stays
	}
	ev.PolicyRevision = next.engine.PolicyRevision()
	if restart := reload.Changed(prev.cfg, next.cfg, kongFixed); len(restart) > 0 {
		ev.Detail = fmt.Sprintf("needs restart: %v (the running values stay)", restart)
		c.p.log.Warn("configuration reloaded; some changes need a restart of the plugin server and are not in force",
			"config_path", c.path, "needs_restart", restart)
	}
	c.state.Store(next)
	// Checks in flight finish on the engine they started with.
	time.AfterFunc(reloadGrace, prev.stop)
}

// kongFixed are the sections a plugin server reads once per configuration
// file: the audit trail and the tracing stay open across reloads.
var kongFixed = []string{"audit", "tracing"}

// reloadGrace is how long a replaced engine's background work (its rate
// limit store among it) outlives a reload, for the checks in flight.
const reloadGrace = 10 * time.Second

func (c *core) retry(s *coreState) bool {
	if s.err == nil {
		return false
	}
	wait := min(retryAfter<<min(s.failures, 8), maxRetryAfter)
	return c.p.now().Sub(s.at) >= wait
}

// load builds an engine from the configuration file. With running (a
// reload), the audit trail of the engine in force is kept rather than
// opened again, and a refusal leaves it alone.
func (c *core) load(running *coreState) *coreState {
	s := &coreState{at: c.p.now()}
	log := c.p.log
	refuse := func(err error) *coreState {
		s.err = err
		if running != nil {
			log.Error("modelguard configuration reload refused, keeping the one in force", "config_path", c.path, "error", err.Error())
		} else {
			log.Error("modelguard configuration refused: every request is denied (503)", "config_path", c.path, "error", err.Error())
		}
		return s
	}
	if !filepath.IsAbs(c.path) {
		return refuse(fmt.Errorf("config_path %q: must be an absolute path", c.path))
	}
	data, err := os.ReadFile(c.path)
	if err != nil {
		return refuse(fmt.Errorf("config: %w", err))
	}
	s.sum = sha256.Sum256(data)
	cfg, err := config.Parse(data, c.path, filepath.Dir(c.path))
	if err != nil {
		return refuse(err) // errors name the file (and line)
	}
	if cfg.Audit.Output == "stdout" {
		return refuse(cfg.Error(&config.FieldError{Path: "audit.output", Err: errStdoutAudit}))
	}
	log = c.p.newLogger(cfg.Log)
	opts := policy.Options{Logger: log, Metrics: c.p.metrics, HoldReservations: c.p.settle}
	var closer io.Closer
	switch {
	case running != nil:
		opts.Audit, closer = running.sink, running.audit
	case c.p.openAudit != nil:
		rec, cl, err := c.p.openAudit(cfg)
		if err != nil {
			return refuse(err)
		}
		opts.Audit, closer = rec, cl
	}
	switch {
	case running != nil:
		opts.Tracer, s.tracing = running.tracer, running.tracing
	case c.p.openTrace != nil:
		tr, cl, err := c.p.openTrace(cfg)
		if err != nil {
			return refuse(errors.Join(err, closeIf(closer)))
		}
		opts.Tracer, s.tracing = tr, cl
	}
	ctx, stop := context.WithCancel(c.p.ctx)
	eng, err := policy.New(ctx, cfg, opts)
	if err != nil {
		stop()
		if running == nil { // a reload's closers are the engine in force's
			err = errors.Join(err, closeIf(closer), closeIf(s.tracing))
		}
		return refuse(err)
	}
	s.engine, s.stop, s.audit, s.cfg, s.sink, s.tracer = eng, stop, closer, cfg, opts.Audit, opts.Tracer
	log.Info("modelguard core loaded", "config_path", c.path, "gateway", gateway)
	return s
}

func (c *core) close() {
	if s := c.state.Load(); s != nil && s.engine != nil {
		s.stop()
		_ = closeIf(s.audit)
		_ = closeIf(s.tracing)
	}
}

// closeIf closes c unless it is nil.
func closeIf(c io.Closer) error {
	if c == nil {
		return nil
	}
	return c.Close()
}
