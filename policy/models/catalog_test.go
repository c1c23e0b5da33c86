package models

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/modelguard/modelguard/test/testkit"
	"go.yaml.in/yaml/v3"
)

func openCatalog(t *testing.T, extra string) (*Catalog, string) {
	t.Helper()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "policies"), 0o755)
	os.Mkdir(filepath.Join(dir, "schemas"), 0o755)
	testkit.WriteFile(t, filepath.Join(dir, "schemas"), "score.json", `{"type":"object","required":["features"],"properties":{"features":{"type":"array","items":{"type":"number"}}}}`)
	doc := `authentication: {allow_anonymous: true}
authorization: {policy_dir: policies}
models:
  - name: gpt-4o-mini
    operation: chat
    limits: {max_tokens: 1000, max_messages: 3, max_prompt_chars: 20, max_body_bytes: 2048}
  - name: text-embedding-3-small
    operation: embeddings
  - name: resnet
    operation: infer
  - name: half_plus_two
    operation: predict
  - name: scorer
    operation: custom
    paths: ["/score/{model}"]
    schema: schemas/score.json
` + extra
	s := settingsOf(t, doc)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := Open(ctx, s, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c, dir
}

// settingsOf reads the catalog's three keys from a configuration document
// over their defaults, and validates them.
func settingsOf(t testing.TB, doc string) Settings {
	t.Helper()
	s := DefaultSettings()
	keys := struct {
		Models             *[]ModelSettings `yaml:"models"`
		RequestBody        *BodySettings    `yaml:"request_body"`
		UnknownModelStatus *int             `yaml:"unknown_model_status"`
	}{&s.Models, &s.Body, &s.UnknownModelStatus}
	if err := yaml.Unmarshal([]byte(doc), &keys); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(s.Validate()...); err != nil {
		t.Fatal(err)
	}
	return s
}

func gz(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}

func post(path, body string) Request {
	return Request{Method: "POST", Path: path, ContentType: "application/json", Body: []byte(body)}
}

