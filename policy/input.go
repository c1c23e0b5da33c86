package policy

import (
	"net/url"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/jwtauth"
	"github.com/modelguard/modelguard/policy/models"
	"github.com/modelguard/modelguard/policy/rego"
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
//	parsed_body (model requests)
//
// Only the members the policy can read (reads, from rego's analysis of its
// modules) are built: the example policy's input is four members, not
// forty values.
func (e *Engine) input(req *Request, id *Identity, m Model, mr *models.Model, reads rego.Inputs) ast.Value {
	items := make([][2]*ast.Term, 0, 6)
	if reads.Has(rego.InputGateway) {
		items = append(items, ast.Item(keyGateway, ast.StringTerm(req.Gateway)))
	}
	if reads.Any(rego.InputSubject) {
		items = append(items, ast.Item(keySubject, ast.NewTerm(subjectValue(id, reads))))
	}
	if reads.Any(rego.InputRequest) {
		items = append(items, ast.Item(keyRequest, ast.NewTerm(e.requestValue(req, reads))))
	}
	if reads.Has(rego.InputModel) && (m.Name != "" || m.Operation != "") {
		items = append(items, ast.Item(keyModel, ast.NewTerm(ast.NewObject(
			ast.Item(keyName, ast.StringTerm(m.Name)),
			ast.Item(keyOperation, ast.StringTerm(m.Operation)),
		))))
	}
	if mr != nil && !mr.Unchecked {
		if reads.Has(rego.InputBody) {
			items = append(items, ast.Item(keyBody, ast.NewTerm(factsValue(mr.Facts))))
		}
		if reads.Has(rego.InputParsedBody) {
			// Parsed bodies always convert.
			if v, err := ast.InterfaceToValue(mr.Body); err == nil {
				items = append(items, ast.Item(keyParsedBody, ast.NewTerm(v)))
			}
		}
	}
	return ast.NewObject(items...)
}

// Keys of the input document, made once: ast.InternedTerm allocates for
// strings OPA does not intern itself. Input terms are only read.
var (
	keyGateway, keySubject, keyRequest, keyModel, keyBody, keyParsedBody = ast.StringTerm("gateway"), ast.StringTerm("subject"), ast.StringTerm("request"), ast.StringTerm("model"), ast.StringTerm("body"), ast.StringTerm("parsed_body")
	keyID, keyRoles, keyAuthMethod, keyKeyID, keyIssuer, keyClaims       = ast.StringTerm("id"), ast.StringTerm("roles"), ast.StringTerm("auth_method"), ast.StringTerm("key_id"), ast.StringTerm("issuer"), ast.StringTerm("claims")
	keyMethod, keyPath, keyQuery, keyHost, keyScheme, keyHeaders         = ast.StringTerm("method"), ast.StringTerm("path"), ast.StringTerm("query"), ast.StringTerm("host"), ast.StringTerm("scheme"), ast.StringTerm("headers")
	keySourceAddress, keyTLSPrincipal, keyName, keyOperation             = ast.StringTerm("source_address"), ast.StringTerm("tls_principal"), ast.StringTerm("name"), ast.StringTerm("operation")
	keyContextExtensions, keyMetadataContext                             = ast.StringTerm("context_extensions"), ast.StringTerm("metadata_context")
	keyStream, keyMessages, keyPromptChars, keyTools, keyMaxTokens, keyN = ast.StringTerm("stream"), ast.StringTerm("messages"), ast.StringTerm("prompt_chars"), ast.StringTerm("tools"), ast.StringTerm("max_tokens"), ast.StringTerm("n")
)

// subjectValue is input.subject, with the members in reads.
func subjectValue(id *Identity, reads rego.Inputs) ast.Object {
	items := make([][2]*ast.Term, 0, 6)
	str := func(member rego.Inputs, key *ast.Term, v string) {
		if reads.Has(member) {
			items = append(items, ast.Item(key, ast.StringTerm(v)))
		}
	}
	str(rego.InputSubjectID, keyID, id.Subject)
	if reads.Has(rego.InputRoles) {
		roles := make([]*ast.Term, len(id.Roles))
		for i, r := range id.Roles {
			roles[i] = ast.StringTerm(r)
		}
		items = append(items, ast.Item(keyRoles, ast.ArrayTerm(roles...)))
	}
	str(rego.InputAuthMethod, keyAuthMethod, id.Method)
	str(rego.InputKeyID, keyKeyID, id.KeyID)
	str(rego.InputIssuer, keyIssuer, id.Issuer)
	if reads.Has(rego.InputClaims) {
		claims := id.claimsValue
		if claims == nil {
			claims = claimsObject(id.Claims)
		}
		items = append(items, ast.Item(keyClaims, ast.NewTerm(claims)))
	}
	return ast.NewObject(items...)
}

// requestValue is input.request, with the members in reads.
func (e *Engine) requestValue(req *Request, reads rego.Inputs) ast.Object {
	items := make([][2]*ast.Term, 0, 9)
	str := func(member rego.Inputs, key *ast.Term, v string) {
		if reads.Has(member) {
			items = append(items, ast.Item(key, ast.StringTerm(v)))
		}
	}
	str(rego.InputRequestID, keyID, req.ID)
	str(rego.InputMethod, keyMethod, req.Method)
	str(rego.InputPath, keyPath, req.Path)
	if reads.Has(rego.InputQuery) {
		items = append(items, ast.Item(keyQuery, ast.NewTerm(queryValue(req.Query))))
	}
	str(rego.InputHost, keyHost, req.Host)
	str(rego.InputScheme, keyScheme, req.Scheme)
	if reads.Has(rego.InputHeaders) {
		items = append(items, ast.Item(keyHeaders, ast.NewTerm(e.headersObject(req))))
	}
	str(rego.InputSourceAddress, keySourceAddress, req.SourceAddress)
	str(rego.InputTLSPrincipal, keyTLSPrincipal, req.TLSPrincipal)
	if reads.Has(rego.InputContextExtensions) && len(req.ContextExtensions) > 0 {
		items = append(items, ast.Item(keyContextExtensions, ast.NewTerm(stringsObject(req.ContextExtensions))))
	}
	if md := metadataValue(req.MetadataContext); md != nil && reads.Has(rego.InputMetadataContext) {
		items = append(items, ast.Item(keyMetadataContext, ast.NewTerm(md)))
	}
	return ast.NewObject(items...)
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
		ast.Item(keyStream, ast.InternedTerm(f.Stream)),
		ast.Item(keyMessages, ast.InternedTerm(f.Messages)),
		ast.Item(keyPromptChars, ast.InternedTerm(f.PromptChars)),
		ast.Item(keyTools, ast.ArrayTerm(tools...)),
	)
	if f.MaxTokens != 0 {
		o.Insert(keyMaxTokens, ast.InternedTerm(f.MaxTokens))
	}
	if f.N != 0 {
		o.Insert(keyN, ast.InternedTerm(f.N))
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

// queryValue turns a raw query into {name: [values]}. An unparsable query
// yields what could be parsed; the policy sees the raw path either way.
func queryValue(raw string) ast.Value {
	if raw == "" {
		return ast.NewObject()
	}
	q, _ := url.ParseQuery(raw)
	return valuesObject(q)
}
