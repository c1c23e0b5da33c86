package rego

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/modelguard/modelguard/test/testkit"
)

// TestEvalOPAEnvoyResult: opa-envoy-plugin's result object, with its
// meaning, and the shapes it refuses.
func TestEvalOPAEnvoyResult(t *testing.T) {
	p, err := Compile(t.Context(), policyDir(t, map[string]string{"t.rego": "package t\n\nr := input.result\n"}), "data.t.r")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, input string
		want        Result
		wantErr     string
	}{
		{name: "allowed", input: `{"result": {"allowed": true}}`, want: Result{Allow: true}},
		{name: "denied, defaults", input: `{"result": {"allowed": false}}`, want: Result{}},
		{name: "allowed, every field", input: `{"result": {"allowed": true, "headers": {"X-User": "alice", "x-multi": ["a", "b"]},
			"response_headers_to_add": {"x-policy": "p"}, "request_headers_to_remove": ["X-Debug"],
			"http_status": 418, "body": "ignored", "dynamic_metadata": {"tenant": "acme", "n": 1}}}`,
			want: Result{Allow: true, Headers: map[string]string{"x-user": "alice", "x-multi": "a,b"},
				ResponseHeaders: map[string]string{"x-policy": "p"}, RemoveHeaders: []string{"x-debug"},
				DynamicMetadata: map[string]any{"tenant": "acme", "n": json.Number("1")}}},
		{name: "denied: headers go to the client", input: `{"result": {"allowed": false, "http_status": 401, "body": "no",
			"headers": [{"www-authenticate": "Bearer"}, {"x-a": "1"}], "response_headers_to_add": {"x-ignored": "1"},
			"request_headers_to_remove": ["x-ignored"]}}`,
			want: Result{Status: 401, Body: []byte("no"), ResponseHeaders: map[string]string{"www-authenticate": "Bearer", "x-a": "1"}}},
		{name: "redirect", input: `{"result": {"allowed": false, "http_status": 302, "headers": {"location": "/login"}}}`,
			want: Result{Status: 302, ResponseHeaders: map[string]string{"location": "/login"}}},
		{name: "empty body", input: `{"result": {"allowed": false, "body": ""}}`, want: Result{Body: []byte{}}},

		{name: "allowed a string", input: `{"result": {"allowed": "yes"}}`, wantErr: "allowed is string"},
		{name: "status 200", input: `{"result": {"allowed": false, "http_status": 200}}`, wantErr: "300..599"},
		{name: "status unknown", input: `{"result": {"allowed": false, "http_status": 499}}`, wantErr: "300..599"},
		{name: "status a string", input: `{"result": {"allowed": false, "http_status": "403"}}`, wantErr: "http_status is string"},
		{name: "body not a string", input: `{"result": {"allowed": false, "body": {"a": 1}}}`, wantErr: "body is object"},
		{name: "header value with CRLF", input: `{"result": {"allowed": true, "headers": {"x-a": "1\r\nx-admin: 1"}}}`, wantErr: "not a valid header value"},
		{name: "header value in array with CRLF", input: `{"result": {"allowed": true, "headers": {"x-a": ["1", "2\n"]}}}`, wantErr: "not a valid header value"},
		{name: "header name invalid", input: `{"result": {"allowed": true, "headers": {":path": "/admin"}}}`, wantErr: "invalid header name"},
		{name: "headers a string", input: `{"result": {"allowed": true, "headers": "x-a: 1"}}`, wantErr: "headers is string"},
		{name: "headers array of strings", input: `{"result": {"allowed": true, "headers": ["x-a"]}}`, wantErr: "want an object"},
		{name: "remove not names", input: `{"result": {"allowed": true, "request_headers_to_remove": ["x a"]}}`, wantErr: "not a header name"},
		{name: "remove an object", input: `{"result": {"allowed": true, "request_headers_to_remove": {"x-a": true}}}`, wantErr: "want an array"},
		{name: "metadata not an object", input: `{"result": {"allowed": true, "dynamic_metadata": [1]}}`, wantErr: "dynamic_metadata is array"},
		{name: "query parameters unsupported", input: `{"result": {"allowed": true, "query_parameters_to_remove": ["a"]}}`, wantErr: "unknown key"},
		{name: "modelguard key mixed in", input: `{"result": {"allowed": true, "reason": "x"}}`, wantErr: "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.Eval(t.Context(), value(t, tt.input))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %v, want one containing %q", err, tt.wantErr)
				}
				if got.Allow {
					t.Error("allowed alongside an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.want.Revision = p.Revision()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestOPAEnvoyInputsRead: with input opa-envoy, the optional members are
// found at opa-envoy-plugin's paths and under input.modelguard.
func TestOPAEnvoyInputsRead(t *testing.T) {
	tests := []struct {
		name, module string
		want         Inputs
	}{
		{"headers only", `allow if input.attributes.request.http.headers["x-a"] == "1"`, 0},
		{"method and parsed_path", `allow if { input.attributes.request.http.method == "GET"; input.parsed_path[0] == "v1" }`, 0},
		{"path carries the query", `allow if input.attributes.request.http.path == "/"`, InputQuery},
		{"parsed_query", `allow if input.parsed_query.a == ["1"]`, InputQuery},
		{"scheme", `allow if input.attributes.request.http.scheme == "https"`, InputScheme},
		{"source address", `allow if input.attributes.source.address.socketAddress.address == "10.0.0.1"`, InputSourceAddress},
		{"source principal (Kong reads it on demand)", `allow if input.attributes.source.principal == "spiffe://a"`, InputTLSPrincipal},
		{"parsed_body", `allow if input.parsed_body.model == "m"`, InputParsedBody},
		{"truncated_body", `allow if not input.truncated_body`, InputParsedBody},
		{"rawBody", `allow if input.attributes.request.http.rawBody != ""`, InputRawBody},
		{"the whole http request", `allow if count(input.attributes.request.http) > 0`, InputQuery | InputScheme | InputRawBody},
		{"modelguard facts", `allow if input.modelguard.subject.id == "a"`, InputModelguardFacts | InputSubjectID},
		{"modelguard query", `allow if input.modelguard.request.query.a == ["1"]`, InputModelguardFacts | InputQuery},
		{"modelguard's path is not opa-envoy's", `allow if input.request.query.a == ["1"]`, 0},
		{"all of input", `allow if count(input) > 0`, AllInputs},
		{"example policy", "", InputParsedBody | InputModelguardFacts | InputBody},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := exampleOPAEnvoy
			if tc.module != "" {
				dir = policyDir(t, map[string]string{"p.rego": "package envoy.authz\n\n" + tc.module + "\n"})
			}
			p, err := CompileFor(t.Context(), dir, "", ShapeOPAEnvoy)
			if err != nil {
				t.Fatal(err)
			}
			if p.Inputs() != tc.want {
				t.Errorf("Inputs() = %b, want %b", p.Inputs(), tc.want)
			}
		})
	}
}