func TestInspect(t *testing.T) {
	c, _ := openCatalog(t, "")
	chat := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}`
	infer := `{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1.0,2.0]}]}`
	tests := []struct {
		name    string
		req     Request
		model   string
		status  int
		reason  string
		message string // part of the client message
	}{
		{"chat", post("/v1/chat/completions", chat), "gpt-4o-mini", 0, "", ""},
		{"embeddings", post("/v1/embeddings", `{"model":"text-embedding-3-small","input":"hi"}`), "text-embedding-3-small", 0, "", ""},
		{"infer by path", post("/v2/models/resnet/infer", infer), "resnet", 0, "", ""},
		{"infer with a version", post("/v2/models/resnet/versions/3/infer", infer), "resnet", 0, "", ""},
		{"predict", post("/v1/models/half_plus_two:predict", `{"instances":[1.0,2.0]}`), "half_plus_two", 0, "", ""},
		{"custom with a user schema", post("/score/scorer", `{"features":[0.1]}`), "scorer", 0, "", ""},
		{"max_tokens 1e3 and 2.0 are whole numbers", post("/v1/chat/completions", `{"model":"gpt-4o-mini","max_tokens":1e3,"max_completion_tokens":2.0,"messages":[{"role":"user","content":"x"}]}`), "gpt-4o-mini", 0, "", ""},
		{"gzip body", Request{Method: "POST", Path: "/v1/chat/completions", ContentType: "application/json; charset=utf-8", Encoding: "gzip", Body: gz(chat)}, "gpt-4o-mini", 0, "", ""},
		{"unlisted model in the body", post("/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}`), "", 403, "model_not_configured", ""},
		{"unlisted model in the path", post("/v2/models/bert/infer", infer), "", 403, "model_not_configured", ""},
		{"unlisted model on a built-in API nobody uses", post("/v1/completions", `{"model":"x","prompt":"y"}`), "", 403, "model_not_configured", ""},
		{"model name differs in case", post("/v1/chat/completions", `{"model":"GPT-4o-mini","messages":[{"role":"user","content":"x"}]}`), "", 403, "model_not_configured", ""},
		{"no body", post("/v1/chat/completions", ""), "", 400, "body_missing", ""},
		{"body not forwarded by the gateway", Request{Method: "POST", Path: "/v1/chat/completions", BodyOmitted: true}, "", 503, "body_not_forwarded", ""},
		{"form content type", Request{Method: "POST", Path: "/v1/chat/completions", ContentType: "application/x-www-form-urlencoded", Body: []byte(chat)}, "", 415, "body_content_type_unsupported", ""},
		{"truncated", Request{Method: "POST", Path: "/v1/chat/completions", ContentType: "application/json", Body: []byte(chat[:20]), BodyTruncated: true}, "", 413, "body_truncated", ""},
		{"duplicate model key", post("/v1/chat/completions", `{"model":"gpt-4o-mini","model":"gpt-4o","messages":[]}`), "", 400, "body_duplicate_key", "/model"},
		{"ambiguous keys: the caller's name is hidden", post("/v1/chat/completions", `{"model":"gpt-4o-mini","Model":"gpt-4o","messages":[]}`), "", 400, "body_ambiguous_key", `"/*"`},
		{"duplicate metadata key: hidden", post("/v1/chat/completions", `{"model":"gpt-4o-mini","metadata":{"Hello":"a","Hello":"b"},"messages":[]}`), "", 400, "body_duplicate_key", `"/metadata/*"`},
		{"metadata violation: key hidden", post("/v1/chat/completions", `{"model":"gpt-4o-mini","metadata":{"Hello":1},"messages":[{"role":"user","content":"x"}]}`), "", 400, "body_schema_violation", "/metadata/*: type"},
		{"schema violation names the pointer", post("/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"wizard","content":"x"}]}`), "", 400, "body_schema_violation", "/messages/0/role"},
		{"tensor shape mismatch", post("/v2/models/resnet/infer", `{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1.0,2.0]}]}`), "", 400, "body_schema_violation", "/inputs/0"},
		{"max_tokens over the cap", post("/v1/chat/completions", `{"model":"gpt-4o-mini","max_tokens":1001,"messages":[{"role":"user","content":"x"}]}`), "", 400, "max_tokens_limit_exceeded", ""},
		{"max_tokens spelled as 1e4", post("/v1/chat/completions", `{"model":"gpt-4o-mini","max_tokens":1e4,"messages":[{"role":"user","content":"x"}]}`), "", 400, "", ""},
		{"max_completion_tokens over the cap", post("/v1/chat/completions", `{"model":"gpt-4o-mini","max_completion_tokens":5000,"messages":[{"role":"user","content":"x"}]}`), "", 400, "max_tokens_limit_exceeded", ""},
		{"max_tokens hidden behind max_completion_tokens", post("/v1/chat/completions", `{"model":"gpt-4o-mini","max_completion_tokens":10,"max_tokens":1000000,"messages":[{"role":"user","content":"x"}]}`), "", 400, "max_tokens_limit_exceeded", ""},
		{"max_tokens -1 behind max_completion_tokens", post("/v1/chat/completions", `{"model":"gpt-4o-mini","max_completion_tokens":10,"max_tokens":-1,"messages":[{"role":"user","content":"x"}]}`), "", 400, "max_tokens_invalid", "/max_tokens"},
		{"negative max_completion_tokens", post("/v1/chat/completions", `{"model":"gpt-4o-mini","max_completion_tokens":-5,"messages":[{"role":"user","content":"x"}]}`), "", 400, "max_tokens_invalid", "/max_completion_tokens"},
		{"max_output_tokens over the cap", post("/v1/chat/completions", `{"model":"gpt-4o-mini","max_tokens":10,"max_output_tokens":4096,"messages":[{"role":"user","content":"x"}]}`), "", 400, "max_tokens_limit_exceeded", ""},
		{"null max_tokens does not hide the other", post("/v1/chat/completions", `{"model":"gpt-4o-mini","max_tokens":null,"max_completion_tokens":1001,"messages":[{"role":"user","content":"x"}]}`), "", 400, "max_tokens_limit_exceeded", ""},
		{"max_tokens as a string, schema silent", post("/score/scorer", `{"features":[0.1],"max_tokens":"100000"}`), "", 400, "max_tokens_invalid", ""},
		{"max_tokens as a fraction, schema silent", post("/score/scorer", `{"features":[0.1],"max_tokens":10.5}`), "", 400, "max_tokens_invalid", ""},
		{"max_tokens as a boolean, schema silent", post("/score/scorer", `{"features":[0.1],"max_output_tokens":true}`), "", 400, "max_tokens_invalid", ""},
		{"two invalid length fields: the first of max_tokens, max_completion_tokens, max_output_tokens is named", post("/score/scorer", `{"features":[0.1],"max_output_tokens":true,"max_completion_tokens":-1,"max_tokens":"x"}`), "", 400, "max_tokens_invalid", "/max_tokens"},
		{"two invalid length fields, max_tokens absent", post("/score/scorer", `{"features":[0.1],"max_output_tokens":true,"max_completion_tokens":-1}`), "", 400, "max_tokens_invalid", "/max_completion_tokens"},
		{"too many messages", post("/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"user","content":"c"},{"role":"user","content":"d"}]}`), "", 400, "messages_limit_exceeded", ""},
		{"prompt too long (text parts count)", post("/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":[{"type":"text","text":"0123456789"},{"type":"text","text":"0123456789!"}]}]}`), "", 400, "prompt_limit_exceeded", ""},
		{"over the model's body cap", post("/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"user":"`+strings.Repeat("u", 3000)+`"}`), "", 413, "body_too_large", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, d, ok := c.Inspect(tc.req)
			if !ok {
				t.Fatal("not recognised as a model request")
			}
			if tc.status == 0 {
				if d != nil || m == nil || m.Name != tc.model {
					t.Fatalf("got %+v %+v, want model %s", m, d, tc.model)
				}
				return
			}
			if m != nil || d == nil || d.Status != tc.status || (tc.reason != "" && d.Reason != tc.reason) || !strings.Contains(d.Message, tc.message) {
				t.Fatalf("got %+v %+v, want %d %s %q", m, d, tc.status, tc.reason, tc.message)
			}
			if strings.Contains(d.Message, "Hello") || strings.Contains(d.Message, "wizard") || strings.Contains(d.Message, "0123456789") {
				t.Errorf("client message echoes the body: %q", d.Message)
			}
		})
	}
}

