// Package models matches requests to the configured models and checks their
// bodies: one strict parse (policy/body), the model's JSON Schema
// (policy/schema) and its limits. It also derives the body facts the policy
// sees. Requests to a model API whose model is not configured are refused,
// never passed unchecked.
package models

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/modelguard/modelguard/policy/body"
	// Aliased: this package has a func field.
	fielderr "github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/schema"
	"github.com/modelguard/modelguard/policy/watch"
)

// The built-in APIs: default paths and schema per operation.
var operations = map[string]struct {
	paths  []string
	schema string
}{
	"chat":       {[]string{"/v1/chat/completions"}, schema.OpenAIChat},
	"completion": {[]string{"/v1/completions"}, schema.OpenAICompletions},
	"embeddings": {[]string{"/v1/embeddings"}, schema.OpenAIEmbeddings},
	"infer":      {[]string{"/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"}, schema.OIPInfer},
	"predict":    {[]string{"/v1/models/{model}:predict", "/v1/models/{model}/versions/{version}:predict"}, schema.KServeV1Predict},
}

// Options are the Catalog's collaborators.
type Options struct {
	Logger *slog.Logger
	// OnReload is called after each reload of user schema files (nil err:
	// the new schemas are in force).
	OnReload func(err error)
}

// Catalog is the compiled model list. Safe for concurrent use; user schema
// files reload live, swapping an immutable schema.Set.
type Catalog struct {
	models        []*model
	templates     []template // every configured and built-in path, in order
	owners        [][]*model // owners[i]: models reached through templates[i]
	lenient       []template // templates in folded case, for lenientPath
	limits        body.Limits
	unknownStatus int
	schemaFiles   map[string]string // schema id -> file
	schemas       atomic.Pointer[schemaSet]
	log           *slog.Logger
	onReload      func(error)
	reloadMu      sync.Mutex
}

// schemaSet is a compiled schema.Set and the parser vocabulary that goes
// with it: the Set's words and the configured model names. Swapped whole
// on a reload.
type schemaSet struct {
	*schema.Set
	vocab *body.Vocab
}

// newSchemaSet pairs set with its vocabulary.
func (c *Catalog) newSchemaSet(set *schema.Set) *schemaSet {
	words := slices.Clone(set.Words())
	for _, m := range c.models {
		words = append(words, m.name)
	}
	return &schemaSet{Set: set, vocab: body.NewVocab(words...)}
}

type model struct {
	name      string
	operation string
	schema    string
	limits    limits
	maxBytes  int
}

