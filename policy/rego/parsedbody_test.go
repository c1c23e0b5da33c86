package rego

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestParsedBodyDetection(t *testing.T) {
	tests := []struct {
		name, module string
		want         bool
	}{
		{"no body", `package modelguard.authz
allow if input.subject.id == "a"`, false},
		{"reads parsed_body", `package modelguard.authz
allow if input.parsed_body.temperature < 1`, true},
		{"reads all of input", `package modelguard.authz
allow if count(input) > 0`, true},
		{"computed key", `package modelguard.authz
allow if { some k; input[k] }`, true},
		{"body facts only", `package modelguard.authz
allow if input.body.max_tokens < 100`, false},
		{"object.get of another member", `package modelguard.authz
roles := object.get(input, ["subject", "roles"], [])
allow if "admin" in roles`, false},
		{"object.get of another member by key", `package modelguard.authz
allow if object.get(input, "subject", {}).id == "a"`, false},
		{"object.get of parsed_body", `package modelguard.authz
allow if object.get(input, ["parsed_body", "temperature"], 0) < 1`, true},
		{"object.get of parsed_body by key", `package modelguard.authz
allow if object.get(input, "parsed_body", {}).temperature < 1`, true},
		{"object.get of all of input", `package modelguard.authz
allow if count(object.get(input, [], {})) > 0`, true},
		{"object.get with a computed path", `package modelguard.authz
allow if { some k in ["a", "b"]; object.get(input, [k], 0) == 1 }`, true},
		{"object.get whose default reads the body", `package modelguard.authz
allow if object.get(input, ["subject", "id"], input.parsed_body.user) == "a"`, true},
		{"input passed to another function", `package modelguard.authz
allow if json.marshal(input) != ""`, true},
		{"example policy", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.module == "" { // the example policy
				if err := os.CopyFS(dir, os.DirFS("../../examples/policy")); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(tc.module), 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := Compile(context.Background(), dir, "")
			if err != nil {
				t.Fatal(err)
			}
			if p.ParsedBody() != tc.want {
				t.Fatalf("ParsedBody() = %v, want %v", p.ParsedBody(), tc.want)
			}
		})
	}
}

// modelguardInputs are the members of modelguard's input: all but
// opa-envoy-plugin's.
const modelguardInputs = AllInputs &^ (InputRawBody | InputModelguardFacts)

func TestInputsDetection(t *testing.T) {
	tests := []struct {
		name, module string
		want         Inputs
	}{
		{"none", `package modelguard.authz
allow if data.x`, 0},
		{"method", `package modelguard.authz
allow if input.request.method == "POST"`, InputMethod},
		{"query", `package modelguard.authz
allow if input.request.query.v[0] == "1"`, InputQuery},
		{"scheme and address", `package modelguard.authz
allow if { input.request.scheme == "https"; startswith(input.request.source_address, "10.") }`, InputScheme | InputSourceAddress},
		{"the whole request", `package modelguard.authz
allow if count(input.request) > 0`, InputRequest},
		{"computed member of request", `package modelguard.authz
allow if { some k; input.request[k] == "x" }`, InputRequest},
		{"all of input", `package modelguard.authz
allow if count(input) > 0`, modelguardInputs},
		{"object.get at a constant path", `package modelguard.authz
roles := object.get(input, ["subject", "roles"], [])
allow if { "admin" in roles; object.get(input.request, "scheme", "") == "https" }`, InputRoles | InputScheme},
		{"object.get at a computed path", `package modelguard.authz
allow if { some k in ["a"]; object.get(input, [k], "") == "x" }`, modelguardInputs},
		{"object.get with a default read from input", `package modelguard.authz
allow if object.get(input.subject, "id", input.request.query) == "x"`, InputSubjectID | InputQuery},
		{"an import of input.request", `package modelguard.authz
import input.request
allow if request.method == "GET"`, InputRequest},
		{"a member of request named by data", `package modelguard.authz
allow if input.request[data.member] == "x"`, InputRequest},
		{"object.get at a path named by data", `package modelguard.authz
allow if object.get(input.request, [data.member], "") == "x"`, InputRequest},
		{"other request members", `package modelguard.authz
allow if input.request.host == "h"`, InputHost},
		{"a header", `package modelguard.authz
allow if input.request.headers["x-a"] == "1"`, InputHeaders},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := compileModule(t, tc.module)
			if p.Inputs() != tc.want {
				t.Fatalf("Inputs() = %b, want %b", p.Inputs(), tc.want)
			}
		})
	}
}

// compileModule compiles a policy of one module.
func compileModule(t *testing.T, module string) *Policy {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(module), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Compile(context.Background(), dir, "")
	if err != nil {
		t.Fatal(err)
	}
	return p
}
