// Package tracing traces modelguard's decisions with OpenTelemetry: it
// owns the tracing section of the configuration (Settings) and builds the
// Provider the core starts its spans with, exporting them over OTLP (gRPC
// or HTTP) in the background. The trace context of the checked request
// (W3C traceparent and tracestate, B3 single or multiple headers, which
// Envoy's Zipkin tracer sends) is the parent of each decision's span.
//
// Tracing never decides anything: spans are batched and sent by a
// background goroutine, and when the collector is slow or down they are
// dropped, never waited for.
package tracing

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/credentials"

	"github.com/modelguard/modelguard/policy/field"
)

// instrumentation names the tracer (the instrumentation scope of every span).
const instrumentation = "github.com/modelguard/modelguard/policy"

// Provider starts decision spans and exports them. It satisfies
// policy.Tracer.
type Provider struct {
	trace.Tracer
	tp   *sdktrace.TracerProvider
	prop propagation.TextMapPropagator
}

// Open builds the Provider s describes, or returns nil when tracing is
// disabled. version is the service.version resource attribute. Nothing is
// sent until a span ends; Shutdown flushes.
func Open(ctx context.Context, s Settings, baseDir, version string) (*Provider, error) {
	if !s.Enabled {
		return nil, nil
	}
	var errs field.List
	headers := s.headers(baseDir, &errs)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	tlsCfg, err := s.tlsConfig(baseDir)
	if err != nil {
		return nil, err
	}
	exp, err := s.exporter(ctx, headers, tlsCfg)
	if err != nil {
		return nil, &field.Error{Path: "exporter", Err: err}
	}
	sampler := sdktrace.TraceIDRatioBased(s.SampleRatio)
	if s.FollowParent {
		sampler = sdktrace.ParentBased(sampler)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithExportTimeout(s.Timeout)),
		sdktrace.WithSampler(sampler),
		sdktrace.WithResource(resource.NewSchemaless(
			attribute.String("service.name", s.ServiceName),
			attribute.String("service.version", version),
		)),
	)
	return New(tp, version), nil
}

// New returns a Provider over tp (Open builds one from Settings; tests
// give one that records spans in memory); version is the instrumentation
// scope's version.
func New(tp *sdktrace.TracerProvider, version string) *Provider {
	return &Provider{
		Tracer: tp.Tracer(instrumentation, trace.WithInstrumentationVersion(version)),
		tp:     tp,
		prop:   propagator(),
	}
}

// propagator reads the trace contexts modelguard honours: B3, both forms
// whatever the inject encoding, then W3C, which wins when a request
// carries both.
func propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(b3.New(), propagation.TraceContext{})
}

// Extract returns ctx with the trace context headers carry (lower-case
// names, as the core's Request has them), if any. The map is read in
// place, not copied.
func (p *Provider) Extract(ctx context.Context, headers map[string]string) context.Context {
	return p.prop.Extract(ctx, propagation.MapCarrier(headers))
}

// Shutdown exports the spans still queued (within ctx) and stops the
// exporter.
func (p *Provider) Shutdown(ctx context.Context) error {
	return p.tp.Shutdown(ctx)
}

func (s Settings) exporter(ctx context.Context, headers map[string]string, tlsCfg *tls.Config) (sdktrace.SpanExporter, error) {
	if s.Exporter == ExporterHTTP {
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(s.Endpoint), otlptracehttp.WithTimeout(s.Timeout)}
		if u, err := url.Parse(s.Endpoint); err == nil && (u.Path == "" || u.Path == "/") {
			opts = append(opts, otlptracehttp.WithURLPath(defaultHTTPPath))
		}
		if headers != nil {
			opts = append(opts, otlptracehttp.WithHeaders(headers))
		}
		if tlsCfg != nil {
			opts = append(opts, otlptracehttp.WithTLSClientConfig(tlsCfg))
		}
		return otlptracehttp.New(ctx, opts...)
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL(s.Endpoint), otlptracegrpc.WithTimeout(s.Timeout)}
	if headers != nil {
		opts = append(opts, otlptracegrpc.WithHeaders(headers))
	}
	if tlsCfg != nil {
		opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
	}
	return otlptracegrpc.New(ctx, opts...)
}

// tlsConfig builds the client TLS configuration of the tls section; nil
// when it is empty (the system's roots, no client certificate).
func (s Settings) tlsConfig(baseDir string) (*tls.Config, error) {
	t := s.TLS
	if !t.set() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(resolve(t.CAFile, baseDir))
		if err != nil {
			return nil, &field.Error{Path: "tls.ca_file", Err: err}
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, field.Errorf("tls.ca_file", "no PEM certificate in %s", resolve(t.CAFile, baseDir))
		}
	}
	switch {
	case t.CertFile == "" && t.KeyFile == "":
	case t.CertFile == "":
		return nil, field.Errorf("tls.cert_file", "required with key_file")
	case t.KeyFile == "":
		return nil, field.Errorf("tls.key_file", "required with cert_file")
	default:
		cert, err := tls.LoadX509KeyPair(resolve(t.CertFile, baseDir), resolve(t.KeyFile, baseDir))
		if err != nil {
			return nil, &field.Error{Path: "tls.cert_file", Err: fmt.Errorf("client certificate: %w", err)}
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
