package tracing

import (
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/secret"
)

// Settings is the tracing section of the configuration file: OpenTelemetry
// spans for every decision, exported over OTLP. DefaultSettings gives the
// value every absent key takes; Open builds the Provider it describes.
type Settings struct {
	// Enabled turns tracing on; default false. While off nothing else in
	// the section is used, and deciding costs nothing more than without
	// tracing.
	Enabled bool `yaml:"enabled"`
	// Exporter is the OTLP transport: "otlp-grpc" (default) or "otlp-http"
	// (protobuf over HTTP).
	Exporter string `yaml:"exporter"`
	// Endpoint is the collector's URL: https://host:4317 for otlp-grpc,
	// https://host:4318/v1/traces for otlp-http (a URL without a path gets
	// /v1/traces). http:// sends in plaintext: allowed for loopback hosts,
	// and for others only with Insecure. Required when enabled.
	Endpoint string `yaml:"endpoint"`
	// Insecure allows an http:// endpoint on a non-loopback host (a
	// collector reached over a network the operator trusts); default false.
	Insecure bool `yaml:"insecure"`
	// TLS configures an https endpoint: a CA other than the system's, and a
	// client certificate for mTLS. Paths relative to the configuration.
	TLS TLS `yaml:"tls"`
	// Headers are sent with every export (a collector's API key); values
	// come from files or environment variables, never inline.
	Headers []Header `yaml:"headers"`
	// SampleRatio is the share of decisions traced, 0 to 1; default 1.
	// Sampling is by trace id, so services with the same ratio keep or
	// drop the same traces.
	SampleRatio float64 `yaml:"sample_ratio"`
	// FollowParent makes a request that carries a trace context (W3C
	// traceparent, B3) traced exactly when its caller sampled it, whatever
	// SampleRatio says; default true. false applies SampleRatio to every
	// decision.
	FollowParent bool `yaml:"follow_parent"`
	// ServiceName is the service.name resource attribute; default
	// "modelguard".
	ServiceName string `yaml:"service_name"`
	// Timeout bounds one export (batches are sent in the background: a
	// slow or absent collector never delays a decision); default 10s, 1s to
	// 1m.
	Timeout time.Duration `yaml:"timeout"`
}

// TLS configures the connection to an https endpoint.
type TLS struct {
	// CAFile holds the PEM certificates that verify the collector, instead
	// of the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile (together) are the client certificate for mTLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

func (t TLS) set() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// Header is one header sent to the collector; its value is read from
// ValueFile or ValueEnv (exactly one; one trailing newline dropped).
type Header struct {
	Name      string `yaml:"name"`
	ValueFile string `yaml:"value_file"`
	ValueEnv  string `yaml:"value_env"`
}

// Exporters, defaults and bounds of Settings.
const (
	ExporterGRPC       = "otlp-grpc"
	ExporterHTTP       = "otlp-http"
	DefaultServiceName = "modelguard"
	DefaultTimeout     = 10 * time.Second
	// defaultHTTPPath is OTLP/HTTP's path for traces.
	defaultHTTPPath = "/v1/traces"
)

// DefaultSettings returns the value every absent key takes.
func DefaultSettings() Settings {
	return Settings{
		Exporter:     ExporterGRPC,
		SampleRatio:  1,
		FollowParent: true,
		ServiceName:  DefaultServiceName,
		Timeout:      DefaultTimeout,
	}
}

// Validate checks s, reading its header values and TLS files when tracing
// is enabled; paths resolve against baseDir. The errors are *field.Error
// relative to the section ("endpoint").
func (s Settings) Validate(baseDir string) []error {
	var errs field.List
	errs.OneOf("exporter", s.Exporter, ExporterGRPC, ExporterHTTP)
	if s.SampleRatio < 0 || s.SampleRatio > 1 {
		errs.Addf("sample_ratio", "must be between 0 and 1, got %v", s.SampleRatio)
	}
	if s.ServiceName == "" {
		errs.Addf("service_name", "must not be empty")
	}
	field.Range(&errs, "timeout", s.Timeout, time.Second, time.Minute)
	if !s.Enabled {
		return errs
	}
	s.checkEndpoint(&errs)
	s.headers(baseDir, &errs)
	if _, err := s.tlsConfig(baseDir); err != nil {
		errs = append(errs, err)
	}
	return errs
}

func (s Settings) checkEndpoint(errs *field.List) {
	if s.Endpoint == "" {
		errs.Addf("endpoint", "required when tracing is enabled")
		return
	}
	u, err := url.Parse(s.Endpoint)
	switch {
	case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		errs.Addf("endpoint", "want an http or https URL such as https://collector:4317, got %q", s.Endpoint)
	case u.User != nil:
		errs.Addf("endpoint", "must not carry credentials (user:password@): use headers")
	case s.Insecure && u.Scheme == "https":
		errs.Addf("insecure", "only used with an http:// endpoint")
	case u.Scheme == "http" && s.TLS.set():
		errs.Addf("tls", "only used with an https:// endpoint")
	case !s.Insecure:
		if err := field.CheckHTTPSURL(s.Endpoint, "use headers", "spans name models, reasons and policy revisions; set insecure: true to send them in plaintext"); err != nil {
			errs.Addf("endpoint", "%v", err)
		}
	}
	if s.Exporter == ExporterGRPC && u != nil && u.Path != "" && u.Path != "/" {
		errs.Addf("endpoint", "otlp-grpc takes no path, got %q", u.Path)
	}
}

// headers reads the configured header values, adding what is wrong to
// errs.
func (s Settings) headers(baseDir string, errs *field.List) map[string]string {
	if len(s.Headers) == 0 {
		return nil
	}
	out := make(map[string]string, len(s.Headers))
	for i, h := range s.Headers {
		p := "headers[" + strconv.Itoa(i) + "]"
		if !field.IsHeaderName(h.Name) {
			errs.Addf(p+".name", "%q is not a valid lower-case HTTP header name", h.Name)
			continue
		}
		if _, dup := out[h.Name]; dup {
			errs.Addf(p+".name", "%s is set twice", h.Name)
			continue
		}
		v, err := secret.Read(resolve(h.ValueFile, baseDir), h.ValueEnv, true)
		if err != nil {
			errs.Addf(p, "%v", err)
			continue
		}
		if !httpguts.ValidHeaderFieldValue(string(v)) {
			errs.Addf(p, "the value is not a valid header value (a line break or control character)")
			continue
		}
		out[h.Name] = string(v)
	}
	return out
}

// resolve joins a relative path to baseDir; "" stays "".
func resolve(p, baseDir string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(baseDir, p)
}
