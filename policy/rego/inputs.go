package rego

import (
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/rego/inputdoc"
)

// Inputs is a set of input members: those a policy may read are built (or
// fetched from the gateway) for it, the others are left out, so that a
// request costs only what its policy can see.
type Inputs uint32

const (
	// InputParsedBody is input.parsed_body, the whole parsed body (with
	// input opa-envoy also input.truncated_body).
	InputParsedBody Inputs = 1 << iota
	// InputQuery is input.request.query (opa-envoy: also the query string
	// in input.attributes.request.http.path, and input.parsed_query).
	InputQuery
	// InputScheme is input.request.scheme.
	InputScheme
	// InputSourceAddress is input.request.source_address.
	InputSourceAddress
	// InputHeaders is input.request.headers.
	InputHeaders
	// InputGateway is input.gateway.
	InputGateway
	// InputSubjectID is input.subject.id.
	InputSubjectID
	// InputRoles is input.subject.roles.
	InputRoles
	// InputAuthMethod is input.subject.auth_method.
	InputAuthMethod
	// InputKeyID is input.subject.key_id.
	InputKeyID
	// InputIssuer is input.subject.issuer.
	InputIssuer
	// InputClaims is input.subject.claims.
	InputClaims
	// InputRequestID is input.request.id.
	InputRequestID
	// InputMethod is input.request.method.
	InputMethod
	// InputPath is input.request.path.
	InputPath
	// InputHost is input.request.host.
	InputHost
	// InputTLSPrincipal is input.request.tls_principal.
	InputTLSPrincipal
	// InputModel is input.model.
	InputModel
	// InputBody is input.body, the body's facts.
	InputBody
	// InputContextExtensions is input.request.context_extensions.
	InputContextExtensions
	// InputMetadataContext is input.request.metadata_context.
	InputMetadataContext
	// InputRawBody is input.attributes.request.http.rawBody (opa-envoy).
	InputRawBody
	// InputModelguardFacts is input.modelguard, modelguard's own input
	// beside opa-envoy-plugin's (opa-envoy); its members are the ones
	// above, read under input.modelguard.
	InputModelguardFacts

	// AllInputs are every member.
	AllInputs = InputModelguardFacts<<1 - 1
	// InputSubject are the members of input.subject.
	InputSubject = InputSubjectID | InputRoles | InputAuthMethod | InputKeyID | InputIssuer | InputClaims
	// InputRequest are the members of input.request.
	InputRequest = InputRequestID | InputMethod | InputPath | InputQuery | InputHost | InputScheme | InputHeaders | InputSourceAddress | InputTLSPrincipal |
		InputContextExtensions | InputMetadataContext
)

// Has reports whether every member of x is in i.
func (i Inputs) Has(x Inputs) bool { return i&x == x }

// Any reports whether some member of x is in i.
func (i Inputs) Any(x Inputs) bool { return i&x != 0 }

type inputMember struct {
	member Inputs
	ref    ast.Ref
}

// modelguardMembers are where the members sit in modelguard's input.
var modelguardMembers = []inputMember{
	{InputParsedBody, ast.MustParseRef("input.parsed_body")},
	{InputQuery, ast.MustParseRef("input.request.query")},
	{InputScheme, ast.MustParseRef("input.request.scheme")},
	{InputSourceAddress, ast.MustParseRef("input.request.source_address")},
	{InputHeaders, ast.MustParseRef("input.request.headers")},
	{InputGateway, ast.MustParseRef("input.gateway")},
	{InputSubjectID, ast.MustParseRef("input.subject.id")},
	{InputRoles, ast.MustParseRef("input.subject.roles")},
	{InputAuthMethod, ast.MustParseRef("input.subject.auth_method")},
	{InputKeyID, ast.MustParseRef("input.subject.key_id")},
	{InputIssuer, ast.MustParseRef("input.subject.issuer")},
	{InputClaims, ast.MustParseRef("input.subject.claims")},
	{InputRequestID, ast.MustParseRef("input.request.id")},
	{InputMethod, ast.MustParseRef("input.request.method")},
	{InputPath, ast.MustParseRef("input.request.path")},
	{InputHost, ast.MustParseRef("input.request.host")},
	{InputTLSPrincipal, ast.MustParseRef("input.request.tls_principal")},
	{InputContextExtensions, ast.MustParseRef("input.request.context_extensions")},
	{InputMetadataContext, ast.MustParseRef("input.request.metadata_context")},
	{InputModel, ast.MustParseRef("input.model")},
	{InputBody, ast.MustParseRef("input.body")},
}