func TestInspectNotAModelRequest(t *testing.T) {
	c, _ := openCatalog(t, "")
	for _, r := range []Request{
		{Method: "GET", Path: "/v1/models"},
		{Method: "GET", Path: "/v2/models/resnet"},
		{Method: "POST", Path: "/v1/files"},
		{Method: "POST", Path: "/v2/models/resnet/infer/extra"},
		{Method: "PUT", Path: "/v1/chat/completions"},
		{Method: "GET", Path: "/V1/chat/completions/"},
		{Method: "POST", Path: "/v1/chat/completions%zz"},
		{Method: "POST", Path: "/v1/files/"},
	} {
		if _, _, ok := c.Inspect(r); ok {
			t.Errorf("%s %s taken for a model request", r.Method, r.Path)
		}
	}
}

// TestInspectHeadersOnly: a model request decided without its body (an
// authentication subrequest) checks no body; its model is known only when
// the path names it, and a path naming an unconfigured model is refused.
func TestInspectHeadersOnly(t *testing.T) {
	c, _ := openCatalog(t, "")
	for _, tc := range []struct {
		name, method, path string
		model, operation   string
		reason             string
		notModel           bool
	}{
		{name: "body names the model", method: "POST", path: "/v1/chat/completions"},
		{name: "path names the model", method: "POST", path: "/v2/models/resnet/infer", model: "resnet", operation: "infer"},
		{name: "custom path", method: "POST", path: "/score/scorer", model: "scorer", operation: "custom"},
		{name: "path names an unconfigured model", method: "POST", path: "/v2/models/bert/infer", reason: "model_not_configured"},
		{name: "ambiguous path still refused", method: "POST", path: "/V1/chat/completions", reason: "route_ambiguous"},
		{name: "not a model request", method: "GET", path: "/v1/models", notModel: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, d, ok := c.Inspect(Request{Method: tc.method, Path: tc.path, HeadersOnly: true})
			switch {
			case tc.notModel:
				if ok {
					t.Fatalf("taken for a model request: %+v %+v", m, d)
				}
			case tc.reason != "":
				if d == nil || d.Reason != tc.reason {
					t.Fatalf("got %+v %+v, want denial %s", m, d, tc.reason)
				}
			case d != nil || m == nil || !m.Unchecked || m.Name != tc.model || m.Operation != tc.operation || m.Body != nil || m.Facts.PromptChars != 0:
				t.Fatalf("got %+v %+v, want unchecked model %q %q", m, d, tc.model, tc.operation)
			}
		})
	}
}

