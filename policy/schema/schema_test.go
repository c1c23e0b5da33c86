package schema

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/modelguard/modelguard/test/testkit"
)

func TestBuiltins(t *testing.T) {
	ids := Builtins()
	if !slices.IsSorted(ids) {
		t.Errorf("Builtins() = %v, not sorted", ids)
	}
	// Every embedded file is a built-in id and every id has a file.
	files, err := fs.Glob(builtinFS, "builtin/*.json")
	if err != nil {
		t.Fatal(err)
	}
	var fromFiles []string
	for _, f := range files {
		fromFiles = append(fromFiles, strings.TrimSuffix(strings.TrimPrefix(f, "builtin/"), ".json"))
	}
	if !slices.Equal(fromFiles, ids) {
		t.Errorf("embedded files %v, Builtins() %v", fromFiles, ids)
	}
	want := []string{OpenAIChat, OpenAICompletions, OpenAIEmbeddings, OIPInfer, KServeV1Predict}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("Builtins() = %v, want %v", ids, want)
	}
	// The caller gets its own slice.
	ids[0] = "changed"
	if Builtins()[0] == "changed" {
		t.Error("Builtins() shares its slice")
	}

	s := mustCompile(t, nil)
	for _, id := range want {
		if !s.Has(id) {
			t.Errorf("Has(%q) = false", id)
		}
	}
	if s.Has("openai.responses") {
		t.Error(`Has("openai.responses") = true`)
	}
}

