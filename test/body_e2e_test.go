package test

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"
)

// TestEnvoyBodySafety runs the JSON attack table of
// docs/security-pitfalls.md, and the other body checks, end to end
// through the Envoy harness.
func TestEnvoyBodySafety(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := map[string]string{"x-api-key": e.keys["alice-key"]}
	msgs := `"messages":[{"role":"user","content":"secret prompt text"}]`
	deep := strings.Repeat("[", 10001) + strings.Repeat("]", 10001)
	tests := []struct {
		name    string
		path    string
		headers map[string]string
		body    []byte
		status  int
		reason  string
		message string
	}{
		{"valid chat", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini",` + msgs + `}`), 200, "allowed", ""},
		{"duplicate keys: last-wins parsers would see another model", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini","model":"gpt-4o",` + msgs + `}`), 400, "body_duplicate_key", "/model"},
		{"nested duplicate keys", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","role":"system","content":"x"}]}`), 400, "body_duplicate_key", "/messages/0/role"},
		{"case variants: a struct-decoding server would read either", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini","MODEL":"gpt-4o",` + msgs + `}`), 400, "body_ambiguous_key", `\"/*\"`},
		{"Kelvin sign folds to k", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini","max_tokens":10,"max_to\u212aens":5000,` + msgs + `}`), 400, "body_ambiguous_key", ""},
		{"caller's metadata key is not echoed", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini","metadata":{"secret prompt text":1},` + msgs + `}`), 400, "body_schema_violation", "/metadata/*"},
		// envoy.yaml rejects escaped slashes before ext_authz (no reason:
		// modelguard is not called); TestEnvoyConnectionManagerPath checks
		// the core's own refusal with Envoy keeping them.
		{"encoded slash: refused by Envoy", "/v1/chat%2Fcompletions", nil, []byte(`{"model":"gpt-4o-mini",` + msgs + `}`), 400, "", ""},
		{"encoded slash, lower case", "/v1/chat%2fcompletions", nil, []byte(`{"model":"gpt-4o-mini",` + msgs + `}`), 400, "", ""},
		{"two JSON values", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini",` + msgs + `}{"model":"gpt-4o"}`), 400, "body_trailing_data", ""},
		{"trailing garbage", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini",` + msgs + `}xyz`), 400, "body_trailing_data", ""},
		{"10,001 nested arrays", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini","x":` + deep + `,` + msgs + `}`), 400, "body_too_deep", ""},
		{"invalid UTF-8", "/v1/chat/completions", nil, []byte("{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"), 400, "body_invalid_utf8", ""},
		{"lone surrogate", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"\ud800"}]}`), 400, "body_lone_surrogate", ""},
		{"huge number", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini","temperature":1e400,` + msgs + `}`), 400, "body_number_invalid", ""},
		{"schema: unknown role", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini","messages":[{"role":"wizard","content":"secret prompt text"}]}`), 400, "body_schema_violation", "/messages/0/role"},
		{"schema: temperature out of range", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini","temperature":3,` + msgs + `}`), 400, "body_schema_violation", "/temperature"},
		{"unconfigured model", "/v1/chat/completions", nil, []byte(`{"model":"gpt-5",` + msgs + `}`), 403, "model_not_configured", ""},
		{"unconfigured model by path", "/v2/models/bert/infer", nil, []byte(`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}`), 403, "model_not_configured", ""},
		{"tensor data does not fill the shape", "/v2/models/resnet/infer", map[string]string{"x-api-key": e.keys["admin-key"]}, []byte(`{"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5]}]}`), 400, "body_schema_violation", "/inputs/0"},
		{"model's max_tokens limit", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini","max_tokens":5000,` + msgs + `}`), 400, "max_tokens_limit_exceeded", ""},
		{"role's max_tokens cap (policy)", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini","max_tokens":2000,` + msgs + `}`), 403, "max_tokens_exceeded", ""},
		{"form content type", "/v1/chat/completions", map[string]string{"content-type": "application/x-www-form-urlencoded"}, []byte(`{"model":"gpt-4o-mini",` + msgs + `}`), 415, "body_content_type_unsupported", ""},
		{"gzip body", "/v1/chat/completions", map[string]string{"content-encoding": "gzip"}, gzipped(`{"model":"gpt-4o-mini",` + msgs + `}`), 200, "allowed", ""},
		{"gzip bomb", "/v1/chat/completions", map[string]string{"content-encoding": "gzip"}, gzipped(`{"model":"gpt-4o-mini","x":"` + strings.Repeat("a", 8<<20) + `"}`), 413, "body_too_large", ""},
		{"brotli is refused", "/v1/chat/completions", map[string]string{"content-encoding": "br"}, []byte("\x0b\x02\x80{}\x03"), 415, "body_encoding_unsupported", ""},
		{"over max_request_bytes: truncated by Envoy, never read as whole", "/v1/chat/completions", nil, []byte(`{"model":"gpt-4o-mini","user":"` + strings.Repeat("u", 1<<20) + `",` + msgs + `}`), 413, "body_truncated", ""},
		{"empty body", "/v1/chat/completions", nil, nil, 400, "body_missing", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			for k, v := range alice {
				h[k] = v
			}
			for k, v := range tc.headers {
				h[k] = v
			}
			r := e.doRaw("POST", tc.path, h, tc.body)
			if r.status != tc.status || r.reason() != tc.reason {
				t.Fatalf("got %d %q, want %d %q (body %s)", r.status, r.reason(), tc.status, tc.reason, r.body)
			}
			if tc.status >= 400 {
				if !strings.Contains(string(r.body), tc.message) {
					t.Errorf("client message %s lacks %q", r.body, tc.message)
				}
				for _, leak := range []string{"secret prompt", "gpt-4o\"", tc.reason} {
					if leak != "" && bytes.Contains(r.body, []byte(leak)) {
						t.Errorf("client body leaks %q: %s", leak, r.body)
					}
				}
			}
			if tc.status == 200 && tc.headers["content-encoding"] == "" {
				// The model server receives the very body that was checked.
				if got, _ := r.upstream["body"].(string); got != string(tc.body) {
					t.Errorf("upstream body differs from the checked body")
				}
			}
		})
	}
}

func TestEnvoyBodyLimitsWithoutPartialMessages(t *testing.T) {
	e := newEnv(t, envOptions{strictSize: true})
	r := e.do("POST", "/v1/chat/completions", map[string]string{"x-api-key": e.keys["alice-key"]}, `{"model":"gpt-4o-mini","user":"`+strings.Repeat("u", 1<<20)+`"}`)
	if r.status != 413 || r.log.Metadata != nil {
		t.Fatalf("got %d (metadata %v): Envoy itself answers 413 without calling modelguard", r.status, r.log.Metadata)
	}
}

// Without with_request_body, model requests cannot be checked: denied.
func TestEnvoyWithoutRequestBody(t *testing.T) {
	e := newEnv(t, envOptions{noBody: true})
	r := e.do("POST", "/v1/chat/completions", map[string]string{"x-api-key": e.keys["alice-key"]}, chatBody("gpt-4o-mini"))
	if r.status != 503 || r.reason() != "body_not_forwarded" {
		t.Fatalf("got %d %q, want 503 body_not_forwarded", r.status, r.reason())
	}
	// Listing models needs no body.
	if r := e.do("GET", "/v1/models", map[string]string{"x-api-key": e.keys["reader-key"]}, ""); r.status != 200 {
		t.Fatalf("listing without bodies: %d %s", r.status, r.reason())
	}
}

func gzipped(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}
