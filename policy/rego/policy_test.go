package rego

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestExamplePolicyCompiles(t *testing.T) {
	for _, tc := range []struct{ dir, input, query string }{
		{examplePolicy, ShapeModelguard, ""},
		{examplePolicy, ShapeModelguard, DefaultQuery},
		{examplePolicy, ShapeModelguard, "data.modelguard.authz.decision"},
		{exampleOPAEnvoy, ShapeOPAEnvoy, ""},
	} {
		p, err := CompileFor(t.Context(), tc.dir, tc.query, tc.input)
		if err != nil {
			t.Fatalf("%s, query %q: %v", tc.dir, tc.query, err)
		}
		if len(p.Revision()) != 12 {
			t.Errorf("revision %q, want 12 hex digits", p.Revision())
		}
	}
}

func TestExampleRegoTests(t *testing.T) {
	for _, dir := range []string{examplePolicy, exampleOPAEnvoy} {
		results, err := RunTests(t.Context(), dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(results) == 0 {
			t.Fatalf("%s: no Rego tests ran", dir)
		}
		for _, r := range results {
			if r.Fail || r.Error != nil {
				t.Errorf("%s:%d: %s (error: %v)", r.Location.File, r.Location.Row, r, r.Error)
			}
			if r.Skip {
				t.Errorf("%s skipped", r.Name)
			}
		}
		t.Logf("%s: %d Rego tests passed", dir, len(results))
	}
}

func TestRunTestsReportsFailures(t *testing.T) {
	dir := policyDir(t, map[string]string{
		"authz.rego": "package modelguard.authz\n\nallow := false\n",
		"authz_test.rego": `package modelguard.authz_test

import data.modelguard.authz

test_passes if not authz.allow

test_fails if authz.allow

test_errors if regex.match("[", "x")
`,
	})
	results, err := RunTests(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range results {
		switch {
		case r.Error != nil:
			got[r.Name] = "error"
		case r.Fail:
			got[r.Name] = "fail"
		default:
			got[r.Name] = "pass"
		}
	}
	want := map[string]string{"test_passes": "pass", "test_fails": "fail", "test_errors": "error"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("results %v, want %v", got, want)
	}
}

func TestRunTestsErrors(t *testing.T) {
	for name, files := range map[string]map[string]string{
		"syntax error in a test": {
			"authz.rego":      "package modelguard.authz\n\nallow := false\n",
			"authz_test.rego": "package modelguard.authz_test\n\ntest_x if {\n",
		},
		"bad data": {
			"authz.rego": "package modelguard.authz\n\nallow := false\n",
			"data.json":  "{",
		},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := RunTests(t.Context(), policyDir(t, files)); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestExampleDecisions(t *testing.T) {
	p, err := Compile(t.Context(), examplePolicy, "data.modelguard.authz.decision")
	if err != nil {
		t.Fatal(err)
	}
	chat := map[string]any{"name": "gpt-4o-mini", "operation": "chat"}
	tests := []struct {
		name   string
		roles  []string
		method string
		model  map[string]any
		want   Result
	}{
		{"chat user", []string{"chat-user"}, "POST", chat, Result{Allow: true, Reason: "allowed", RateLimitClass: "standard"}},
		{"admin, model unknown", []string{"admin"}, "POST", nil, Result{Allow: true, Reason: "allowed", RateLimitClass: "internal"}},
		{"reader listing", []string{"reader"}, "GET", map[string]any{"name": "", "operation": "list"}, Result{Allow: true, Reason: "allowed", RateLimitClass: "default"}},
		{"reader chat", []string{"reader"}, "POST", chat, Result{Status: 403, Reason: "read_only",
			Message: "access denied: the caller has read-only access"}},
		{"other model", []string{"chat-user"}, "POST", map[string]any{"name": "gpt-4o", "operation": "chat"}, Result{Status: 403,
			Reason: "model_not_permitted", Message: "access denied: the caller's roles do not permit this model"}},
		{"no roles", []string{}, "POST", chat, Result{Status: 403, Reason: "no_roles",
			Message: "access denied: no roles are assigned to this caller"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.Eval(t.Context(), requestInput(t, tt.roles, tt.method, "/v1/chat/completions", tt.model))
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

func TestEval(t *testing.T) {
	const passThrough = "package t\n\nr := input.result\n"
	tests := []struct {
		name    string
		module  string // default passThrough: the result is input.result
		input   string
		want    Result
		wantErr string
	}{
		{name: "true", input: `{"result": true}`, want: Result{Allow: true}},
		{name: "false", input: `{"result": false}`, want: Result{}},
		{name: "object allow", input: `{"result": {"allow": true}}`, want: Result{Allow: true}},
		{name: "object deny, all fields", input: `{"result": {"allow": false, "status": 429, "reason": "quota",
			"message": "slow down", "headers": {"X-Up": "1"}, "response_headers": {"Retry-After": "30"}}}`,
			want: Result{Status: 429, Reason: "quota", Message: "slow down",
				Headers: map[string]string{"x-up": "1"}, ResponseHeaders: map[string]string{"retry-after": "30"}}},
		{name: "object allow with headers", input: `{"result": {"allow": true, "reason": "ok",
			"headers": {"x-tenant": "acme", "x-empty": ""}, "response_headers": {}}}`,
			want: Result{Allow: true, Reason: "ok", Headers: map[string]string{"x-tenant": "acme", "x-empty": ""}}},
		{name: "rate limit class", input: `{"result": {"allow": true, "rate_limit_class": "gold"}}`, want: Result{Allow: true, RateLimitClass: "gold"}},
		{name: "rate limit class not a string", input: `{"result": {"allow": true, "rate_limit_class": 1}}`, wantErr: "rate_limit_class"},
		{name: "status ignored when allowed", input: `{"result": {"allow": true, "status": 403}}`, want: Result{Allow: true}},
		{name: "status bounds", input: `{"result": {"allow": false, "status": 599}}`, want: Result{Status: 599}},
		{name: "undefined", input: `{}`, want: Result{Reason: ReasonUndefined}},
		{name: "undefined rule body", module: "package t\n\nr if input.never\n", input: `{}`, want: Result{Reason: ReasonUndefined}},
		{name: "default rule", module: "package t\n\ndefault r := false\n\nr if input.yes\n", input: `{}`, want: Result{}},

		{name: "allow missing", input: `{"result": {"status": 403}}`, wantErr: "no allow"},
		{name: "empty object", input: `{"result": {}}`, wantErr: "no allow"},
		{name: "allow a string", input: `{"result": {"allow": "true"}}`, wantErr: "allow is string"},
		{name: "allow null", input: `{"result": {"allow": null}}`, wantErr: "allow is null"},
		{name: "allow a number", input: `{"result": {"allow": 1}}`, wantErr: "allow is number"},
		{name: "status too low", input: `{"result": {"allow": false, "status": 399}}`, wantErr: "400..599"},
		{name: "status too high", input: `{"result": {"allow": false, "status": 600}}`, wantErr: "400..599"},
		{name: "status 200", input: `{"result": {"allow": false, "status": 200}}`, wantErr: "400..599"},
		{name: "status fractional", input: `{"result": {"allow": false, "status": 403.5}}`, wantErr: "400..599"},
		{name: "status exponent", input: `{"result": {"allow": false, "status": 4.03e2}}`, wantErr: "400..599"},
		{name: "status huge", input: `{"result": {"allow": false, "status": 1e400}}`, wantErr: "400..599"},
		{name: "status a string", input: `{"result": {"allow": false, "status": "403"}}`, wantErr: "status is string"},
		{name: "reason not a string", input: `{"result": {"allow": false, "reason": 7}}`, wantErr: "reason is number"},
		{name: "message not a string", input: `{"result": {"allow": false, "message": ["x"]}}`, wantErr: "message is array"},
		{name: "headers not an object", input: `{"result": {"allow": true, "headers": ["x-a", "1"]}}`, wantErr: "headers is array"},
		{name: "header value a number", input: `{"result": {"allow": true, "headers": {"x-a": 1}}}`, wantErr: "not a valid header value"},
		{name: "header value null", input: `{"result": {"allow": true, "headers": {"x-a": null}}}`, wantErr: "not a valid header value"},
		{name: "header value with CRLF", input: `{"result": {"allow": true, "headers": {"x-a": "1\r\nx-admin: 1"}}}`, wantErr: "not a valid header value"},
		{name: "header name with space", input: `{"result": {"allow": true, "headers": {"x a": "1"}}}`, wantErr: "invalid header name"},
		{name: "header name empty", input: `{"result": {"allow": true, "headers": {"": "1"}}}`, wantErr: "invalid header name"},
		{name: "pseudo header", input: `{"result": {"allow": true, "headers": {":path": "/admin"}}}`, wantErr: "invalid header name"},
		{name: "header twice", input: `{"result": {"allow": true, "headers": {"X-A": "1", "x-a": "2"}}}`, wantErr: "twice"},
		{name: "response header value not a string", input: `{"result": {"allow": false, "response_headers": {"retry-after": 30}}}`, wantErr: "not a valid header value"},
		{name: "unknown key", input: `{"result": {"allow": true, "allowed": true}}`, wantErr: "unknown key"},
		{name: "non-string key", module: "package t\n\nr := {\"allow\": true, 1: 2}\n", input: `{}`, wantErr: "number key"},
		{name: "string result", input: `{"result": "allow"}`, wantErr: "result is string"},
		{name: "number result", input: `{"result": 1}`, wantErr: "result is number"},
		{name: "null result", input: `{"result": null}`, wantErr: "result is null"},
		{name: "array result", input: `{"result": [true]}`, wantErr: "result is array"},
		{name: "set result", module: "package t\n\nr contains true\n", input: `{}`, wantErr: "result is set"},
		{name: "conflicting values", module: "package t\n\nr := x if some x in input.xs\n", input: `{"xs": [true, false]}`, wantErr: "conflict"},
		// Strict builtin errors: a failing helper must not become undefined
		// and flip a "not deny" into an allow.
		{name: "builtin error", module: "package t\n\ndeny if regex.match(input.pattern, \"x\")\n\nr if not deny\n",
			input: `{"pattern": "["}`, wantErr: "regex.match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			module := tt.module
			if module == "" {
				module = passThrough
			}
			p, err := Compile(t.Context(), policyDir(t, map[string]string{"t.rego": module}), "data.t.r")
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Eval(t.Context(), value(t, tt.input))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %v, want one containing %q", err, tt.wantErr)
				}
				if got.Allow {
					t.Error("allowed alongside an error")
				}
				if got.Revision != p.Revision() {
					t.Errorf("revision %q, want %q", got.Revision, p.Revision())
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

// slowPolicy takes seconds to decide: 25 million iterations.
const slowPolicy = `package modelguard.authz

allow if count([1 | some i in numbers.range(1, 5000); some j in numbers.range(1, 5000)]) > 0
`

func TestEvalCancelled(t *testing.T) {
	dir := policyDir(t, map[string]string{"authz.rego": slowPolicy})
	p, err := Compile(t.Context(), dir, "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ctx  func(context.Context) (context.Context, context.CancelFunc)
	}{
		{"deadline during evaluation", func(ctx context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, time.Millisecond)
		}},
		{"cancelled before", func(ctx context.Context) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			return ctx, cancel
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx(t.Context())
			defer cancel()
			got, err := p.Eval(ctx, value(t, `{}`))
			if err == nil || got.Allow {
				t.Errorf("got %+v, %v; want an error and no allow", got, err)
			}
		})
	}
}

func TestEngineTimeout(t *testing.T) {
	dir := policyDir(t, map[string]string{"authz.rego": slowPolicy})
	e, err := Open(t.Context(), Settings{PolicyDir: dir, Timeout: time.Millisecond}, "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.Eval(t.Context(), value(t, `{}`))
	if err == nil || got.Allow {
		t.Errorf("got %+v, %v; want a timeout error and no allow", got, err)
	}
}

func TestCompileErrors(t *testing.T) {
	const good = "package modelguard.authz\n\nallow := true\n"
	tests := []struct {
		name    string
		files   map[string]string
		query   string
		wantErr []string
	}{
		{"syntax error", map[string]string{"authz.rego": "package modelguard.authz\n\nallow if {\n"},
			"", []string{"authz.rego:4", "rego_parse_error"}},
		{"Rego v0 syntax", map[string]string{"authz.rego": "package modelguard.authz\n\nallow { true }\n"},
			"", []string{"authz.rego:3", "rego_parse_error"}},
		{"type error", map[string]string{"authz.rego": "package modelguard.authz\n\nallow if count(1) > 0\n"},
			"", []string{"authz.rego:3", "rego_type_error"}},
		{"unsafe variable", map[string]string{"authz.rego": "package modelguard.authz\n\nallow if x > 1\n"},
			"", []string{"authz.rego:3", "rego_unsafe_var_error"}},
		{"error in a second module", map[string]string{"authz.rego": good, "lib/helpers.rego": "package lib\n\nf(x) := y\n"},
			"", []string{"lib/helpers.rego:3"}},
		{"package missing", map[string]string{"authz.rego": "package other\n\nallow := true\n"},
			"", []string{"data.modelguard.authz.allow names no rule"}},
		{"rule missing", map[string]string{"authz.rego": good}, "data.modelguard.authz.decision",
			[]string{"data.modelguard.authz.decision names no rule"}},
		{"bad JSON data", map[string]string{"authz.rego": good, "data.json": `{"roles": `},
			"", []string{"data.json"}},
		{"bad YAML data", map[string]string{"authz.rego": good, "data.yaml": "roles: [a, b\n"},
			"", []string{"data.yaml"}},
		{"conflicting data", map[string]string{"authz.rego": good, "a.json": `{"x": 1}`, "b.yml": "x: 2\n"},
			"", []string{"merge error"}},
		{"no modules", map[string]string{"data.json": `{}`},
			"", []string{"no .rego files"}},
		{"only tests", map[string]string{"authz_test.rego": good},
			"", []string{"no .rego files"}},
		{"query not under data", map[string]string{"authz.rego": good}, "input.allow",
			[]string{"is not a Rego reference"}},
		{"query with a variable", map[string]string{"authz.rego": good}, "data.modelguard.authz[x]",
			[]string{"is not a Rego reference"}},
		{"query all of data", map[string]string{"authz.rego": good}, "data",
			[]string{"is not a Rego reference"}},
		{"query not a reference", map[string]string{"authz.rego": good}, "allow if true",
			[]string{"query"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(t.Context(), policyDir(t, tt.files), tt.query)
			if err == nil {
				t.Fatal("compiled")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestCompileDirErrors(t *testing.T) {
	t.Run("missing", func(t *testing.T) {
		if _, err := Compile(t.Context(), filepath.Join(t.TempDir(), "nope"), ""); err == nil {
			t.Error("compiled")
		}
	})
	t.Run("dangling symlink", func(t *testing.T) {
		dir := policyDir(t, map[string]string{"authz.rego": "package modelguard.authz\n\nallow := true\n"})
		if err := os.Symlink("gone.json", filepath.Join(dir, "data.json")); err != nil {
			t.Fatal(err)
		}
		if _, err := Compile(t.Context(), dir, ""); err == nil {
			t.Error("compiled")
		}
	})
	t.Run("symlink loop", func(t *testing.T) {
		dir := policyDir(t, map[string]string{"authz.rego": "package modelguard.authz\n\nallow := true\n"})
		if err := os.Symlink(".", filepath.Join(dir, "loop")); err != nil {
			t.Fatal(err)
		}
		if _, err := Compile(t.Context(), dir, ""); err == nil || !strings.Contains(err.Error(), "nested") {
			t.Errorf("error %v, want one about nesting", err)
		}
	})
}

func TestCompileSelectsFiles(t *testing.T) {
	dir := policyDir(t, map[string]string{
		"authz.rego": "package modelguard.authz\n\nallow if data.lib.open\n\nallow if data.extra\n",
		// Data in a subdirectory lands under the directory's name.
		"lib/settings.yaml": "open: true\n",
		// Not part of the running policy: tests, hidden files, other files.
		"authz_test.rego":  "package broken\n\ntest_x if {\n",
		".#authz.rego":     "not rego",
		".hidden/x.rego":   "not rego",
		".extra.json":      `{"extra": true}`,
		"README.md":        "# policy\n",
		"notes.txt":        "{",
		"..data/evil.rego": "package modelguard.authz\n\nallow := true\n",
	})
	p, err := Compile(t.Context(), dir, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Eval(t.Context(), value(t, `{}`))
	if err != nil || !got.Allow {
		t.Errorf("got %+v, %v; want allowed through data.lib.open", got, err)
	}
}

func TestRevision(t *testing.T) {
	base := map[string]string{
		"authz.rego":      "package modelguard.authz\n\nallow := true\n",
		"data.json":       `{"a": 1}`,
		"authz_test.rego": "package modelguard.authz_test\n\ntest_a if true\n",
	}
	with := func(name, content string) map[string]string {
		files := map[string]string{}
		for k, v := range base {
			files[k] = v
		}
		files[name] = content
		return files
	}
	rev := revisionOf(t, base)
	if again := revisionOf(t, base); again != rev {
		t.Errorf("same content in another directory: revision %s, want %s", again, rev)
	}
	if r := revisionOf(t, with("authz_test.rego", "package modelguard.authz_test\n\ntest_b if true\n")); r != rev {
		t.Errorf("a test edit changed the revision: %s, want %s", r, rev)
	}
	for name, files := range map[string]map[string]string{
		"module edit":     with("authz.rego", "package modelguard.authz\n\nallow := false\n"),
		"data edit":       with("data.json", `{"a": 2}`),
		"file added":      with("more.json", `{"b": 1}`),
		"content moved":   {"authz.rego": base["authz.rego"], "a.json": `{"a": 1}`},
		"whitespace edit": with("authz.rego", base["authz.rego"]+"\n"),
	} {
		if r := revisionOf(t, files); r == rev {
			t.Errorf("%s kept revision %s", name, rev)
		}
	}
}
