// Package schema validates model API request bodies: a JSON Schema per API
// (draft 2020-12, compiled once per Set) followed by the checks JSON Schema
// cannot express, such as an Open Inference Protocol tensor's element count
// against its shape.
//
// Bodies arrive already parsed by package body: map[string]any, []any,
// string, json.Number, bool and nil. A refusal is a *Violation naming the
// JSON pointer and the rule that failed, never the offending value: bodies
// carry prompts, and refusals end up in logs and responses.
//
// Built-in schemas live in builtin/*.json, one per API, written from each
// API's published request format (the file's $comment names the source).
// They are strict about the members they define and open to others, so an
// OpenAI-compatible server's extensions (vLLM's top_k, guided_json, ...)
// pass. The OpenAI ones are shaped for the validator's cost (fast-path
// ifs, few $refs; docs/json-schema-cost.md), and a differential test holds
// them to their previous form in testdata/previous.
package schema

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Built-in schema ids.
const (
	OpenAIChat        = "openai.chat_completions" // POST /v1/chat/completions
	OpenAICompletions = "openai.completions"      // POST /v1/completions
	OpenAIEmbeddings  = "openai.embeddings"       // POST /v1/embeddings
	// OIPInfer is the Open Inference Protocol (KServe v2 / Triton)
	// POST /v2/models/{m}[/versions/{v}]/infer.
	OIPInfer = "oip.infer"
	// KServeV1Predict is KServe v1 / TensorFlow Serving
	// POST /v1/models/{m}:predict, in "instances" and "inputs" forms.
	KServeV1Predict = "kserve.v1.predict"
)

// MaxSchemaFileBytes caps a user schema file; a larger one fails Compile.
const MaxSchemaFileBytes = 4 << 20

// ErrUnknownSchema is returned (wrapped) by Validate for an id the Set does
// not have. It is a configuration fault, not a bad request; callers deny.
var ErrUnknownSchema = errors.New("unknown schema id")

//go:embed builtin/*.json
var builtinFS embed.FS

// BuiltinURL is the base URL of the built-in schemas: a user schema file
// can build on one with {"$ref": BuiltinURL + id + ".json"}, even when it
// overrides that id. The .invalid TLD (RFC 2606) never resolves, and
// nothing is fetched anyway.
const BuiltinURL = "https://modelguard.invalid/schema/builtin/"

// checkFor returns the checks that run for schema id after its JSON Schema
// passed, or nil. They belong to the protocol, so they also run when a user
// file overrides the built-in schema of that id.
func checkFor(id string) func(any) *Violation {
	switch id {
	case OIPInfer:
		return checkOIPInfer
	case KServeV1Predict:
		return checkKServeV1Predict
	}
	return nil
}

// Builtins lists the built-in schema ids, sorted.
func Builtins() []string {
	return []string{KServeV1Predict, OIPInfer, OpenAIChat, OpenAICompletions, OpenAIEmbeddings}
}

// Set is an immutable compiled revision of schemas: the built-ins plus user
// schema files. It is safe for concurrent use.
type Set struct {
	entries map[string]entry
	// names are the member names some schema of the Set defines: the only
	// names a refusal may show (see Named).
	names map[string]bool
	// words are names and the string values of enum and const: what a
	// valid body is made of (see Words).
	words []string
}

type entry struct {
	schema *jsonschema.Schema
	check  func(any) *Violation // nil when the id has no code checks
}

