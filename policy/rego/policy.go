package rego

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/metrics"
	oparego "github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown/print"
	"go.yaml.in/yaml/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/modelguard/modelguard/policy/yamlerr"
)

// ReasonUndefined is the reason of a denial because the query was undefined.
const ReasonUndefined = "policy_undefined"

// Result is a policy decision.
type Result struct {
	Allow bool
	// Status is the deny status from the policy (400..599), 0 when not set
	// or when allowed.
	Status int
	// Reason is an operator-facing code, "" when not set.
	Reason string
	// Message is safe to show the client, "" when not set.
	Message string
	// Headers are set on the upstream request when allowed; names are
	// lower-case.
	Headers map[string]string
	// ResponseHeaders are set on the response to the client; names are
	// lower-case.
	ResponseHeaders map[string]string
	// RateLimitClass picks the rate limit rules that name this class
	// (match.classes); "" when not set.
	RateLimitClass string
	// RemoveHeaders are removed from the upstream request when allowed
	// (opa-envoy-plugin's request_headers_to_remove); lower-case.
	RemoveHeaders []string
	// Body, when not nil, replaces the JSON error body of a denial
	// (opa-envoy-plugin's body).
	Body []byte
	// DynamicMetadata is opa-envoy-plugin's dynamic_metadata: a JSON
	// object the gateway keeps with the request (Envoy's dynamic metadata).
	DynamicMetadata map[string]any
	// Revision is the revision of the policy that decided.
	Revision string
}

// Policy is one compiled revision of a policy directory, ready to evaluate.
// It is immutable and safe for concurrent use.
type Policy struct {
	query    oparego.PreparedEvalQuery
	revision string
	// reads are what the policy may read of input.
	reads reads
	// cache keeps its decisions; nil when they are not cached. Set by the
	// Engine before the policy decides, never after.
	cache *decisionCache
}

// Compile loads the policy in dir (tests excluded), compiles it and prepares
// query ("" means DefaultQuery) for evaluation with modelguard's input.
func Compile(ctx context.Context, dir, query string) (*Policy, error) {
	return CompileFor(ctx, dir, query, ShapeModelguard)
}

// CompileFor is Compile for policies that read the input shape input
// (ShapeModelguard or ShapeOPAEnvoy); "" query is that shape's default.
func CompileFor(ctx context.Context, dir, query, input string) (*Policy, error) {
	snap, err := readPolicyDir(dir, false)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", dir, err)
	}
	c, err := snap.content(dir)
	if err != nil {
		return nil, err
	}
	return compile(ctx, c, DefaultSettingsFor(input).orQuery(query), input, nil)
}

// content is one revision of a policy, from a directory or a bundle: its
// parsed modules and its data, ready to compile.
type content struct {
	source   string // the directory or bundle URL, for messages
	revision string
	modules  map[string]*ast.Module
	data     map[string]any
}

// compile compiles c for query and the input shape; print() output goes
// to hook (nil discards it).
func compile(ctx context.Context, c content, query, shape string, hook print.Hook) (*Policy, error) {
	ref, err := parseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	if len(c.modules) == 0 {
		return nil, fmt.Errorf("policy %s: no .rego files", c.source)
	}
	reads := readsOf(c.modules, shape)
	if hook == nil {
		hook = discardPrints{}
	}
	// print() calls are kept (not erased) so that policy authors see their
	// output in the operator log and in check.
	compiler := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1).WithEnablePrintStatements(true)
	if compiler.Compile(c.modules); compiler.Failed() {
		return nil, fmt.Errorf("policy %s: %w", c.source, compiler.Errors)
	}
	// A query naming nothing would deny every request as undefined; refuse
	// the policy instead (a renamed package or rule, a typo in the query).
	if len(compiler.GetRules(ref)) == 0 {
		return nil, fmt.Errorf("policy %s: query %s %w", c.source, query, errNoRule)
	}
	// AST values on read: data is converted once here, not on every request.
	store := inmem.NewFromObjectWithOpts(c.data, inmem.OptReturnASTValuesOnRead(true))
	prepared, err := oparego.New(
		oparego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
		oparego.Compiler(compiler),
		oparego.Store(store),
		oparego.SetRegoVersion(ast.RegoV1),
		// A builtin error (say, a regex that does not compile) is an
		// evaluation error rather than an undefined expression, so that a
		// failing "deny" helper cannot turn into an allow.
		oparego.StrictBuiltinErrors(true),
		// Keep results as AST: decode reads them without a JSON round trip.
		oparego.GenerateJSON(keepAST),
		oparego.EnablePrintStatements(true),
		oparego.PrintHook(hook),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy %s: prepare %s: %w", c.source, query, err)
	}
	return &Policy{query: prepared, revision: c.revision, reads: reads}, nil
}

