package tracing

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/modelguard/modelguard/test/testkit"
)

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, dir, "token", "s3cret\n")
	testkit.WriteFile(t, dir, "two-lines", "a\nb\n")
	testkit.WriteFile(t, dir, "not.pem", "hello\n")
	t.Setenv("MODELGUARD_TEST_OTLP_TOKEN", "env-secret")
	on := func(edit func(*Settings)) Settings {
		s := DefaultSettings()
		s.Enabled, s.Endpoint = true, "https://collector.example:4317"
		edit(&s)
		return s
	}
	tests := []struct {
		name string
		s    Settings
		want string // the first error, "" for none
	}{
		{"off by default", DefaultSettings(), ""},
		{"off ignores a missing endpoint", func() Settings { s := DefaultSettings(); s.Endpoint = "junk"; return s }(), ""},
		{"off still checks values", func() Settings { s := DefaultSettings(); s.SampleRatio = 2; return s }(), "sample_ratio: must be between 0 and 1, got 2"},
		{"https", on(func(*Settings) {}), ""},
		{"http on loopback", on(func(s *Settings) { s.Endpoint = "http://127.0.0.1:4317" }), ""},
		{"http elsewhere", on(func(s *Settings) { s.Endpoint = "http://collector:4317" }), "endpoint: must use https"},
		{"http elsewhere, insecure", on(func(s *Settings) { s.Endpoint, s.Insecure = "http://collector:4317", true }), ""},
		{"insecure with https", on(func(s *Settings) { s.Insecure = true }), "insecure: only used with an http:// endpoint"},
		{"tls with http", on(func(s *Settings) { s.Endpoint, s.TLS.CAFile = "http://127.0.0.1:4317", "ca.pem" }), "tls: only used with an https:// endpoint"},
		{"no endpoint", on(func(s *Settings) { s.Endpoint = "" }), "endpoint: required when tracing is enabled"},
		{"not a URL", on(func(s *Settings) { s.Endpoint = "collector:4317" }), "endpoint: want an http or https URL"},
		{"credentials in the URL", on(func(s *Settings) { s.Endpoint = "https://u:p@collector:4317" }), "endpoint: must not carry credentials"},
		{"gRPC with a path", on(func(s *Settings) { s.Endpoint = "https://collector:4317/v1/traces" }), "endpoint: otlp-grpc takes no path"},
		{"HTTP with a path", on(func(s *Settings) { s.Exporter, s.Endpoint = ExporterHTTP, "https://collector:4318/v1/traces" }), ""},
		{"unknown exporter", on(func(s *Settings) { s.Exporter = "zipkin" }), `exporter: "zipkin" is not one of otlp-grpc, otlp-http`},
		{"negative ratio", on(func(s *Settings) { s.SampleRatio = -0.1 }), "sample_ratio: must be between 0 and 1"},
		{"timeout too short", on(func(s *Settings) { s.Timeout = time.Millisecond }), "timeout: must be between 1s and 1m0s"},
		{"no service name", on(func(s *Settings) { s.ServiceName = "" }), "service_name: must not be empty"},
		{"header from file and env", on(func(s *Settings) {
			s.Headers = []Header{{Name: "x-a", ValueFile: "token"}, {Name: "x-b", ValueEnv: "MODELGUARD_TEST_OTLP_TOKEN"}}
		}), ""},
		{"header name", on(func(s *Settings) { s.Headers = []Header{{Name: "X A", ValueFile: "token"}} }), `headers[0].name: "X A" is not a valid lower-case HTTP header name`},
		{"header twice", on(func(s *Settings) {
			s.Headers = []Header{{Name: "x-a", ValueFile: "token"}, {Name: "x-a", ValueFile: "token"}}
		}), "headers[1].name: x-a is set twice"},
		{"header without value", on(func(s *Settings) { s.Headers = []Header{{Name: "x-a"}} }), "headers[0]: exactly one of a file and an environment variable must be set"},
		{"header from a missing variable", on(func(s *Settings) { s.Headers = []Header{{Name: "x-a", ValueEnv: "MODELGUARD_TEST_NOT_SET"}} }), "headers[0]: environment variable MODELGUARD_TEST_NOT_SET is not set"},
		{"header value over two lines", on(func(s *Settings) { s.Headers = []Header{{Name: "x-a", ValueFile: "two-lines"}} }), "headers[0]: the value is not a valid header value"},
		{"CA file missing", on(func(s *Settings) { s.TLS.CAFile = "nope.pem" }), "tls.ca_file: open "},
		{"CA file not PEM", on(func(s *Settings) { s.TLS.CAFile = "not.pem" }), "tls.ca_file: no PEM certificate in "},
		{"client key without certificate", on(func(s *Settings) { s.TLS.KeyFile = "k.pem" }), "tls.cert_file: required with key_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.s.Validate(dir)
			switch {
			case tt.want == "" && len(errs) > 0:
				t.Errorf("unexpected errors %v", errs)
			case tt.want != "" && (len(errs) == 0 || !strings.HasPrefix(errs[0].Error(), tt.want)):
				t.Errorf("errors %v, want first %q", errs, tt.want)
			}
		})
	}
}

