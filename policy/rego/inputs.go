package rego

import "github.com/open-policy-agent/opa/v1/ast"

// Inputs is a set of optional input members: those a policy reads are
// built (or fetched from the gateway) for it, the others are left empty.
type Inputs uint8

const (
	// InputParsedBody is input.parsed_body, the whole parsed body (with
	// input opa-envoy also input.truncated_body).
	InputParsedBody Inputs = 1 << iota
	// InputQuery is input.request.query (opa-envoy: the query string in
	// input.attributes.request.http.path, and input.parsed_query).
	InputQuery
	// InputScheme is input.request.scheme.
	InputScheme
	// InputSourceAddress is input.request.source_address.
	InputSourceAddress
	// InputRawBody is input.attributes.request.http.rawBody (opa-envoy).
	InputRawBody
	// InputModelguardFacts is input.modelguard, modelguard's own input beside
	// opa-envoy-plugin's (opa-envoy).
	InputModelguardFacts
)

// Has reports whether every member of x is in i.
func (i Inputs) Has(x Inputs) bool { return i&x == x }

type optionalInput struct {
	member Inputs
	ref    ast.Ref
}

// optionalInputs lists, per input shape, where each optional member sits.
var optionalInputs = map[string][]optionalInput{
	ShapeModelguard: {
		{InputParsedBody, ast.MustParseRef("input.parsed_body")},
		{InputQuery, ast.MustParseRef("input.request.query")},
		{InputScheme, ast.MustParseRef("input.request.scheme")},
		{InputSourceAddress, ast.MustParseRef("input.request.source_address")},
	},
	ShapeOPAEnvoy: {
		{InputParsedBody, ast.MustParseRef("input.parsed_body")},
		{InputParsedBody, ast.MustParseRef("input.truncated_body")},
		{InputQuery, ast.MustParseRef("input.attributes.request.http.path")},
		{InputQuery, ast.MustParseRef("input.parsed_query")},
		{InputScheme, ast.MustParseRef("input.attributes.request.http.scheme")},
		{InputSourceAddress, ast.MustParseRef("input.attributes.source.address")},
		{InputRawBody, ast.MustParseRef("input.attributes.request.http.rawBody")},
		{InputModelguardFacts, ast.MustParseRef("input.modelguard")},
		{InputQuery, ast.MustParseRef("input.modelguard.request.query")},
		{InputScheme, ast.MustParseRef("input.modelguard.request.scheme")},
		{InputSourceAddress, ast.MustParseRef("input.modelguard.request.source_address")},
	},
}

// readInputs returns the optional members some rule of modules, as parsed
// (the compiler rewrites object.get's argument into a variable), may read: a
// reference to the member or inside it, to an object holding it (input,
// input.request), or through a computed key on the way to it.
// object.get(input..., path, default) with a constant path reads only at
// that path, as the example policy's object.get(input, ["subject",
// "roles"], []) does. An import of input counts as a read of what it
// names.
func readInputs(modules map[string]*ast.Module, shape string) Inputs {
	var in Inputs
	read := func(r ast.Ref) {
		for _, o := range optionalInputs[shape] {
			if reaches(r, o.ref) {
				in |= o.member
			}
		}
	}
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		var op *ast.Term
		var args []*ast.Term
		switch v := x.(type) {
		case ast.Ref:
			if v[0].Equal(ast.InputRootDocument) {
				read(v)
			}
			return false
		case ast.Call:
			op, args = v[0], v[1:]
		case *ast.Expr:
			if !v.IsCall() {
				return false
			}
			terms := v.Terms.([]*ast.Term)
			op, args = terms[0], terms[1:]
		default:
			return false
		}
		r, ok := objectGet(op, args)
		if !ok {
			return false
		}
		read(r)
		for _, a := range args[2:] {
			vis.Walk(a)
		}
		return true
	})
	for _, m := range modules {
		vis.Walk(m)
	}
	return in
}

var objectGetRef = ast.MustParseRef("object.get")

// objectGet returns the reference object.get(x, path, ...) reads when x is
// a reference into input and path a constant (a key, or an array of keys).
func objectGet(op *ast.Term, args []*ast.Term) (ast.Ref, bool) {
	if r, ok := op.Value.(ast.Ref); !ok || !r.Equal(objectGetRef) || len(args) < 3 {
		return nil, false
	}
	base, ok := args[0].Value.(ast.Ref)
	if !ok || !base[0].Equal(ast.InputRootDocument) || !base.IsGround() || !args[1].IsGround() {
		return nil, false
	}
	out := base.Copy()
	if path, ok := args[1].Value.(*ast.Array); ok {
		path.Foreach(func(t *ast.Term) { out = append(out, t) })
		return out, true
	}
	return append(out, args[1]), true
}

// reaches reports whether reading r may read target: both start at input
// and agree on every term they share, a computed term agreeing with any.
func reaches(r, target ast.Ref) bool {
	for i := 1; i < len(r) && i < len(target); i++ {
		if !r[i].IsGround() {
			return true
		}
		if !r[i].Equal(target[i]) {
			return false
		}
	}
	return true
}