// Compile builds a Set from the built-ins and files, which maps schema ids
// to JSON Schema file paths (absolute, or relative to the working directory;
// callers resolve them against config.Dir). A file whose id is a built-in id
// replaces that built-in schema. Files are draft 2020-12 unless their
// $schema says otherwise; format assertions are off (except in draft-07 and
// older files, where that draft makes them part of validation). A file may
// $ref another file of the map by its path, and the built-ins (see
// BuiltinURL); references to anything else (other files, the network) are
// refused, so compiling never reads more than the listed files.
//
// Errors name the id, the file and, for a schema that does not compile, the
// location inside it.
func Compile(files map[string]string) (*Set, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})

	// Add every document before compiling any, so that user files can
	// reference each other and the built-ins, overridden or not.
	urls := make(map[string]string, len(files)+len(Builtins()))
	names, values := map[string]bool{}, map[string]bool{}
	for _, id := range Builtins() {
		name := "builtin/" + id + ".json"
		f, err := builtinFS.Open(name)
		if err != nil {
			return nil, fmt.Errorf("schema %s: built-in %s: %w", id, name, err)
		}
		doc, err := decodeStrict(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("schema %s: built-in %s: %w", id, name, err)
		}
		collectNames(doc, names, values)
		u := BuiltinURL + id + ".json"
		if err := c.AddResource(u, doc); err != nil {
			return nil, fmt.Errorf("schema %s: built-in %s: %w", id, name, err)
		}
		urls[id] = u // replaced below when a file overrides id
	}
	added := make(map[string]bool, len(files)) // one resource per file, even if several ids share it
	for _, id := range sortedKeys(files) {
		path := files[id]
		if id == "" {
			return nil, fmt.Errorf("schema file %s: empty schema id", path)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("schema %s: file %s: %w", id, path, err)
		}
		// A file URL, so that '#' or '%' in a path is not read as a fragment
		// or an escape.
		u := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
		if !added[u] {
			doc, err := readSchemaFile(abs)
			if err != nil {
				return nil, fmt.Errorf("schema %s: file %s: %w", id, path, err)
			}
			collectNames(doc, names, values)
			if err := c.AddResource(u, doc); err != nil {
				return nil, fmt.Errorf("schema %s: file %s: %w", id, path, err)
			}
			added[u] = true
		}
		urls[id] = u
	}

	s := &Set{entries: make(map[string]entry, len(urls)), names: names, words: words(names, values)}
	for _, id := range sortedKeys(urls) {
		sch, err := c.Compile(urls[id])
		if err != nil {
			if path, ok := files[id]; ok {
				return nil, fmt.Errorf("schema %s: file %s: %w", id, path, err)
			}
			return nil, fmt.Errorf("schema %s: built-in: %w", id, err)
		}
		s.entries[id] = entry{schema: sch, check: checkFor(id)}
	}
	return s, nil
}

// Named reports whether name is a member name that a schema of the Set
// defines (under "properties", "required" or "dependentRequired"), as
// opposed to one a caller chose (a metadata or logit_bias key). Refusals
// show only such names; others stand as Placeholder.
func (s *Set) Named(name string) bool {
	return s.names[name]
}

// Placeholder stands for a member name the caller chose, in the pointers
// of refusals.
const Placeholder = "*"

// Words lists the member names and the enum and const string values that
// the Set's schemas define, sorted: the keys and many values of valid
// bodies ("messages", "role", "user", ...), which the body parser returns
// without allocating (body.Vocab). The slice is shared; do not modify it.
func (s *Set) Words() []string {
	return s.words
}

func words(names, values map[string]bool) []string {
	w := make([]string, 0, len(names)+len(values))
	for n := range names {
		w = append(w, n)
	}
	for v := range values {
		if !names[v] {
			w = append(w, v)
		}
	}
	sort.Strings(w)
	return w
}

// collectNames adds the member names that doc, a schema document, defines
// anywhere to names, and the strings of its enum and const keywords to
// values. A name taken from the schema is safe to show; an over-broad walk
// (a "properties" key inside an example) only shows more of the schema's
// own text.
func collectNames(doc any, names, values map[string]bool) {
	switch d := doc.(type) {
	case map[string]any:
		for k, v := range d {
			switch k {
			case "const":
				if s, ok := v.(string); ok {
					values[s] = true
				}
			case "enum":
				if a, ok := v.([]any); ok {
					for _, e := range a {
						if s, ok := e.(string); ok {
							values[s] = true
						}
					}
				}
			case "properties", "dependentRequired", "dependentSchemas", "dependencies":
				if o, ok := v.(map[string]any); ok {
					for name := range o {
						names[name] = true
					}
				}
			case "required":
				if a, ok := v.([]any); ok {
					for _, name := range a {
						if n, ok := name.(string); ok {
							names[n] = true
						}
					}
				}
			}
			collectNames(v, names, values)
		}
	case []any:
		for _, v := range d {
			collectNames(v, names, values)
		}
	}
}

// Has reports whether the Set has schema id.
func (s *Set) Has(id string) bool {
	_, ok := s.entries[id]
	return ok
}

// Validate checks v, a parsed body, against schema id and then the code
// checks for that id. It returns nil when v is valid, a *Violation when it
// is not, and another error (ErrUnknownSchema, or an internal fault) when it
// could not tell; callers deny on any error.
func (s *Set) Validate(id string, v any) error {
	e, ok := s.entries[id]
	if !ok {
		return fmt.Errorf("schema %q: %w", id, ErrUnknownSchema)
	}
	if err := e.schema.Validate(v); err != nil {
		var verr *jsonschema.ValidationError
		if !errors.As(err, &verr) {
			return fmt.Errorf("schema %s: %w", id, err)
		}
		return violationOf(verr, v, s.Named)
	}
	if e.check != nil {
		if viol := e.check(v); viol != nil {
			return viol
		}
	}
	return nil
}

func readSchemaFile(path string) (any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSchemaFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxSchemaFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", MaxSchemaFileBytes)
	}
	return decodeStrict(bytes.NewReader(data))
}

// noLoader refuses every URL that was not added as a resource: a $ref to
// another file or to the network fails Compile instead of reading it.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("not loaded: only the configured schema files can be referenced")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
