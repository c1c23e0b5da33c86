package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"

	"github.com/Kong/go-pdk/server"

	"github.com/modelguard/modelguard/kongplugin"
	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
)

// kongInvocation reports whether the arguments are the flags Kong passes to
// a Go plugin binary (go-pdk's -kong-prefix, -dump, -help) rather than a
// subcommand: Kong runs the same binary as its plugin server.
func kongInvocation(args []string) bool {
	if len(args) == 0 || !strings.HasPrefix(args[0], "-") {
		return false
	}
	name, _, _ := strings.Cut(strings.TrimLeft(args[0], "-"), "=")
	return name == "kong-prefix" || name == "dump" || name == "help" || name == settleFlag
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
	flag.Parse()
	p := kongplugin.New(kongplugin.Options{
		Settle:    *settle,
		Logger:    newLogger(config.Log{}, stderr),
		NewLogger: func(c config.Log) *slog.Logger { return newLogger(c, stderr) },
		OpenAudit: func(cfg *config.Config) (policy.AuditSink, io.Closer, error) {
			return openKongAudit(cfg, newLogger(cfg.Log, stderr))
		},
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

// openKongAudit opens the audit trail a configuration names, as serve does,
// with a start event now and a stop event when the plugin server stops.
func openKongAudit(cfg *config.Config, log *slog.Logger) (policy.AuditSink, io.Closer, error) {
	w, err := openAudit(cfg, audit.Options{Logger: log})
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
