package main

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/tracing"
)

// tracingFlush bounds the export of the spans still queued at stop.
const tracingFlush = 5 * time.Second

// openTracing starts the tracing cfg describes, for serve and the Kong
// plugin server: nil when it is off. Errors name the file and line.
func openTracing(cfg *config.Config, log *slog.Logger) (*tracing.Provider, error) {
	p, err := tracing.Open(context.Background(), cfg.Tracing, cfg.Dir, version)
	if err != nil {
		return nil, cfg.Error(field.Under("tracing", err))
	}
	if p != nil {
		// OpenTelemetry reports failed exports through one process-wide
		// handler (by default the standard logger, unstructured on
		// stderr): it is set here, where the process is wired.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("tracing: spans not exported", "error", err)
		}))
	}
	return p, nil
}

// tracingCloser flushes the queued spans and stops the exporter.
type tracingCloser struct {
	p   *tracing.Provider
	log *slog.Logger
}

func (c tracingCloser) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), tracingFlush)
	defer cancel()
	err := c.p.Shutdown(ctx)
	if err != nil {
		c.log.Error("tracing: spans not flushed at stop", "error", err)
	}
	return err
}