// ParsedBody reports whether the policy reads input.parsed_body.
func (p *Policy) ParsedBody() bool { return p.reads.inputs.Has(InputParsedBody) }

// Inputs are the optional input members the policy reads.
func (p *Policy) Inputs() Inputs { return p.reads.inputs }

// Cacheable reports whether the policy's decisions may be cached, and if
// not, why (say, "calls time.now_ns").
func (p *Policy) Cacheable() (bool, string) { return p.reads.uncacheable == "", p.reads.uncacheable }

// errNoRule is a query that names no rule of the policy: the mistake is in
// the query setting, not in the policy directory.
var errNoRule = errors.New("names no rule")

// load parses the snapshot's modules and data with OPA's loader.
func load(snap *snapshot) (*loader.Result, error) {
	res, err := loader.NewFileLoader().
		WithFS(snap.files).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true).
		All([]string{"."})
	if err != nil {
		if located := yamlDataError(snap); located != nil {
			return nil, located
		}
	}
	return res, err
}

// yamlDataError is the first YAML data file's syntax error as
// "name:line: message", on the line of the mistake: OPA's loader reports
// yaml.v3's line, often one before it (see yamlerr). Nil when every YAML
// file parses.
func yamlDataError(snap *snapshot) error {
	names := slices.Sorted(maps.Keys(snap.files))
	for _, name := range names {
		if ext := path.Ext(name); ext != ".yaml" && ext != ".yml" {
			continue
		}
		data := snap.files[name].Data
		var v any
		if err := yaml.Unmarshal(data, &v); err != nil {
			if line, msg, ok := yamlerr.Locate(data, err); ok {
				return fmt.Errorf("%s:%d: %s", name, line, msg)
			}
		}
	}
	return nil
}

// content loads the snapshot of the policy directory dir.
func (s *snapshot) content(dir string) (content, error) {
	loaded, err := load(s)
	if err != nil {
		return content{}, fmt.Errorf("policy %s: %w", dir, err)
	}
	return content{source: dir, revision: s.revision(), modules: loaded.ParsedModules(), data: loaded.Documents}, nil
}

// parseQuery accepts a ground reference into data, the only kind of query
// whose rules can be checked to exist at compile time.
func parseQuery(query string) (ast.Ref, error) {
	ref, err := ast.ParseRef(query)
	if err != nil || !ref.HasPrefix(ast.DefaultRootRef) || len(ref) < 2 || !ref.IsGround() {
		return nil, fmt.Errorf("%q is not a Rego reference starting with data., such as %s", query, DefaultQuery)
	}
	return ref, nil
}

func keepAST(t *ast.Term, _ *oparego.EvalContext) (any, error) { return t, nil }

// Revision identifies the policy's content.
func (p *Policy) Revision() string { return p.revision }

// Eval decides on input. It never returns Allow with an error; on error the
// caller must deny. It stops when ctx ends.
func (p *Policy) Eval(ctx context.Context, input ast.Value) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{Revision: p.revision}, fmt.Errorf("policy %s: %w", p.revision, err)
	}
	// NoOp metrics: OPA otherwise allocates a metrics set per evaluation.
	opts := []oparego.EvalOption{oparego.EvalParsedInput(input), oparego.EvalMetrics(metrics.NoOp())}
	if t := tracerFrom(ctx); t != nil {
		opts = append(opts, oparego.EvalQueryTracer(t))
	}
	rs, err := p.query.Eval(ctx, opts...)
	if err != nil {
		return Result{Revision: p.revision}, fmt.Errorf("policy %s: evaluate: %w", p.revision, err)
	}
	switch {
	case len(rs) == 0:
		return Result{Reason: ReasonUndefined, Revision: p.revision}, nil
	case len(rs) > 1:
		return Result{Revision: p.revision}, fmt.Errorf("policy %s: query gave %d results, want one", p.revision, len(rs))
	case len(rs[0].Expressions) != 1:
		return Result{Revision: p.revision}, fmt.Errorf("policy %s: query gave %d expressions, want one", p.revision, len(rs[0].Expressions))
	}
	t, ok := rs[0].Expressions[0].Value.(*ast.Term)
	if !ok {
		return Result{Revision: p.revision}, fmt.Errorf("policy %s: result is %T, want an AST term", p.revision, rs[0].Expressions[0].Value)
	}
	r, err := decode(t.Value)
	if err != nil {
		return Result{Revision: p.revision}, fmt.Errorf("policy %s: %w", p.revision, err)
	}
	r.Revision = p.revision
	return r, nil
}

