package policy

import (
	"net/url"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/jwtauth"
	"github.com/modelguard/modelguard/policy/models"
	"github.com/modelguard/modelguard/policy/rego"
	"github.com/modelguard/modelguard/policy/rego/inputdoc"
)

// policyInput is a request's input document (rego.Input), written once
// for the decision cache's key and, when the policy evaluates, once to be
// built as Rego values (which spares OPA a JSON round trip per request).
// Its shape is documented in policy/rego and the README:
//
//	gateway, subject{id, roles, auth_method, key_id, issuer, claims},
//	request{id, method, path, query, host, scheme, headers, source_address, tls_principal,
//	        context_extensions, metadata_context (Envoy, when set)},
//	model{name, operation} (only when known)
//	body{max_tokens, stream, n, messages, prompt_chars, tools} (model requests)
//	parsed_body (model requests)
//
// or opa-envoy-plugin's (opaenvoy.go). Only the members the policy can
// read (reads, from rego's analysis of its modules) are written: the
// example policy's input is four members, not forty values.
type policyInput struct {
	e     *Engine
	req   *Request
	id    *Identity
	model Model
	mr    *models.Model
	// reads are the members last written: the policy's and the shadow
	// policy's.
	reads rego.Inputs
	// err is why the request has no input: a part the gateway could not
	// hand over, or a request opa-envoy-plugin refuses.
	err error
}

func (in *policyInput) WriteInput(w inputdoc.Writer, reads rego.Inputs) error {
	// A shadow policy decides on the same input, so it holds what either
	// policy reads.
	reads |= in.e.shadow.reads()
	in.reads = reads
	if in.err = in.req.Complete(in.e.inputParts(reads)); in.err != nil {
		return in.err
	}
	if in.e.opaEnvoy {
		in.err = in.e.writeOPAEnvoyInput(w, in.req, in.id, in.model, in.mr, reads)
		return in.err
	}
	in.e.writeInput(w, in.req, in.id, in.model, in.mr, reads)
	return nil
}

// writeInput writes modelguard's input document.
func (e *Engine) writeInput(w inputdoc.Writer, req *Request, id *Identity, m Model, mr *models.Model, reads rego.Inputs) {
	if reads.Has(rego.InputGateway) {
		w.String(keyGateway, req.Gateway)
	}
	if reads.Any(rego.InputSubject) && w.Object(keySubject) {
		writeSubject(w, id, reads)
		w.End()
	}
	if reads.Any(rego.InputRequest) && w.Object(keyRequest) {
		e.writeRequest(w, req, reads)
		w.End()
	}
	if reads.Has(rego.InputModel) && (m.Name != "" || m.Operation != "") && w.Object(keyModel) {
		w.String(keyName, m.Name)
		w.String(keyOperation, m.Operation)
		w.End()
	}
	if mr != nil && !mr.Unchecked {
		if reads.Has(rego.InputBody) && w.Object(keyBody) {
			writeFacts(w, mr.Facts)
			w.End()
		}
		// The parsed body is converted only when wanted; it always converts.
		if reads.Has(rego.InputParsedBody) && w.Wants(keyParsedBody) {
			if v, err := ast.InterfaceToValue(mr.Body); err == nil {
				w.Value(keyParsedBody, v)
			}
		}
	}
}

// Keys of the input document, made once.
var (
	keyGateway, keySubject, keyRequest, keyModel, keyBody, keyParsedBody = inputdoc.NewKey("gateway"), inputdoc.NewKey("subject"), inputdoc.NewKey("request"), inputdoc.NewKey("model"), inputdoc.NewKey("body"), inputdoc.NewKey("parsed_body")
	keyID, keyRoles, keyAuthMethod, keyKeyID, keyIssuer, keyClaims       = inputdoc.NewKey("id"), inputdoc.NewKey("roles"), inputdoc.NewKey("auth_method"), inputdoc.NewKey("key_id"), inputdoc.NewKey("issuer"), inputdoc.NewKey("claims")
	keyMethod, keyPath, keyQuery, keyHost, keyScheme, keyHeaders         = inputdoc.NewKey("method"), inputdoc.NewKey("path"), inputdoc.NewKey("query"), inputdoc.NewKey("host"), inputdoc.NewKey("scheme"), inputdoc.NewKey("headers")
	keySourceAddress, keyTLSPrincipal, keyName, keyOperation             = inputdoc.NewKey("source_address"), inputdoc.NewKey("tls_principal"), inputdoc.NewKey("name"), inputdoc.NewKey("operation")
	keyContextExtensions, keyMetadataContext                             = inputdoc.NewKey("context_extensions"), inputdoc.NewKey("metadata_context")
	keyStream, keyMessages, keyPromptChars, keyTools, keyMaxTokens, keyN = inputdoc.NewKey("stream"), inputdoc.NewKey("messages"), inputdoc.NewKey("prompt_chars"), inputdoc.NewKey("tools"), inputdoc.NewKey("max_tokens"), inputdoc.NewKey("n")
)

