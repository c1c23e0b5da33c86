package test

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/modelguard/modelguard/test/testkit"
)

// checkPolicy prints, traces, and fails on a bad regular expression.
const checkPolicy = `package envoy.authz

allow := {"allowed": false, "http_status": 401, "headers": {"www-authenticate": "Bearer"}, "body": "nope"} if {
	print("method is", input.attributes.request.http.method)
	trace("checking the method")
	input.attributes.request.http.method == "GET"
}

allow := {"allowed": true, "response_headers_to_add": {"x-policy": "p1"}} if {
	input.attributes.request.http.method == "POST"
	regex.match(input.attributes.request.http.headers["x-pattern"], "x")
}
`

// TestCheckForPolicyAuthors: check shows what a policy author needs to
// see why a policy decided as it did: print() output, the response
// headers, the error behind a policy_error, and OPA's trace.
func TestCheckForPolicyAuthors(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	testkit.ReplaceFile(t, dir, "p/p.rego", checkPolicy)
	cfg := testkit.WriteFile(t, dir, "config.yaml", "authentication: {allow_anonymous: true}\nauthorization: {policy_dir: p, input: opa-envoy}\naudit: {output: \"off\"}\n")
	tests := []struct {
		name   string
		args   []string
		code   int
		want   []string
		absent []string
	}{
		{"print and response headers on a denial", []string{"GET", "/v1/models"}, 1,
			[]string{"DENY 401  reason=policy_denied", "response header  www-authenticate: Bearer", "client body      nope", "print            p.rego:4: method is GET"},
			[]string{"Enter data.envoy.authz.allow"}},
		{"response headers on an allow", []string{"-H", "x-pattern: x", "POST", "/v1/models"}, 0,
			[]string{"ALLOW 200  reason=allowed", "response header  x-policy: p1", "print            p.rego:4: method is POST"}, nil},
		{"the error behind a policy_error", []string{"-H", "x-pattern: [", "POST", "/v1/models"}, 1,
			[]string{"DENY 503  reason=policy_error", "error            policy evaluation failed", "p.rego:11: eval_builtin_error: regex.match: error parsing regexp"}, nil},
		{"explain notes", []string{"-explain", "notes", "GET", "/v1/models"}, 1,
			[]string{`p.rego:5     | | Note "checking the method"`}, []string{"| Eval"}},
		{"explain full", []string{"-explain", "full", "GET", "/v1/models"}, 1,
			[]string{"Enter data.envoy.authz.allow", "| Eval", `Note "checking the method"`}, nil},
		{"explain mode unknown", []string{"-explain", "all", "GET", "/v1/models"}, 2, []string{"usage:"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(bin, append([]string{"check", "-config", cfg}, tc.args...)...).CombinedOutput()
			code := 0
			if ee, ok := errors.AsType[*exec.ExitError](err); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Errorf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(string(out), a) {
					t.Errorf("output has %q:\n%s", a, out)
				}
			}
		})
	}
	t.Run("explain needs a local decision", func(t *testing.T) {
		out, err := exec.Command(bin, "check", "-server", "127.0.0.1:1", "-explain", "notes", "GET", "/").CombinedOutput()
		if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 2 {
			t.Errorf("%v:\n%s", err, out)
		}
	})
}