// Off, Open builds nothing: no exporter, no connection.
func TestOpenOff(t *testing.T) {
	s := DefaultSettings()
	s.Endpoint = "http://127.0.0.1:1"
	p, err := Open(context.Background(), s, t.TempDir(), "test")
	if p != nil || err != nil {
		t.Fatalf("Open with tracing off = %v, %v", p, err)
	}
}

// The OTLP/HTTP exporter posts to /v1/traces when the endpoint has no
// path, with the configured headers; the service name and version are
// the spans' resource.
func TestOpenHTTP(t *testing.T) {
	rcv := testkit.NewOTLPHTTPReceiver(t)
	dir := t.TempDir()
	testkit.WriteFile(t, dir, "token", "s3cret\n")
	s := DefaultSettings()
	s.Enabled, s.Exporter, s.ServiceName = true, ExporterHTTP, "mg-test"
	s.Endpoint = strings.TrimSuffix(rcv.Endpoint, "/v1/traces")
	s.Headers = []Header{{Name: "x-collector-token", ValueFile: filepath.Join(dir, "token")}}
	p, err := Open(context.Background(), s, dir, "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.Start(context.Background(), "probe")
	span.End()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := rcv.Spans()
	if len(spans) != 1 || spans[0].GetName() != "probe" || spans[0].Service != "mg-test" {
		t.Fatalf("received %v", spans)
	}
	if got := rcv.Header().Get("x-collector-token"); got != "s3cret" {
		t.Errorf("x-collector-token = %q", got)
	}
}

// Extract reads W3C and B3 trace contexts from lower-case header maps;
// W3C wins when both are present.
func TestExtract(t *testing.T) {
	p := &Provider{prop: propagator()}
	const w3c, b3 = "4bf92f3577b34da6a3ce929d0e0e4736", "5bf92f3577b34da6a3ce929d0e0e4736"
	for _, tc := range []struct {
		name    string
		headers map[string]string
		want    string
	}{
		{"none", map[string]string{}, ""},
		{"w3c", map[string]string{"traceparent": "00-" + w3c + "-00f067aa0ba902b7-01"}, w3c},
		{"b3 single", map[string]string{"b3": b3 + "-00f067aa0ba902b7-1"}, b3},
		{"b3 multi", map[string]string{"x-b3-traceid": b3, "x-b3-spanid": "00f067aa0ba902b7", "x-b3-sampled": "1"}, b3},
		{"both", map[string]string{"traceparent": "00-" + w3c + "-00f067aa0ba902b7-01", "b3": b3 + "-00f067aa0ba902b7-1"}, w3c},
		{"malformed", map[string]string{"traceparent": "00-zz-00f067aa0ba902b7-01"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := trace.SpanContextFromContext(p.Extract(context.Background(), tc.headers))
			got := ""
			if sc.IsValid() {
				got = sc.TraceID().String()
			}
			if got != tc.want {
				t.Errorf("trace id %q, want %q", got, tc.want)
			}
		})
	}
}