// writeString writes a string member when reads has it.
func writeString(w inputdoc.Writer, reads, member rego.Inputs, key inputdoc.Key, v string) {
	if reads.Has(member) {
		w.String(key, v)
	}
}

// writeSubject writes input.subject's members in reads.
func writeSubject(w inputdoc.Writer, id *Identity, reads rego.Inputs) {
	writeString(w, reads, rego.InputSubjectID, keyID, id.Subject)
	if reads.Has(rego.InputRoles) {
		w.Strings(keyRoles, id.Roles)
	}
	writeString(w, reads, rego.InputAuthMethod, keyAuthMethod, id.Method)
	writeString(w, reads, rego.InputKeyID, keyKeyID, id.KeyID)
	writeString(w, reads, rego.InputIssuer, keyIssuer, id.Issuer)
	if reads.Has(rego.InputClaims) && w.Wants(keyClaims) {
		claims := id.claimsValue
		if claims == nil {
			claims = claimsObject(id.Claims)
		}
		w.Value(keyClaims, claims)
	}
}

// writeRequest writes input.request's members in reads.
func (e *Engine) writeRequest(w inputdoc.Writer, req *Request, reads rego.Inputs) {
	writeString(w, reads, rego.InputRequestID, keyID, req.ID)
	writeString(w, reads, rego.InputMethod, keyMethod, req.Method)
	writeString(w, reads, rego.InputPath, keyPath, req.Path)
	if reads.Has(rego.InputQuery) && w.Wants(keyQuery) {
		w.Value(keyQuery, queryValue(req.Query))
	}
	writeString(w, reads, rego.InputHost, keyHost, req.Host)
	writeString(w, reads, rego.InputScheme, keyScheme, req.Scheme)
	if reads.Has(rego.InputHeaders) && w.Object(keyHeaders) {
		e.writeHeaders(w, req)
		w.End()
	}
	writeString(w, reads, rego.InputSourceAddress, keySourceAddress, req.SourceAddress)
	writeString(w, reads, rego.InputTLSPrincipal, keyTLSPrincipal, req.TLSPrincipal)
	if reads.Has(rego.InputContextExtensions) && len(req.ContextExtensions) > 0 && w.Object(keyContextExtensions) {
		writeStrings(w, req.ContextExtensions)
		w.End()
	}
	if reads.Has(rego.InputMetadataContext) && w.Wants(keyMetadataContext) {
		if md := metadataValue(req.MetadataContext); md != nil {
			w.Value(keyMetadataContext, md)
		}
	}
}

// writeHeaders writes the request's headers for the policy: pseudo-headers
// and credentials (isCredentialHeader) left out.
func (e *Engine) writeHeaders(w inputdoc.Writer, req *Request) {
	for k, v := range req.Headers {
		if strings.HasPrefix(k, ":") || e.isCredentialHeader(k) {
			continue
		}
		w.String(inputdoc.Name(k), v)
	}
}

// writeStrings writes m's entries as members.
func writeStrings(w inputdoc.Writer, m map[string]string) {
	for k, v := range m {
		w.String(inputdoc.Name(k), v)
	}
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

// writeFacts writes the body facts; absent values are left out.
func writeFacts(w inputdoc.Writer, f models.Facts) {
	w.Bool(keyStream, f.Stream)
	w.Int(keyMessages, int64(f.Messages))
	w.Int(keyPromptChars, int64(f.PromptChars))
	w.Strings(keyTools, f.Tools)
	if f.MaxTokens != 0 {
		w.Int(keyMaxTokens, f.MaxTokens)
	}
	if f.N != 0 {
		w.Int(keyN, f.N)
	}
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