func TestValidSamples(t *testing.T) {
	s := mustCompile(t, nil)
	seen := map[string]bool{}
	for _, tc := range validSamples {
		seen[tc.id] = true
		t.Run(tc.id+"/"+tc.name, func(t *testing.T) {
			if err := s.Validate(tc.id, parse(t, tc.body)); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
	for _, id := range Builtins() {
		if !seen[id] {
			t.Errorf("no valid sample for %s", id)
		}
	}
}

func TestInvalidSamples(t *testing.T) {
	s := mustCompile(t, nil)
	seen := map[string]bool{}
	for _, tc := range invalidSamples {
		seen[tc.id] = true
		t.Run(tc.id+"/"+tc.name, func(t *testing.T) {
			v := asViolation(t, s.Validate(tc.id, parse(t, tc.body)))
			if v.Pointer != tc.pointer || v.Rule != tc.rule {
				t.Errorf("violation {%q, %q}, want {%q, %q}", v.Pointer, v.Rule, tc.pointer, tc.rule)
			}
			// The same body always gives the same answer, whatever order
			// the validator visits object members in.
			for range 20 {
				again := asViolation(t, s.Validate(tc.id, parse(t, tc.body)))
				if *again != *v {
					t.Fatalf("violation changed between runs: %+v then %+v", v, again)
				}
			}
		})
	}
	for _, id := range Builtins() {
		if !seen[id] {
			t.Errorf("no invalid sample for %s", id)
		}
	}
}

func TestViolationError(t *testing.T) {
	for _, tc := range []struct {
		v    Violation
		want string
	}{
		{Violation{Pointer: "/messages/0/role", Rule: "enum"}, "/messages/0/role: enum"},
		{Violation{Pointer: "", Rule: "required: model"}, "(root): required: model"},
	} {
		if got := tc.v.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

// A refusal never quotes the body: the secret sits where each kind of
// failure would be tempted to echo it.
func TestViolationNeverQuotesBody(t *testing.T) {
	const secret = "sk-proj-SECRETSECRETSECRET-do-not-log"
	dir := t.TempDir()
	strictFile := testkit.WriteFile(t, dir, "strict.json", `{
		"type": "object",
		"properties": {
			"model": {"enum": ["gpt-4o", "gpt-4o-mini"]},
			"user": {"pattern": "^[a-z]+$"},
			"kind": {"const": "chat"},
			"tags": {"uniqueItems": true},
			"meta": {"propertyNames": {"maxLength": 3}},
			"name": {"not": {"type": "string"}},
			"one": {"oneOf": [{"type": "string"}, {"minLength": 1}]}
		},
		"additionalProperties": false
	}`)
	draft7File := testkit.WriteFile(t, dir, "draft7.json", `{
		"$schema": "http://json-schema.org/draft-07/schema#",
		"properties": {"email": {"format": "email"}}
	}`)
	s := mustCompile(t, map[string]string{"strict": strictFile, "draft7": draft7File})

	for _, tc := range []struct{ id, body, rule string }{
		{OpenAIChat, `{"model": "gpt-4o", "messages": [{"role": "SECRET", "content": "SECRET"}]}`, "enum"},
		{OpenAIChat, `{"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "SECRET", "text": "SECRET"}]}]}`, "enum"},
		{OpenAIChat, `{"model": "gpt-4o", "messages": [{"role": "user", "content": "SECRET"}], "temperature": "SECRET"}`, "type: want null or number"},
		{OpenAIChat, `{"model": "gpt-4o", "messages": [{"role": "user", "content": "SECRET"}], "tool_choice": "SECRET"}`, "enum"},
		{OpenAIChat, `{"model": "SECRET"}`, "required: messages"},
		{OpenAIEmbeddings, `{"model": "m", "input": ["SECRET", 1]}`, "type: want integer or array"},
		{OIPInfer, `{"inputs": [{"name": "SECRET", "shape": [1], "datatype": "SECRET", "data": ["SECRET"]}]}`, "enum"},
		{OIPInfer, `{"inputs": [{"name": "SECRET", "shape": [1], "datatype": "INT32", "data": ["SECRET"]}]}`, "tensor element: want integer in [-2147483648, 2147483647] for INT32"},
		{KServeV1Predict, `{"instances": "SECRET"}`, "type: want array"},
		{"strict", `{"model": "SECRET"}`, "enum"},
		{"strict", `{"user": "SECRET"}`, "pattern"},
		{"strict", `{"kind": "SECRET"}`, "const"},
		{"strict", `{"tags": ["SECRET", "SECRET"]}`, "uniqueItems"},
		{"strict", `{"meta": {"SECRET": 1}}`, "propertyNames"},
		{"strict", `{"name": "SECRET"}`, "not"},
		{"strict", `{"one": "SECRET"}`, "oneOf: more than one matched"},
		{"strict", `{"SECRET": "SECRET"}`, "additionalProperties: not allowed"},
		{OpenAIChat, `{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "metadata": {"SECRET": 1}}`, "type: want string"},
		{OpenAIChat, `{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"SECRET": 500}}`, "maximum: want <= 100"},
		{"draft7", `{"email": "SECRET"}`, "format: want email"},
	} {
		body := strings.ReplaceAll(tc.body, "SECRET", secret)
		v := asViolation(t, s.Validate(tc.id, parse(t, body)))
		if v.Rule != tc.rule {
			t.Errorf("%s %s: rule %q, want %q", tc.id, tc.body, v.Rule, tc.rule)
		}
		for _, part := range []string{v.Error(), v.Pointer, v.Rule} {
			if strings.Contains(part, "SECRET") {
				t.Errorf("%s %s: violation %q quotes the body", tc.id, tc.body, part)
			}
		}
	}
}

func TestUserSchemas(t *testing.T) {
	dir := t.TempDir()
	// An operator narrows chat to two models, building on the built-in.
	chat := testkit.WriteFile(t, dir, "chat.json", `{
		"allOf": [{"$ref": "`+BuiltinURL+`openai.chat_completions.json"}],
		"properties": {"model": {"enum": ["gpt-4o", "gpt-4o-mini"]}}
	}`)
	// A custom API, split over two files.
	common := testkit.WriteFile(t, dir, "common.json", `{"$defs": {"prompt": {"type": "string", "maxLength": 10}}}`)
	custom := testkit.WriteFile(t, dir, "custom.json", `{
		"type": "object",
		"required": ["prompt"],
		"properties": {"prompt": {"$ref": "common.json#/$defs/prompt"}}
	}`)
	s := mustCompile(t, map[string]string{
		OpenAIChat:      chat,
		"acme.generate": custom,
		"acme.common":   common,
	})

	for _, tc := range []struct {
		id, body      string
		pointer, rule string // empty rule: valid
	}{
		{OpenAIChat, `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}`, "", ""},
		{OpenAIChat, `{"model": "o3", "messages": [{"role": "user", "content": "Hi"}]}`, "/model", "enum"},
		{OpenAIChat, `{"model": "gpt-4o", "messages": [{"role": "root", "content": "Hi"}]}`, "/messages/0/role", "enum"},
		{"acme.generate", `{"prompt": "short"}`, "", ""},
		{"acme.generate", `{"prompt": "far too long"}`, "/prompt", "maxLength: want <= 10"},
		{"acme.generate", `{}`, "", "required: prompt"},
		// Built-ins that were not overridden are still there.
		{OpenAIEmbeddings, `{"model": "m", "input": ""}`, "/input", "minLength: want >= 1"},
	} {
		err := s.Validate(tc.id, parse(t, tc.body))
		if tc.rule == "" {
			if err != nil {
				t.Errorf("%s %s: %v", tc.id, tc.body, err)
			}
			continue
		}
		v := asViolation(t, err)
		if v.Pointer != tc.pointer || v.Rule != tc.rule {
			t.Errorf("%s %s: violation {%q, %q}, want {%q, %q}", tc.id, tc.body, v.Pointer, v.Rule, tc.pointer, tc.rule)
		}
	}

	// One file may serve two ids.
	s2 := mustCompile(t, map[string]string{"a": custom, "b": custom, "c": common})
	if !s2.Has("a") || !s2.Has("b") {
		t.Error("ids sharing a file are missing")
	}

	// A path is a path: '#', '%' and spaces are not URL syntax.
	odd := testkit.WriteFile(t, dir, "odd #1 %41.json", `{"required": ["x"]}`)
	s3 := mustCompile(t, map[string]string{"odd": odd})
	if v := asViolation(t, s3.Validate("odd", parse(t, `{}`))); v.Rule != "required: x" {
		t.Errorf("odd file name: violation %+v", v)
	}
}

// Overriding a built-in replaces its JSON Schema, not the protocol checks
// that come with the id.
func TestOverrideKeepsCodeChecks(t *testing.T) {
	dir := t.TempDir()
	s := mustCompile(t, map[string]string{
		OIPInfer:        testkit.WriteFile(t, dir, "oip.json", `{}`),
		KServeV1Predict: testkit.WriteFile(t, dir, "v1.json", `true`),
	})
	for _, tc := range []struct {
		id, body      string
		pointer, rule string
	}{
		{OIPInfer, `{"inputs": [{"name": "a", "shape": [2], "datatype": "INT32", "data": [1]}]}`, "/inputs/0/data", "tensor data length 1 != shape product 2"},
		{OIPInfer, `{"inputs": [{"name": "a", "shape": [1], "datatype": "BF16", "data": [1]}]}`, "/inputs/0/datatype", "unknown tensor datatype"},
		{OIPInfer, `{"inputs": [{"name": "a", "shape": [1], "datatype": 5, "data": [1]}]}`, "/inputs/0/datatype", "type: want string"},
		{OIPInfer, `{"inputs": [{"name": "a", "shape": ["1"], "datatype": "FP32", "data": [1]}]}`, "/inputs/0/shape/0", "type: want integer"},
		{OIPInfer, `{"inputs": [{"name": "a", "shape": 1, "datatype": "FP32", "data": [1]}]}`, "/inputs/0/shape", "type: want array"},
		{OIPInfer, `{"inputs": [{"name": "a", "datatype": "FP32", "data": [1]}]}`, "/inputs/0", "required: shape"},
		{OIPInfer, `{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": 1}]}`, "/inputs/0/data", "type: want array"},
		{OIPInfer, `{"inputs": ["a"]}`, "/inputs/0", "type: want object"},
		{OIPInfer, `{"inputs": {}}`, "/inputs", "type: want array"},
		{OIPInfer, `{}`, "", "required: inputs"},
		{OIPInfer, `[]`, "", "type: want object"},
		{KServeV1Predict, `{"instances": 1, "inputs": 2}`, "", "exactly one of instances, inputs: got both"},
		{KServeV1Predict, `"instances"`, "", "type: want object"},
	} {
		v := asViolation(t, s.Validate(tc.id, parse(t, tc.body)))
		if v.Pointer != tc.pointer || v.Rule != tc.rule {
			t.Errorf("%s %s: violation {%q, %q}, want {%q, %q}", tc.id, tc.body, v.Pointer, v.Rule, tc.pointer, tc.rule)
		}
	}
	if err := s.Validate(OIPInfer, parse(t, `{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}`)); err != nil {
		t.Errorf("override without a name requirement: %v", err)
	}
}

func TestCompileErrors(t *testing.T) {
	dir := t.TempDir()
	good := testkit.WriteFile(t, dir, "good.json", `{"type": "object"}`)
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, []byte(`{"description": "`+strings.Repeat("x", MaxSchemaFileBytes)+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		files   map[string]string
		wantErr []string // substrings of the error
	}{
		{"not JSON", map[string]string{"x": testkit.WriteFile(t, dir, "notjson.json", `{"type": "object",}`)},
			[]string{"schema x", "notjson.json", "invalid JSON"}},
		{"trailing data", map[string]string{"x": testkit.WriteFile(t, dir, "trailing.json", `{} {}`)},
			[]string{"trailing.json", "after the top-level value"}},
		{"duplicate key", map[string]string{"x": testkit.WriteFile(t, dir, "dup.json", `{"required": ["a"], "required": []}`)},
			[]string{"dup.json", `duplicate key "required"`}},
		{"bad keyword value", map[string]string{"x": testkit.WriteFile(t, dir, "badtype.json", `{"properties": {"a": {"type": 5}}}`)},
			[]string{"schema x", "badtype.json", "/properties/a/type"}},
		{"bad regex", map[string]string{"x": testkit.WriteFile(t, dir, "regex.json", `{"pattern": "(?=lookahead)"}`)},
			[]string{"regex.json", "pattern"}},
		{"unresolvable ref", map[string]string{"x": testkit.WriteFile(t, dir, "ref.json", `{"$ref": "#/$defs/missing"}`)},
			[]string{"ref.json", "missing"}},
		{"ref to an unlisted file", map[string]string{"x": testkit.WriteFile(t, dir, "reffile.json", `{"$ref": "good.json"}`)},
			[]string{"reffile.json", "good.json", "only the configured schema files"}},
		{"ref to the network", map[string]string{"x": testkit.WriteFile(t, dir, "refnet.json", `{"$ref": "https://example.com/s.json"}`)},
			[]string{"refnet.json", "https://example.com/s.json"}},
		{"unknown draft", map[string]string{"x": testkit.WriteFile(t, dir, "draft.json", `{"$schema": "https://example.com/my-draft"}`)},
			[]string{"draft.json"}},
		{"missing file", map[string]string{"x": filepath.Join(dir, "absent.json")},
			[]string{"schema x", "absent.json", "no such file"}},
		{"file too large", map[string]string{"x": big},
			[]string{"big.json", "larger than"}},
		{"empty id", map[string]string{"": good},
			[]string{"good.json", "empty schema id"}},
		{"broken override of a built-in", map[string]string{OpenAIChat: testkit.WriteFile(t, dir, "chat.json", `{"minItems": -1}`)},
			[]string{"schema openai.chat_completions", "chat.json", "minItems"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Compile(tc.files)
			if err == nil {
				t.Fatal("Compile succeeded")
			}
			if s != nil {
				t.Error("Compile returned a Set with its error")
			}
			t.Log(err)
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateErrors(t *testing.T) {
	s := mustCompile(t, nil)
	body := parse(t, `{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}`)

	err := s.Validate("openai.responses", body)
	if !errors.Is(err, ErrUnknownSchema) {
		t.Errorf("unknown id: %v, want ErrUnknownSchema", err)
	}
	var v *Violation
	if errors.As(err, &v) {
		t.Error("unknown id reported as a Violation")
	}

	// A value package body never produces is refused, not passed.
	v = asViolation(t, s.Validate(OpenAIChat, map[string]any{"model": "gpt-4o", "messages": []any{map[string]any{"role": "user", "content": "Hi"}}, "n": []string{"1"}}))
	if v.Pointer != "/n" || v.Rule != "not a JSON value" {
		t.Errorf("Go int: violation %+v", v)
	}
	// Tensor elements must be json.Number, as package body produces.
	v = asViolation(t, s.Validate(OIPInfer, map[string]any{"inputs": []any{map[string]any{
		"name": "a", "shape": []any{json.Number("1")}, "datatype": "FP64", "data": []any{1.5},
	}}}))
	if v.Pointer != "/inputs/0/data/0" {
		t.Errorf("float64 element: violation %+v", v)
	}
}

func TestValidateConcurrent(t *testing.T) {
	s := mustCompile(t, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				ok := validSamples[(g+i)%len(validSamples)]
				if err := s.Validate(ok.id, parse(t, ok.body)); err != nil {
					t.Errorf("%s: %v", ok.name, err)
				}
				bad := invalidSamples[(g+i)%len(invalidSamples)]
				var v *Violation
				if err := s.Validate(bad.id, parse(t, bad.body)); !errors.As(err, &v) || v.Pointer != bad.pointer {
					t.Errorf("%s: %v", bad.name, err)
				}
			}
		}()
	}
	wg.Wait()
}

// Pointers name schema-defined members and indexes; member names the
// caller chose stand as Placeholder, whatever they look like.
func TestViolationPlaceholders(t *testing.T) {
	dir := t.TempDir()
	user := testkit.WriteFile(t, dir, "user.json", `{"type": "object", "properties": {"features": {"type": "object",
		"additionalProperties": {"type": "array", "items": {"type": "number"}}}}, "required": ["label"]}`)
	s := mustCompile(t, map[string]string{"user": user})
	msgs := `"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]`
	for _, tc := range []struct{ id, body, pointer string }{
		{OpenAIChat, `{` + msgs + `, "metadata": {"customer-4711": 1}}`, "/metadata/*"},
		{OpenAIChat, `{` + msgs + `, "logit_bias": {"50256": 101}}`, "/logit_bias/*"},
		{OpenAIChat, `{` + msgs + `, "metadata": {"a/b~c": 1}}`, "/metadata/*"},
		{OpenAIChat, `{` + msgs + `, "metadata": {"model": 1}}`, "/metadata/model"},
		{OpenAIChat, `{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}, {"role": "wizard", "content": "x"}]}`, "/messages/1/role"},
		{"user", `{"label": 1, "features": {"secret-feature": [1, "x"]}}`, "/features/*/1"},
	} {
		v := asViolation(t, s.Validate(tc.id, parse(t, tc.body)))
		if v.Pointer != tc.pointer {
			t.Errorf("%s %s: pointer %q, want %q", tc.id, tc.body, v.Pointer, tc.pointer)
		}
	}
	for name, want := range map[string]bool{"model": true, "messages": true, "label": true, "features": true, "customer-4711": false, "50256": false} {
		if s.Named(name) != want {
			t.Errorf("Named(%q) = %v, want %v", name, !want, want)
		}
	}
}

func TestWords(t *testing.T) {
	dir := t.TempDir()
	user := testkit.WriteFile(t, dir, "user.json", `{"type": "object", "properties": {"kind": {"enum": ["alpha", 7, "beta"]},
		"tag": {"const": "gamma"}}, "required": ["label"], "description": "not a word"}`)
	words := mustCompile(t, map[string]string{"user": user}).Words()
	if !slices.IsSorted(words) {
		t.Error("Words is not sorted")
	}
	for w, want := range map[string]bool{
		"messages": true, "role": true, "user": true, "assistant": true, "auto": true, // built-in names and enum values
		"kind": true, "label": true, "alpha": true, "beta": true, "gamma": true, // the user file's
		"not a word": false, "object": false, "7": false, // descriptions, types, non-strings
	} {
		if slices.Contains(words, w) != want {
			t.Errorf("Words contains %q: %v, want %v", w, !want, want)
		}
	}
	if n := len(words); n != len(slices.Compact(slices.Clone(words))) {
		t.Error("Words has repeats")
	}
}
