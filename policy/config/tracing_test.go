package config

import "testing"

// The tracing section's errors name the file and line of the offending key.
func TestTracingErrors(t *testing.T) {
	runErrorCases(t, []errorCase{
		{"enabled without endpoint", doc(okAuth, okPolicy, "tracing:", "  enabled: true"),
			nil, []string{`config.yaml:3: tracing.endpoint: required when tracing is enabled`}},
		{"unknown exporter", doc(okAuth, okPolicy, "tracing:", "  exporter: zipkin"),
			nil, []string{`config.yaml:4: tracing.exporter: "zipkin" is not one of otlp-grpc, otlp-http`}},
		{"ratio over one", doc(okAuth, okPolicy, "tracing:", "  sample_ratio: 1.5"),
			nil, []string{`config.yaml:4: tracing.sample_ratio: must be between 0 and 1, got 1.5`}},
		{"plaintext to a remote collector", doc(okAuth, okPolicy, "tracing:", "  enabled: true", "  endpoint: http://collector:4317"),
			nil, []string{`config.yaml:5: tracing.endpoint: must use https: spans name models`}},
		{"header value from a missing variable", doc(okAuth, okPolicy, "tracing:", "  enabled: true", "  endpoint: https://collector:4317",
			"  headers:", "    - {name: x-token, value_env: MODELGUARD_TEST_NO_SUCH_VAR}"),
			nil, []string{`config.yaml:7: tracing.headers[0]: environment variable MODELGUARD_TEST_NO_SUCH_VAR is not set`}},
		{"header value inline is not a key", doc(okAuth, okPolicy, "tracing:", "  headers:", "    - {name: x-token, value: s3cret}"),
			nil, []string{`config.yaml:5: tracing.headers[0].value: unknown key`}},
	})
}
