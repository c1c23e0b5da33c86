package kongplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/config"
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
	s = c.load()
	if s.err != nil && prev != nil {
		s.failures = prev.failures + 1
	}
	c.state.Store(s)
	return s
}

func (c *core) retry(s *coreState) bool {
	if s.err == nil {
		return false
	}
	wait := min(retryAfter<<min(s.failures, 8), maxRetryAfter)
	return c.p.now().Sub(s.at) >= wait
}

func (c *core) load() *coreState {
	s := &coreState{at: c.p.now()}
	log := c.p.log
	refuse := func(err error) *coreState {
		s.err = err
		log.Error("modelguard configuration refused: every request is denied (503)", "config_path", c.path, "error", err.Error())
		return s
	}
	if !filepath.IsAbs(c.path) {
		return refuse(fmt.Errorf("config_path %q: must be an absolute path", c.path))
	}
	cfg, err := config.Load(c.path)
	if err != nil {
		return refuse(err) // errors name the file (and line)
	}
	if cfg.Audit.Output == "stdout" {
		return refuse(cfg.Error(&config.FieldError{Path: "audit.output", Err: errStdoutAudit}))
	}
	log = c.p.newLogger(cfg.Log)
	opts := policy.Options{Logger: log, HoldReservations: c.p.settle}
	var closer io.Closer
	if c.p.openAudit != nil {
		rec, cl, err := c.p.openAudit(cfg)
		if err != nil {
			return refuse(err)
		}
		opts.Audit, closer = rec, cl
	}
	if c.p.openTrace != nil {
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
		return refuse(errors.Join(err, closeIf(closer), closeIf(s.tracing)))
	}
	s.engine, s.stop, s.audit = eng, stop, closer
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
