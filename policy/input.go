package policy

import (
	"net/url"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/jwtauth"
	"github.com/modelguard/modelguard/policy/models"
)

// input builds the Rego input document directly as an ast.Value, which
// spares OPA a JSON round trip per request. Its shape is documented in
// policy/rego and the README:
//
//	gateway, subject{id, roles, auth_method, key_id, issuer, claims},
//	request{id, method, path, query, host, scheme, headers, source_address, tls_principal,
//	        context_extensions, metadata_context (Envoy, when set)},
//	model{name, operation} (only when known)
//	body{max_tokens, stream, n, messages, prompt_chars, tools} (model requests)
//	parsed_body (model requests, only for policies that read it)
func (e *Engine) input(req *Request, id *Identity, m Model, mr *models.Model, parsedBody bool) ast.Value {
	roles := make([]*ast.Term, len(id.Roles))
	for i, r := range id.Roles {
		roles[i] = ast.StringTerm(r)
	}
	claims := id.claimsValue
	if claims == nil {
		claims = claimsObject(id.Claims)
	}
	subject := ast.NewObject(
		ast.Item(ast.InternedTerm("id"), ast.StringTerm(id.Subject)),
		ast.Item(ast.InternedTerm("roles"), ast.ArrayTerm(roles...)),
		ast.Item(ast.InternedTerm("auth_method"), ast.StringTerm(id.Method)),
		ast.Item(ast.InternedTerm("key_id"), ast.StringTerm(id.KeyID)),
		ast.Item(ast.InternedTerm("issuer"), ast.StringTerm(id.Issuer)),
		ast.Item(ast.InternedTerm("claims"), ast.NewTerm(claims)),
	)

	request := ast.NewObject(
		ast.Item(ast.InternedTerm("id"), ast.StringTerm(req.ID)),
		ast.Item(ast.InternedTerm("method"), ast.StringTerm(req.Method)),
		ast.Item(ast.InternedTerm("path"), ast.StringTerm(req.Path)),
		ast.Item(ast.InternedTerm("query"), ast.NewTerm(queryValue(req.Query))),
		ast.Item(ast.InternedTerm("host"), ast.StringTerm(req.Host)),
		ast.Item(ast.InternedTerm("scheme"), ast.StringTerm(req.Scheme)),
		ast.Item(ast.InternedTerm("headers"), ast.NewTerm(e.headersObject(req))),
		ast.Item(ast.InternedTerm("source_address"), ast.StringTerm(req.SourceAddress)),
		ast.Item(ast.InternedTerm("tls_principal"), ast.StringTerm(req.TLSPrincipal)),
	)
	if len(req.ContextExtensions) > 0 {
		request.Insert(ast.InternedTerm("context_extensions"), ast.NewTerm(stringsObject(req.ContextExtensions)))
	}
	if md := metadataValue(req.MetadataContext); md != nil {
		request.Insert(ast.InternedTerm("metadata_context"), ast.NewTerm(md))
	}

	items := [][2]*ast.Term{
		ast.Item(ast.InternedTerm("gateway"), ast.StringTerm(req.Gateway)),
		ast.Item(ast.InternedTerm("subject"), ast.NewTerm(subject)),
		ast.Item(ast.InternedTerm("request"), ast.NewTerm(request)),
	}
	if m.Name != "" || m.Operation != "" {
		items = append(items, ast.Item(ast.InternedTerm("model"), ast.NewTerm(ast.NewObject(
			ast.Item(ast.InternedTerm("name"), ast.StringTerm(m.Name)),
			ast.Item(ast.InternedTerm("operation"), ast.StringTerm(m.Operation)),
		))))
	}
	if mr != nil {
		items = append(items, ast.Item(ast.InternedTerm("body"), ast.NewTerm(factsValue(mr.Facts))))
		if parsedBody {
			// Converted only when the policy reads it: a large prompt costs
			// nothing otherwise. Parsed bodies always convert.
			if v, err := ast.InterfaceToValue(mr.Body); err == nil {
				items = append(items, ast.Item(ast.InternedTerm("parsed_body"), ast.NewTerm(v)))
			}
		}
	}
	return ast.NewObject(items...)
}

// claimsObject converts JWT claims to the input's subject.claims; nil or
// unconvertible claims give an empty object.
func claimsObject(claims map[string]any) ast.Object {
	if claims != nil {
		if v, err := ast.InterfaceToValue(claims); err == nil {
			if o, ok := v.(ast.Object); ok {
				return o
			}
		}
	}
	return ast.NewObject()
}

// identityClaims is claimsObject for a verified token's identity, kept with
// it (jwtauth.Identity.Memo): the verified-token cache hands the same
// identity to every request bearing the token, and the policy only reads
// its input.
func identityClaims(id *jwtauth.Identity) any { return claimsObject(id.Claims) }

// factsValue is the body facts object; absent values are left out.
func factsValue(f models.Facts) ast.Object {
	tools := make([]*ast.Term, len(f.Tools))
	for i, t := range f.Tools {
		tools[i] = ast.StringTerm(t)
	}
	o := ast.NewObject(
		ast.Item(ast.InternedTerm("stream"), ast.InternedTerm(f.Stream)),
		ast.Item(ast.InternedTerm("messages"), ast.InternedTerm(f.Messages)),
		ast.Item(ast.InternedTerm("prompt_chars"), ast.InternedTerm(f.PromptChars)),
		ast.Item(ast.InternedTerm("tools"), ast.ArrayTerm(tools...)),
	)
	if f.MaxTokens != 0 {
		o.Insert(ast.InternedTerm("max_tokens"), ast.InternedTerm(f.MaxTokens))
	}
	if f.N != 0 {
		o.Insert(ast.InternedTerm("n"), ast.InternedTerm(f.N))
	}
	return o
}

// isCredentialHeader reports headers that carry credentials a built-in
// authenticator reads, which then never reach the policy (it could log or
// echo them). With none configured and allow_anonymous, modelguard reads
// no credential and a policy that verifies tokens itself sees them all.
func (e *Engine) isCredentialHeader(name string) bool {
	if e.anonymous && !e.authenticates() {
		return false
	}
	switch name {
	case "authorization", "proxy-authorization", "cookie":
		return true
	}
	return name == e.apiKeyHeader
}

// headersObject is the request's headers for the policy: pseudo-headers
// and credentials (isCredentialHeader) left out.
func (e *Engine) headersObject(req *Request) ast.Object {
	headers := make([][2]*ast.Term, 0, len(req.Headers))
	for k, v := range req.Headers {
		if strings.HasPrefix(k, ":") || e.isCredentialHeader(k) {
			continue
		}
		headers = append(headers, ast.Item(ast.StringTerm(k), ast.StringTerm(v)))
	}
	return ast.NewObject(headers...)
}

// queryValue turns a raw query into {name: [values]}. An unparsable query
// yields what could be parsed; the policy sees the raw path either way.
func queryValue(raw string) ast.Value {
	if raw == "" {
		return ast.NewObject()
	}
	q, _ := url.ParseQuery(raw)
	return valuesObject(q)
}
