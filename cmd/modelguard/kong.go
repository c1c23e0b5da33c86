package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/Kong/go-pdk/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/modelguard/modelguard/kongplugin"
	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/metrics"
)

// kongInvocation reports whether the arguments are the flags Kong passes to
// a Go plugin binary (go-pdk's -kong-prefix and -dump) rather than a
// subcommand: Kong runs the same binary as its plugin server.
func kongInvocation(args []string) bool {
	if len(args) == 0 || !strings.HasPrefix(args[0], "-") {
		return false
	}
	name, _, _ := strings.Cut(strings.TrimLeft(args[0], "-"), "=")
	return name == "kong-prefix" || name == "dump" || name == settleFlag
}

// settleFlag gives the plugin a response phase that settles token
// reservations from the usage the model reports. Kong learns a Go
// plugin's phases from -dump (query_cmd), so both the start and the query
// command in kong.conf must carry it; it makes Kong buffer whole
// responses on the plugin's routes.
const settleFlag = "settle"

// kongPlugin runs the Kong plugin server (go-pdk parses os.Args again,
// for its own flags). The plugin is named after the binary, so users write
// "modelguard" in kong.yml. Kong stops plugin servers with SIGTERM: the
// audit trails are flushed first.
func kongPlugin(stderr io.Writer) int {
	flag.CommandLine.SetOutput(stderr)
	flag.Usage = func() {
		fmt.Fprint(stderr, usage)
		fmt.Fprintln(stderr, "\nKong plugin server flags:")
		flag.PrintDefaults()
	}
	settle := flag.Bool(settleFlag, false, "settle token budgets from the usage in model responses: adds a response phase, which makes Kong buffer whole responses (no streaming); put it in both pluginserver_modelguard_start_cmd and _query_cmd")
	metricsAddr := flag.String("metrics-address", os.Getenv(envMetricsAddress),
		"serve the Prometheus metrics of serve at http://ADDRESS/metrics (default: $"+envMetricsAddress+"; unset: no listener)")
	flag.Parse() // go-pdk parses again in StartServer; its own flags are registered on the same set
	log := newLogger(config.Log{}, stderr)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	// Kong runs the binary with -dump at every start: no listener then.
	if d := flag.Lookup("dump"); *metricsAddr != "" && (d == nil || d.Value.String() != "true") {
		if err := serveMetrics(*metricsAddr, reg, log); err != nil {
			fmt.Fprintf(stderr, "modelguard: kong plugin server: %v\n", err)
			return 1
		}
	}
	p := kongplugin.New(kongplugin.Options{
		Settle:    *settle,
		Logger:    log,
		NewLogger: func(c config.Log) *slog.Logger { return newLogger(c, stderr) },
		OpenAudit: func(cfg *config.Config) (policy.AuditSink, io.Closer, error) {
			return openKongAudit(cfg, newLogger(cfg.Log, stderr), m)
		},
		Metrics: m,
		OpenTracing: func(cfg *config.Config) (policy.Tracer, io.Closer, error) {
			log := newLogger(cfg.Log, stderr)
			p, err := openTracing(cfg, log)
			if p == nil {
				return nil, nil, err
			}
			return p, tracingCloser{p, log}, nil
		},
	})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		p.Close()
		os.Exit(0)
	}()
	if err := server.StartServer(p.NewConfig, kongVersion(version), kongplugin.Priority); err != nil {
		fmt.Fprintf(stderr, "modelguard: kong plugin server: %v\n", err)
		return 1
	}
	return 0
}

// envMetricsAddress is the metrics listener of the plugin server, for a
// start_cmd in kong.conf that cannot hold flags.
const envMetricsAddress = "MODELGUARD_METRICS_ADDRESS"

// serveMetrics serves reg at http://addr/metrics until the process ends
// (Kong stops plugin servers with a signal).
func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener failed", "error", err)
		}
	}()
	log.Info("kong plugin server metrics listening", "address", lis.Addr().String())
	return nil
}

// openKongAudit opens the audit trail a configuration names, as serve does,
// with a start event now and a stop event when the plugin server stops.
func openKongAudit(cfg *config.Config, log *slog.Logger, m *metrics.Metrics) (policy.AuditSink, io.Closer, error) {
	w, err := openAudit(cfg, audit.Options{Logger: log, Metrics: m})
	if err != nil || w == nil {
		return nil, nil, err
	}
	if err := w.Record(&audit.Event{Kind: audit.KindStart, Outcome: "ok", File: cfg.File,
		Detail: fmt.Sprintf("modelguard %s kong plugin server pid %d", version, os.Getpid())}); err != nil {
		return nil, nil, errors.Join(err, w.Close())
	}
	return w, kongAuditCloser{w}, nil
}

// kongAuditCloser ends a run of the trail as serve does: a stop event,
// then a flush.
type kongAuditCloser struct{ w *audit.Writer }

func (c kongAuditCloser) Close() error {
	err := c.w.Record(&audit.Event{Kind: audit.KindStop, Outcome: "ok", Detail: "kong plugin server stopping"})
	return errors.Join(err, c.w.Close())
}

var semver = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+`)

// kongVersion is the x.y.z Kong accepts (at most three parts): a build
// suffix such as "-dev" or "+abc" is dropped.
func kongVersion(v string) string {
	if s := semver.FindString(v); s != "" {
		return s
	}
	return "0.0.0"
}