// Keys of the object form of a result.
const (
	keyAllow           ast.String = "allow"
	keyStatus          ast.String = "status"
	keyReason          ast.String = "reason"
	keyMessage         ast.String = "message"
	keyHeaders         ast.String = "headers"
	keyResponseHeaders ast.String = "response_headers"
	keyRateLimitClass  ast.String = "rate_limit_class"
)

// decode interprets a query result: a boolean or an object (see the package
// documentation). Anything else is an error.
func decode(v ast.Value) (Result, error) {
	switch v := v.(type) {
	case ast.Boolean:
		return Result{Allow: bool(v)}, nil
	case ast.Object:
		if v.Get(allowedTerm) != nil {
			return decodeOPAEnvoy(v)
		}
		return decodeObject(v)
	}
	return Result{}, fmt.Errorf("result is %s, want a boolean or an object", ast.ValueName(v))
}

func decodeObject(obj ast.Object) (Result, error) {
	var (
		r        Result
		hasAllow bool
		allow    bool
	)
	err := resultMembers(obj, func(key ast.String, k, v *ast.Term) error {
		var err error
		switch key {
		case keyAllow:
			b, ok := v.Value.(ast.Boolean)
			if !ok {
				return fmt.Errorf("result allow is %s, want a boolean", ast.ValueName(v.Value))
			}
			hasAllow, allow = true, bool(b)
		case keyStatus:
			r.Status, err = decodeStatus(v.Value)
		case keyReason:
			r.Reason, err = decodeString(key, v.Value)
		case keyMessage:
			r.Message, err = decodeString(key, v.Value)
		case keyHeaders:
			r.Headers, err = decodeHeaders(key, v.Value)
		case keyResponseHeaders:
			r.ResponseHeaders, err = decodeHeaders(key, v.Value)
		case keyRateLimitClass:
			r.RateLimitClass, err = decodeString(key, v.Value)
		default:
			// Strict, so that a misspelt key fails loudly instead of
			// silently dropping a header or status.
			return fmt.Errorf("result has unknown key %s", k)
		}
		return err
	})
	if err != nil {
		return Result{}, err
	}
	if !hasAllow {
		return Result{}, errors.New("result has no allow")
	}
	r.Allow = allow
	if allow {
		r.Status = 0
	}
	return r, nil
}

func decodeStatus(v ast.Value) (int, error) {
	n, ok := v.(ast.Number)
	if !ok {
		return 0, fmt.Errorf("result status is %s, want a number", ast.ValueName(v))
	}
	status, ok := n.Int()
	if !ok || status < 400 || status > 599 {
		return 0, fmt.Errorf("result status %s, want an integer in 400..599", n)
	}
	return status, nil
}

func decodeString(key ast.String, v ast.Value) (string, error) {
	s, ok := v.(ast.String)
	if !ok {
		return "", fmt.Errorf("result %s is %s, want a string", string(key), ast.ValueName(v))
	}
	return string(s), nil
}

// decodeHeaders reads an object of header names to values. Names are
// lower-cased; invalid names or values (CR, LF, NUL that could split a
// header) are errors rather than something a gateway might forward.
func decodeHeaders(key ast.String, v ast.Value) (map[string]string, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("result %s is %s, want an object", string(key), ast.ValueName(v))
	}
	if obj.Len() == 0 {
		return nil, nil
	}
	h := make(map[string]string, obj.Len())
	err := obj.Iter(func(k, v *ast.Term) error {
		lower, err := headerName(key, k)
		if err != nil {
			return err
		}
		value, ok := v.Value.(ast.String)
		if !ok || !httpguts.ValidHeaderFieldValue(string(value)) {
			return fmt.Errorf("result %s[%s] is not a valid header value", string(key), k)
		}
		if _, dup := h[lower]; dup {
			return fmt.Errorf("result %s sets %s twice", string(key), lower)
		}
		h[lower] = string(value)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}

// headerName reads a header name of the result's key, lower-cased; one
// that is not a valid field name (a pseudo-header, a space) is an error.
func headerName(key ast.String, k *ast.Term) (string, error) {
	name, ok := k.Value.(ast.String)
	if !ok || !httpguts.ValidHeaderFieldName(string(name)) {
		return "", fmt.Errorf("result %s has invalid header name %s", string(key), k)
	}
	return strings.ToLower(string(name)), nil
}

// resultMembers calls f for each member of a result object, whose keys
// must be strings.
func resultMembers(obj ast.Object, f func(key ast.String, k, v *ast.Term) error) error {
	return obj.Iter(func(k, v *ast.Term) error {
		key, ok := k.Value.(ast.String)
		if !ok {
			return fmt.Errorf("result has a %s key, want strings", ast.ValueName(k.Value))
		}
		return f(key, k, v)
	})
}