// modelguardKey is where opa-envoy's input holds modelguard's.
var modelguardKey = ast.MustParseRef("input.modelguard")

// inputMembers are where the members sit in each input shape. In
// opa-envoy-plugin's, members of its own come first; modelguard's own
// input sits under input.modelguard (its parsed_body is the top-level
// one), so its members are found there.
var inputMembers = map[string][]inputMember{
	ShapeModelguard: modelguardMembers,
	ShapeOPAEnvoy: func() []inputMember {
		ms := []inputMember{
			{InputParsedBody, ast.MustParseRef("input.parsed_body")},
			{InputParsedBody, ast.MustParseRef("input.truncated_body")},
			{InputQuery, ast.MustParseRef("input.attributes.request.http.path")},
			{InputQuery, ast.MustParseRef("input.parsed_query")},
			{InputScheme, ast.MustParseRef("input.attributes.request.http.scheme")},
			{InputSourceAddress, ast.MustParseRef("input.attributes.source.address")},
			{InputTLSPrincipal, ast.MustParseRef("input.attributes.source.principal")},
			{InputRawBody, ast.MustParseRef("input.attributes.request.http.rawBody")},
			{InputModelguardFacts, modelguardKey},
		}
		for _, m := range modelguardMembers {
			if m.member != InputParsedBody {
				ms = append(ms, inputMember{m.member, append(modelguardKey.Copy(), m.ref[1:]...)})
			}
		}
		return ms
	}(),
}

// requestIDs are unique to each request, per input shape: a policy
// reading one has no repeat decisions to cache.
var requestIDs = map[string]ast.Ref{
	ShapeModelguard: ast.MustParseRef("input.request.id"),
	ShapeOPAEnvoy:   ast.MustParseRef("input.modelguard.request.id"),
}

// impure are built-ins whose result depends on more than their arguments
// (the clock, the environment) or that have an effect (output), beyond
// those OPA marks non-deterministic (time.now_ns, http.send, rand.intn,
// uuid.rfc4122, opa.runtime, net.lookup_ip_addr, io.jwt.decode_verify and
// io.jwt.encode_sign*, json.verify_schema and json.match_schema). A policy
// calling any of them is never cached.
var impure = map[string]bool{
	// Verify against the current time unless the options give one.
	ast.CryptoX509ParseAndVerifyCertificates.Name:            true,
	ast.CryptoX509ParseAndVerifyCertificatesWithOptions.Name: true,
	// Print and trace output is observable per evaluation.
	ast.Print.Name:         true,
	ast.InternalPrint.Name: true,
	ast.Trace.Name:         true,
}

// reads is what a policy's modules may read of input, and whether its
// decisions may be cached.
type reads struct {
	// inputs are the members some rule may read.
	inputs Inputs
	// paths are the constant paths into input whose values, subtrees
	// included, are all the policy can read: for each reference into input,
	// its longest prefix of constant string keys. None is a prefix of
	// another; sorted.
	paths []ast.Ref
	// uncacheable says why the policy's decisions may not be cached, ""
	// when they may.
	uncacheable string
}