// Open compiles the models of s (validated by the configuration; schema
// files relative to baseDir) and their schemas, and watches user schema
// files until ctx ends. Errors are *field.Error relative to the document's
// root.
func Open(ctx context.Context, s Settings, baseDir string, opts Options) (*Catalog, error) {
	c := &Catalog{
		limits:        body.Limits{MaxBytes: s.Body.MaxBytes, MaxDepth: s.Body.MaxDepth},
		unknownStatus: s.UnknownModelStatus,
		schemaFiles:   map[string]string{},
		log:           opts.Logger,
		onReload:      opts.OnReload,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	index := map[string]int{} // template -> position in c.templates
	addTemplate := func(t string, m *model) error {
		i, ok := index[t]
		if !ok {
			tp := compileTemplate(t)
			for j := 1; j < len(tp.parts); j++ {
				if tp.parts[j].literal == "" && tp.parts[j-1].literal == "" {
					return errors.New("two placeholders must be separated by a literal")
				}
			}
			i = len(c.templates)
			index[t] = i
			c.templates = append(c.templates, tp)
			c.owners = append(c.owners, nil)
		}
		if m != nil {
			c.owners[i] = append(c.owners[i], m)
		}
		return nil
	}
	for i, mc := range s.Models {
		p := "models[" + strconv.Itoa(i) + "]"
		m := &model{name: mc.Name, operation: mc.Operation, schema: mc.Schema, limits: limits(mc.Limits), maxBytes: mc.Limits.MaxBodyBytes}
		if m.maxBytes == 0 {
			m.maxBytes = s.Body.MaxBytes
		}
		def := operations[mc.Operation]
		if m.schema == "" {
			m.schema = def.schema
		}
		if !slices.Contains(schema.Builtins(), m.schema) {
			// A file: its id is the path as written, resolved against the config.
			c.schemaFiles[m.schema] = resolve(m.schema, baseDir)
		}
		paths := mc.Paths
		if len(paths) == 0 {
			paths = def.paths
		}
		for j, t := range paths {
			if err := addTemplate(t, m); err != nil {
				return nil, &fielderr.Error{Path: fmt.Sprintf("%s.paths[%d]", p, j), Err: err}
			}
		}
		c.models = append(c.models, m)
	}
	// The built-in API paths are model requests even when no model uses
	// them: a request there for an unlisted model is refused.
	for _, op := range operations {
		for _, t := range op.paths {
			addTemplate(t, nil)
		}
	}

	for _, t := range c.templates {
		c.lenient = append(c.lenient, compileTemplate(string(body.AppendFold(nil, t.raw))))
	}

	set, err := schema.Compile(c.schemaFiles)
	if err != nil {
		return nil, &fielderr.Error{Path: "models", Err: err}
	}
	c.schemas.Store(c.newSchemaSet(set))
	if len(c.schemaFiles) > 0 {
		if err := watch.Dirs(ctx, schemaDirs(c.schemaFiles), watch.Options{}, c.reload, nil); err != nil {
			return nil, &fielderr.Error{Path: "models", Err: err}
		}
	}
	if len(c.models) == 0 {
		c.log.Warn("no models configured: every request to a model API will be refused")
	}
	return c, nil
}

// resolve joins a relative path to baseDir.
func resolve(p, baseDir string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(baseDir, p)
}

func schemaDirs(files map[string]string) []string {
	var dirs []string
	for _, f := range files {
		if d := filepath.Dir(f); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// reload recompiles the user schema files; a set that fails to compile is
// refused and the one in force stays.
func (c *Catalog) reload() {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	set, err := schema.Compile(c.schemaFiles)
	if err != nil {
		c.log.Error("schema reload refused, keeping the schemas in force", "error", err)
	} else {
		c.schemas.Store(c.newSchemaSet(set))
		c.log.Info("schemas reloaded")
	}
	if c.onReload != nil {
		c.onReload(err)
	}
}

// Model is what a request addresses, once its body has been checked.
type Model struct {
	Name      string
	Operation string
	Facts     Facts
	// Body is the parsed body (map[string]any, []any, string, json.Number,
	// bool or nil), for policies that read input.parsed_body.
	Body any
	// Unchecked is set for a request decided on its headers alone
	// (Request.HeadersOnly): no body was checked, Facts and Body are
	// zero, and Name is known only when the path names the model.
	Unchecked bool
}

// ReasonBodyNotForwarded denies a model request whose gateway was not
// configured to forward bodies; adapters add their gateway's advice.
const ReasonBodyNotForwarded = "body_not_forwarded"

// Denial is why a model request is refused.
type Denial struct {
	Status  int
	Reason  string // for operators
	Message string // safe for the client
}

// Request is what Inspect needs to know of a request.
type Request struct {
	Method        string
	Path          string
	ContentType   string
	Encoding      string // Content-Encoding
	Body          []byte
	BodyTruncated bool
	// BodyOmitted: the gateway was not set up to forward bodies.
	BodyOmitted bool
	// HeadersOnly: the gateway never forwards bodies (an authentication
	// subrequest) and the operator chose to decide model requests
	// without them.
	HeadersOnly bool
}

// ReadsBody reports whether Inspect reads the body of a request with this
// method and path: a POST to a model route. Adapters whose body read is a
// round trip (Kong) read it only then.
func (c *Catalog) ReadsBody(method, path string) bool {
	if method != http.MethodPost {
		return false
	}
	path = normalizePath(path)
	for _, t := range c.templates {
		if _, match := t.match(path); match {
			return true
		}
	}
	return false
}

// Inspect matches r to a configured model and checks its body. ok is false
// when r is not a model request (another path, or not a POST); then m and
// d are zero. Otherwise exactly one of m or d is set. The path is matched
// after normalisation, and a request that a lenient server could route to
// a model API is refused rather than passed on (see path.go).
func (c *Catalog) Inspect(r Request) (m *Model, d *Denial, ok bool) {
	path := normalizePath(r.Path)
	type candidate struct {
		models []*model
		name   string // from the path; "" when the body names the model
	}
	var candBuf [4]candidate // on the stack: a path matches few templates
	cands := candBuf[:0]
	if r.Method == http.MethodPost {
		for i, t := range c.templates {
			if name, match := t.match(path); match {
				cands = append(cands, candidate{c.owners[i], name})
			}
		}
	}
	if len(cands) == 0 {
		if c.ambiguous(r.Method, path) {
			return nil, &Denial{http.StatusBadRequest, "route_ambiguous", "request path or method not accepted for a model API"}, true
		}
		return nil, nil, false
	}
	if r.BodyOmitted {
		return nil, &Denial{http.StatusServiceUnavailable, ReasonBodyNotForwarded, "service unavailable"}, true
	}
	if r.HeadersOnly {
		// Without the body, only a model its path names is known; a
		// path that names one that is not configured is refused as usual.
		for _, cd := range cands {
			for _, cm := range cd.models {
				if cd.name != "" && cm.name == cd.name {
					return &Model{Name: cm.name, Operation: cm.operation, Unchecked: true}, nil, true
				}
			}
			if cd.name == "" {
				return &Model{Unchecked: true}, nil, true
			}
		}
		return nil, &Denial{c.unknownStatus, "model_not_configured", "model not available"}, true
	}
	// The body bound before the model is known: the largest any candidate allows.
	schemas := c.schemas.Load()
	lim := c.limits
	lim.Names = schemas // refusals show the names schemas define, not the caller's
	lim.Vocab = schemas.vocab
	for _, cd := range cands {
		for _, cm := range cd.models {
			lim.MaxBytes = max(lim.MaxBytes, cm.maxBytes)
		}
	}
	if len(r.Body) == 0 && !r.BodyTruncated {
		return nil, &Denial{http.StatusBadRequest, "body_missing", "request body required"}, true
	}
	if !isJSON(r.ContentType) {
		return nil, &Denial{http.StatusUnsupportedMediaType, "body_content_type_unsupported", "content-type must be application/json"}, true
	}
	raw, err := body.Decode(r.Body, r.BodyTruncated, r.Encoding, lim)
	if err != nil {
		return nil, bodyDenial(err), true
	}
	doc, err := body.Parse(raw, lim)
	if err != nil {
		return nil, bodyDenial(err), true
	}
	bodyName, _ := field(doc, "model").(string)

	var chosen *model
	for _, cd := range cands {
		name := cd.name
		if name == "" {
			name = bodyName
		}
		for _, cm := range cd.models {
			if cm.name == name {
				chosen = cm
				break
			}
		}
		if chosen != nil {
			break
		}
	}
	if chosen == nil {
		return nil, &Denial{c.unknownStatus, "model_not_configured", "model not available"}, true
	}
	if len(raw) > chosen.maxBytes {
		return nil, &Denial{http.StatusRequestEntityTooLarge, body.ReasonTooLarge, "request body too large"}, true
	}
	if err := schemas.Validate(chosen.schema, doc); err != nil {
		var v *schema.Violation
		if errors.As(err, &v) {
			return nil, &Denial{http.StatusBadRequest, "body_schema_violation", "request body invalid at " + v.Error()}, true
		}
		c.log.Error("schema validation failed: denied", "schema", chosen.schema, "error", err)
		return nil, &Denial{http.StatusServiceUnavailable, "schema_error", "service unavailable"}, true
	}
	facts, d := factsOf(chosen.operation, doc)
	if d != nil {
		return nil, d, true
	}
	if d := chosen.limits.check(facts); d != nil {
		return nil, d, true
	}
	return &Model{Name: chosen.name, Operation: chosen.operation, Facts: facts, Body: doc}, nil, true
}

func bodyDenial(err error) *Denial {
	var be *body.Error
	if errors.As(err, &be) {
		return &Denial{be.Status, be.Reason, be.Message}
	}
	return &Denial{http.StatusBadRequest, "body_invalid", "request body invalid"}
}

// isJSON accepts application/json and any +json type, with parameters.
// The bare type as clients send it is recognised without
// mime.ParseMediaType, which allocates a parameter map on every call (an
// exact match: strings.EqualFold would also take Unicode look-alikes such
// as the long s, which ParseMediaType refuses).
func isJSON(contentType string) bool {
	if contentType == "application/json" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

func field(doc any, name string) any {
	if o, ok := doc.(map[string]any); ok {
		return o[name]
	}
	return nil
}