// TestOPAEnvoyDefaultQuery: with input opa-envoy and no query, the engine
// evaluates data.envoy.authz.allow.
func TestOPAEnvoyDefaultQuery(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": "package envoy.authz\n\nallow if input.attributes.request.http.method == \"GET\"\n"})
	e, err := Open(t.Context(), Settings{PolicyDir: dir, Input: ShapeOPAEnvoy}, "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Input() != ShapeOPAEnvoy {
		t.Errorf("Input() = %q", e.Input())
	}
	res, err := e.Eval(t.Context(), value(t, `{"attributes": {"request": {"http": {"method": "GET"}}}}`))
	if err != nil || !res.Allow {
		t.Errorf("got %+v, %v; want an allow", res, err)
	}
	if _, err := Open(t.Context(), Settings{PolicyDir: dir, Input: "opa"}, "", Options{}); err == nil || !strings.Contains(err.Error(), "input") {
		t.Errorf("input opa: error %v, want one about input", err)
	}
}

// TestPrintGoesToTheLog: print() output reaches the operator log with the
// decision id and the print call's location.
func TestPrintGoesToTheLog(t *testing.T) {
	var logs testkit.SyncBuffer
	dir := policyDir(t, map[string]string{"p.rego": "package modelguard.authz\n\nallow if {\n\tprint(\"roles are\", input.roles)\n\t\"admin\" in input.roles\n}\n"})
	e, err := Open(t.Context(), Settings{PolicyDir: dir}, "", Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Eval(WithDecisionID(t.Context(), "d-123"), value(t, `{"roles": ["admin"]}`))
	if err != nil || !res.Allow {
		t.Fatalf("got %+v, %v; want an allow", res, err)
	}
	out := logs.String()
	for _, want := range []string{`"msg":"rego print"`, `"decision_id":"d-123"`, `"message":"roles are [\"admin\"]"`, `p.rego:4`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

// TestTracer: an evaluation under WithTracer records OPA's trace, notes
// from trace() included.
func TestTracer(t *testing.T) {
	p, err := Compile(t.Context(), policyDir(t, map[string]string{"p.rego": "package modelguard.authz\n\nallow if {\n\ttrace(\"checking roles\")\n\tcount(input.roles) > 5\n}\n"}), "")
	if err != nil {
		t.Fatal(err)
	}
	tracer := topdown.NewBufferTracer()
	if _, err := p.Eval(WithTracer(t.Context(), tracer), value(t, `{"roles": ["reader"]}`)); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	topdown.PrettyTrace(&buf, *tracer)
	if !strings.Contains(buf.String(), "checking roles") || !strings.Contains(buf.String(), "Fail") {
		t.Errorf("trace:\n%s", buf.String())
	}
	// Without a tracer, nothing is recorded (and the prepared query is shared).
	n := len(*tracer)
	if _, err := p.Eval(t.Context(), value(t, `{"roles": ["reader"]}`)); err != nil || len(*tracer) != n {
		t.Errorf("untraced evaluation recorded events: %d -> %d (%v)", n, len(*tracer), err)
	}
}