func TestUnknownModelStatus404(t *testing.T) {
	c, _ := openCatalog(t, "unknown_model_status: 404\n")
	_, d, _ := c.Inspect(post("/v2/models/bert/infer", `{"inputs":[]}`))
	if d == nil || d.Status != http.StatusNotFound {
		t.Fatalf("got %+v, want 404", d)
	}
}

func TestFacts(t *testing.T) {
	c, _ := openCatalog(t, "")
	m, d, _ := c.Inspect(post("/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"n":2,"max_completion_tokens":10,"max_tokens":64,
		"messages":[{"role":"system","content":"Be brief"},{"role":"user","content":[{"type":"text","text":"héllo"}]}],
		"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}`))
	if d != nil {
		t.Fatal(d)
	}
	f := m.Facts
	if f.MaxTokens != 64 || !f.Stream || f.N != 2 || f.Messages != 2 || f.PromptChars != len("Be brief")+5 || len(f.Tools) != 1 || f.Tools[0] != "get_weather" {
		t.Fatalf("facts %+v", f)
	}
}

// A user schema file edited at run time applies; a broken one is refused
// and the one in force stays.
func TestSchemaReload(t *testing.T) {
	c, dir := openCatalog(t, "")
	reloads := make(chan error, 10)
	c.onReload = func(err error) { reloads <- err }
	schemas := filepath.Join(dir, "schemas")

	testkit.WriteFile(t, schemas, "score.json", `{"type":"object","required":["features","version"]}`)
	if err := <-reloadOrTimeout(t, reloads); err != nil {
		t.Fatalf("good schema refused: %v", err)
	}
	if _, d, _ := c.Inspect(post("/score/scorer", `{"features":[0.1]}`)); d == nil || d.Reason != "body_schema_violation" {
		t.Fatalf("new schema not in force: %+v", d)
	}
	testkit.WriteFile(t, schemas, "score.json", `{"type": "object", "required": 7}`)
	if err := <-reloadOrTimeout(t, reloads); err == nil {
		t.Fatal("broken schema accepted")
	}
	if _, d, _ := c.Inspect(post("/score/scorer", `{"features":[0.1],"version":1}`)); d != nil {
		t.Fatalf("the schema in force changed after a refused reload: %+v", d)
	}
}

func reloadOrTimeout(t *testing.T, ch chan error) chan error {
	t.Helper()
	out := make(chan error, 1)
	select {
	case err := <-ch:
		out <- err
	case <-time.After(10 * time.Second):
		t.Fatal("no schema reload")
	}
	return out
}

func TestTemplateMatch(t *testing.T) {
	tests := []struct {
		tmpl, path, model string
		ok                bool
	}{
		{"/v1/chat/completions", "/v1/chat/completions", "", true},
		{"/v1/chat/completions", "/v1/chat/completions/x", "", false},
		{"/v2/models/{model}/infer", "/v2/models/resnet/infer", "resnet", true},
		{"/v2/models/{model}/infer", "/v2/models//infer", "", false},
		{"/v2/models/{model}/infer", "/v2/models/a/b/infer", "", false},
		{"/v2/models/{model}/versions/{version}/infer", "/v2/models/m/versions/3/infer", "m", true},
		{"/v1/models/{model}:predict", "/v1/models/half_plus_two:predict", "half_plus_two", true},
		{"/v1/models/{model}:predict", "/v1/models/half_plus_two:classify", "", false},
		{"/v1/models/{model}:predict", "/v1/models/x/versions/1:predict", "", false},
		{"/score/{model}", "/score/llama3:8b", "llama3:8b", true},
	}
	for _, tc := range tests {
		model, ok := compileTemplate(tc.tmpl).match(tc.path)
		if ok != tc.ok || model != tc.model {
			t.Errorf("%s ~ %s: got %q %v, want %q %v", tc.tmpl, tc.path, model, ok, tc.model, tc.ok)
		}
	}
}

// Paths a lenient server could route to a model API are checked as that
// model request or refused; never passed as a non-model request.
func TestInspectPathForms(t *testing.T) {
	c, _ := openCatalog(t, "")
	chat := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}`
	bad := `{"model":"gpt-4o-mini","messages":[{"role":"wizard","content":"x"}]}`
	infer := `{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1.0,2.0]}]}`
	tests := []struct {
		method, path, body string
		model              string // checked as this model's request
		reason             string // or refused
	}{
		// Envoy's normalize_path and merge_slashes forms: the model request.
		{"POST", "//v1/chat/completions", chat, "gpt-4o-mini", ""},
		{"POST", "/v1//chat/completions", chat, "gpt-4o-mini", ""},
		{"POST", "/v1/./chat/completions", chat, "gpt-4o-mini", ""},
		{"POST", "/x/../v1/chat/completions", chat, "gpt-4o-mini", ""},
		{"POST", "/../v1/chat/completions", chat, "gpt-4o-mini", ""},
		{"POST", "/v1/chat/%63ompletions", chat, "gpt-4o-mini", ""},
		{"POST", "/%76%31/chat/completions", chat, "gpt-4o-mini", ""},
		{"POST", "/v1/chat/%2e/completions", chat, "gpt-4o-mini", ""},
		{"POST", "/v2/models/res%6Eet/infer", infer, "resnet", ""},
		{"POST", "//v1/chat/completions", bad, "", "body_schema_violation"},
		{"POST", "/v1/chat/%63ompletions", bad, "", "body_schema_violation"},
		// Other forms a lenient server may route: refused.
		{"POST", "/v1/chat/completions/", chat, "", "route_ambiguous"},
		{"POST", "/v1/chat/completions/.", chat, "", "route_ambiguous"},
		{"POST", "/V1/chat/completions", chat, "", "route_ambiguous"},
		{"POST", "/v1/CHAT/COMPLETIONS", chat, "", "route_ambiguous"},
		{"POST", "/v1/embedding\u017f", `{"model":"text-embedding-3-small","input":"hi"}`, "", "route_ambiguous"},
		{"POST", "/v1/chat/completions;x=1", chat, "", "route_ambiguous"},
		{"POST", "/v1/chat;x=1/completions", chat, "", "route_ambiguous"},
		{"POST", "/v1/chat%2Fcompletions", chat, "", "route_ambiguous"},
		{"POST", "/v1/chat%2fcompletions", chat, "", "route_ambiguous"},
		{"POST", `/v1/chat\completions`, chat, "", "route_ambiguous"},
		{"POST", "/v1/chat%5Ccompletions", chat, "", "route_ambiguous"},
		{"POST", "/v1/chat/%2563ompletions", chat, "", "route_ambiguous"},
		{"POST", "/v2/MODELS/resnet/infer", infer, "", "route_ambiguous"},
		{"POST", "/v1/models/half_plus_two:PREDICT", `{"instances":[1.0]}`, "", "route_ambiguous"},
		{"POST", "/score/scorer/", `{"features":[0.1]}`, "", "route_ambiguous"},
		{"post", "/v1/chat/completions", chat, "", "route_ambiguous"},
		{"Post", "/v1/chat/completions", chat, "", "route_ambiguous"},
		{"post", "//v1/chat/completions/", chat, "", "route_ambiguous"},
	}
	for _, tc := range tests {
		m, d, ok := c.Inspect(Request{Method: tc.method, Path: tc.path, ContentType: "application/json", Body: []byte(tc.body)})
		switch {
		case !ok:
			t.Errorf("%s %s passed as a non-model request", tc.method, tc.path)
		case tc.model != "" && (m == nil || m.Name != tc.model):
			t.Errorf("%s %s: got %+v %+v, want model %s", tc.method, tc.path, m, d, tc.model)
		case tc.reason != "" && (d == nil || d.Status != http.StatusBadRequest || d.Reason != tc.reason):
			t.Errorf("%s %s: got %+v %+v, want 400 %s", tc.method, tc.path, m, d, tc.reason)
		}
	}
}

func TestNormalizePath(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "",
		"/":                      "/",
		"/v1/models":             "/v1/models",
		"//a///b/":               "/a/b/",
		"/a/./b/../c":            "/a/c",
		"/a/b/..":                "/a/",
		"/..":                    "/",
		"/a%2fb%2Fc":             "/a%2Fb%2Fc",
		"/%7euser/%41%2d%5f%2E":  "/~user/A-_.",
		"/a%zz/b%4":              "/a%zz/b%4",
		"/.well-known/x":         "/.well-known/x",
		"/a/%2e%2e/b":            "/b",
		"/v1/chat%3bx/completio": "/v1/chat%3Bx/completio",
	} {
		if got := normalizePath(in); got != want {
			t.Errorf("normalizePath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestInspectVocab: the parsed body shares the strings the catalog knows
// (model names, the schemas' words) instead of allocating its own, also
// after a schema reload.
func TestInspectVocab(t *testing.T) {
	c, _ := openCatalog(t, "")
	m, d, _ := c.Inspect(post("/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}`))
	if d != nil {
		t.Fatal(d)
	}
	got := m.Body.(map[string]any)["model"].(string)
	if got != m.Name || unsafe.StringData(got) != unsafe.StringData(m.Name) {
		t.Errorf("body model %q does not share the configured name's string", got)
	}
	before := c.schemas.Load()
	c.reload()
	after := c.schemas.Load()
	if after == before || after.vocab == nil || after.vocab == before.vocab {
		t.Error("a reload did not build the vocabulary of the new schemas")
	}
}

func TestRuneCount(t *testing.T) {
	// Every length from 0 to 40 and every alignment of 1- to 4-byte runes
	// against the 8-byte words.
	runes := []string{"a", "\u00e9", "\u20ac", "\U0001F642", "\x7f", "\u0080", "\U0010FFFF"}
	for _, r := range runes {
		for prefix := range 9 {
			for n := range 12 {
				s := strings.Repeat("x", prefix) + strings.Repeat(r, n) + strings.Repeat("y", n%5)
				if got, want := runeCount(s), utf8.RuneCountInString(s); got != want {
					t.Errorf("runeCount(%q) = %d, want %d", s, got, want)
				}
			}
		}
	}
}