// readsOf analyses modules as parsed (the compiler rewrites object.get's
// argument into a variable, which would read as all of input). It is
// conservative: a reference to input with a computed key reads the whole
// subtree before that key, input passed whole to a function (walk,
// json.marshal, ...) reads all of it, and an import of input reads what it
// names. object.get(input..., path, default) with a constant path reads
// only at that path, as the example policy's object.get(input, ["subject",
// "roles"], []) does. A "with" modifier (which replaces input, data or a
// built-in for part of the evaluation) or a call to a non-deterministic
// built-in makes the decisions uncacheable.
//
// shape is the input's (Settings.Input): it says where the members sit.
func readsOf(modules map[string]*ast.Module, shape string) reads {
	var r reads
	var all []ast.Ref
	uncacheable := func(why string) {
		if r.uncacheable == "" {
			r.uncacheable = why
		}
	}
	call := func(op *ast.Term) {
		ref, ok := op.Value.(ast.Ref)
		if !ok {
			return
		}
		name := ref.String()
		if b, ok := ast.BuiltinMap[name]; ok && (b.IsNondeterministic() || impure[name]) {
			uncacheable("calls " + name)
		}
	}
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		var op *ast.Term
		var args []*ast.Term
		switch v := x.(type) {
		case ast.Ref:
			if v[0].Equal(ast.InputRootDocument) {
				all = append(all, constantPrefix(v))
			}
			return false
		case ast.Call:
			op, args = v[0], v[1:]
			call(op)
		case *ast.Expr:
			if len(v.With) > 0 {
				uncacheable("uses with")
			}
			if !v.IsCall() {
				return false
			}
			terms := v.Terms.([]*ast.Term)
			op, args = terms[0], terms[1:]
			call(op)
			if p, ok := objectGet(op, args); ok {
				all = append(all, p)
				for _, a := range args[2:] {
					vis.Walk(a)
				}
				for _, w := range v.With {
					vis.Walk(w)
				}
				return true
			}
			return false
		default:
			return false
		}
		p, ok := objectGet(op, args)
		if !ok {
			return false
		}
		all = append(all, p)
		for _, a := range args[2:] {
			vis.Walk(a)
		}
		return true
	})
	for _, m := range modules {
		vis.Walk(m)
	}
	r.paths = inputdoc.Minimal(all)
	r.inputs = InputsAt(r.paths, shape)
	for _, p := range r.paths {
		if requestIDs[shape].HasPrefix(p) {
			uncacheable("reads input.request.id")
		}
	}
	return r
}

// InputsAt are the members of the input shape (Settings.Input) a policy
// reading paths needs: those on a path, and those a path leads into.
func InputsAt(paths []ast.Ref, shape string) Inputs {
	var in Inputs
	for _, p := range paths {
		for _, o := range inputMembers[shape] {
			if p.HasPrefix(o.ref) || o.ref.HasPrefix(p) {
				in |= o.member
			}
		}
	}
	return in
}

// constantPrefix is r up to its first key that is not a constant string.
func constantPrefix(r ast.Ref) ast.Ref {
	for i := 1; i < len(r); i++ {
		if _, ok := r[i].Value.(ast.String); !ok {
			return r[:i]
		}
	}
	return r
}

var objectGetRef = ast.MustParseRef("object.get")

// objectGet returns the path object.get(x, path, ...) reads when x is a
// constant path into input and path a constant key or array of keys.
func objectGet(op *ast.Term, args []*ast.Term) (ast.Ref, bool) {
	if r, ok := op.Value.(ast.Ref); !ok || !r.Equal(objectGetRef) || len(args) < 3 {
		return nil, false
	}
	base, ok := args[0].Value.(ast.Ref)
	if !ok || !base[0].Equal(ast.InputRootDocument) || len(constantPrefix(base)) != len(base) {
		return nil, false
	}
	out := base.Copy()
	switch path := args[1].Value.(type) {
	case ast.String:
		return append(out, args[1]), true
	case *ast.Array:
		constant := true
		path.Foreach(func(t *ast.Term) {
			_, ok := t.Value.(ast.String)
			constant = constant && ok
			out = append(out, t)
		})
		return out, constant
	}
	return nil, false
}
