package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/modelguard/modelguard/extauthz"
	"github.com/modelguard/modelguard/httpauthz"
	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/metrics"
)

func serve(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (default: the embedded demo configuration)")
	grpcAddr := fs.String("grpc-address", "", "override server.grpc_address")
	adminAddr := fs.String("admin-address", "", "override server.admin_address")
	httpAddr := fs.String("http-address", "", "override server.http.address (the HTTP authorization listener; \"off\" by default)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	setGCPercent()

	cfg, demo, err := loadServeConfig(*cfgPath, *grpcAddr, *adminAddr, *httpAddr)
	if err != nil {
		fmt.Fprintf(stderr, "modelguard: %v\n", err)
		return 1
	}
	if demo != nil {
		defer os.RemoveAll(demo.dir)
	}
	log := newLogger(cfg.Log, stderr)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)

	// The audit trail opens first (recovering its chain) so that every
	// operator event of this run, from the start on, is in it.
	auditor, err := openAudit(cfg, audit.Options{Logger: log, Metrics: m})
	if err != nil {
		fmt.Fprintf(stderr, "modelguard: %v\n", err)
		return 1
	}
	defer auditor.Close()
	// Background work (reload watches, JWKS refresh) outlives the drain.
	bg, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()
	opts := policy.Options{Logger: log, Metrics: m}
	tracer, err := openTracing(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "modelguard: %v\n", err)
		return 1
	}
	if tracer != nil {
		opts.Tracer = tracer
		// After the drain and the audit flush: the last decisions' spans.
		defer tracingCloser{tracer, log}.Close()
	}
	engine, err := startEngine(bg, cfg, auditor, opts)
	if err != nil {
		fmt.Fprintf(stderr, "modelguard: %v\n", err)
		return 1
	}
	svc, err := extauthz.Listen(cfg, engine, reg, log)
	if err != nil {
		fmt.Fprintf(stderr, "modelguard: %v\n", err)
		return 1
	}
	var httpSvc *httpauthz.Server
	if cfg.Server.HTTP.Enabled() {
		if httpSvc, err = httpauthz.Listen(cfg.Server.HTTP, engine, cfg.Server.ShutdownGrace, log); err != nil {
			fmt.Fprintf(stderr, "modelguard: %v\n", err)
			return 1
		}
	}
	log.Info("modelguard ext_authz serving", "grpc", svc.GRPCAddr().String(), "admin", fmt.Sprint(svc.AdminAddr()),
		"http", httpAddress(httpSvc), "config", cfg.File, "version", version)
	if demo != nil {
		demo.printIntro(stdout, svc.GRPCAddr().String(), fmt.Sprint(svc.AdminAddr()))
	}
	return serveUntilSignal(svc, httpSvc, auditor, stopBackground, cfg.Server.ShutdownGrace, log)
}

// loadServeConfig loads the configuration at path or, when path is empty,
// writes the demo (its setup is returned; the caller removes its dir), and
// applies the listen address flags that are set.
func loadServeConfig(path, grpcAddr, adminAddr, httpAddr string) (*config.Config, *demoSetup, error) {
	var (
		cfg  *config.Config
		demo *demoSetup
		err  error
	)
	if path == "" {
		if demo, err = newDemo(); err != nil {
			return nil, nil, fmt.Errorf("demo: %w", err)
		}
		cfg = demo.cfg
	} else if cfg, err = config.Load(path); err != nil {
		return nil, nil, err
	}
	if grpcAddr != "" {
		cfg.Server.GRPCAddress = grpcAddr
	}
	if adminAddr != "" {
		cfg.Server.AdminAddress = adminAddr
	}
	if httpAddr != "" {
		if err := cfg.SetHTTPAddress(httpAddr); err != nil {
			return nil, nil, err
		}
	}
	return cfg, demo, nil
}

// startEngine records the start in the audit trail, builds the engine
// (reloads and refreshes run until bg ends) and records the configuration
// it loaded.
func startEngine(bg context.Context, cfg *config.Config, auditor *audit.Writer, opts policy.Options) (*policy.Engine, error) {
	if err := auditor.Record(&audit.Event{Kind: audit.KindStart, Outcome: "ok", File: cfg.File,
		Detail: fmt.Sprintf("modelguard %s pid %d", version, os.Getpid())}); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if auditor != nil {
		opts.Audit = auditor
	}
	engine, err := policy.New(bg, cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := auditor.Record(&audit.Event{Kind: audit.KindConfigLoaded, Outcome: "ok", File: cfg.File,
		PolicyRevision: engine.PolicyRevision()}); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return engine, nil
}

// serveUntilSignal serves until a server fails or SIGTERM/SIGINT arrives;
// then it drains in-flight checks, stops background work and flushes the
// audit trail (with its stop record) within grace. It returns the exit code.
// httpSvc is nil unless the HTTP authorization listener is on.
func serveUntilSignal(svc *extauthz.Service, httpSvc *httpauthz.Server, auditor *audit.Writer, stopBackground func(), grace time.Duration, log *slog.Logger) int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	served := make(chan error, 2)
	go func() { served <- svc.Serve() }()
	if httpSvc != nil {
		go func() {
			if err := httpSvc.Serve(); err != nil {
				served <- err
			}
		}()
	}
	select {
	case s := <-sig:
		log.Info("signal received: draining in-flight checks", "signal", s.String())
		var drained sync.WaitGroup
		if httpSvc != nil {
			drained.Go(func() { httpSvc.Shutdown(context.Background()) })
		}
		svc.Shutdown(context.Background())
		drained.Wait()
		<-served
		// Reloads stop before the trail closes: their events are recorded.
		stopBackground()
		auditor.Record(&audit.Event{Kind: audit.KindStop, Outcome: "ok", Detail: "signal " + s.String()})
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := auditor.Shutdown(ctx); err != nil {
			log.Error("audit trail not flushed", "error", err)
			return 1
		}
		log.Info("stopped")
		return 0
	case err := <-served:
		if err != nil {
			log.Error("server failed", "error", err)
			return 1
		}
		return 0
	}
}

// httpAddress is the HTTP authorization listener's address for the start
// log line, "off" when it is not on.
func httpAddress(s *httpauthz.Server) string {
	if s == nil {
		return "off"
	}
	return s.Addr().String()
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// openAudit builds the audit trail cfg describes (nil when it has no sink),
// for serve and the Kong plugin server; errors name the file and line.
func openAudit(cfg *config.Config, opts audit.Options) (*audit.Writer, error) {
	w, err := audit.New(cfg.Audit, cfg.Dir, opts)
	if err != nil {
		return nil, cfg.Error(field.Under("audit", err))
	}
	return w, nil
}

// serveGCPercent is the server's GOGC unless the environment sets one. Rego
// evaluates by deep recursion; every GC cycle shrinks the stacks of idle
// gRPC workers and the next check on each grows (copies) it back. Under
// load (50 concurrent checks, 64 workers) that copying took 8.5% of the
// server's CPU at the default of 100 and 2.3% at 400, for 86 MB peak RSS
// instead of 57 MB (README, Performance).
const serveGCPercent = 400

func setGCPercent() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(serveGCPercent)
	}
}
