package policy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/modelguard/modelguard/policy/models"
	"github.com/modelguard/modelguard/policy/rego"
)

// The input opa-envoy-plugin gives its policies (authorization.input:
// opa-envoy), built by the core from the neutral Request so that Envoy and
// Kong give a policy the same document. The shape follows what that
// project's envoyauth/request.go builds from a CheckRequest v3:
//
//	attributes      the CheckRequest's attributes with protobuf JSON
//	                names (socketAddress, portValue, rawBody,
//	                contextExtensions, metadataContext.filterMetadata),
//	                set fields only
//	parsed_path     the path without its query, percent-decoded, without
//	                leading "/", split at "/"
//	parsed_query    {name: [values]}
//	parsed_body     the body parsed by its content type (JSON, form,
//	                multipart), null otherwise, when cut or too short for
//	                its content-length
//	truncated_body  whether the body was cut
//	version         {"ext_authz": "v3", "encoding": "protojson"}
//	source_principal the client certificate identity, when there is one
//
// and, beside them, modelguard's own input (subject, model, body facts)
// under input.modelguard. Members a policy does not read (rego.Inputs) are
// left out. A path, query or body that opa-envoy-plugin cannot parse is
// refused with 400, as it refuses them.
func (e *Engine) opaEnvoyInput(req *Request, id *Identity, m Model, mr *models.Model, reads rego.Inputs) (ast.Value, error) {
	parsedPath, err := splitPath(req.Path)
	if err != nil {
		return nil, badRequest("path_invalid", err)
	}
	items := make([][2]*ast.Term, 0, 8)
	items = append(items,
		ast.Item(keyAttributes, ast.NewTerm(e.envoyAttributes(req, reads))),
		ast.Item(keyParsedPath, ast.NewTerm(parsedPath)),
		ast.Item(keyVersion, versionTerm),
	)
	if reads.Has(rego.InputQuery) {
		q, err := url.ParseQuery(req.Query)
		if err != nil {
			return nil, badRequest("query_invalid", err)
		}
		items = append(items, ast.Item(keyParsedQuery, ast.NewTerm(valuesObject(q))))
	}
	if reads.Has(rego.InputParsedBody) {
		body, truncated, err := parseBody(req, mr)
		if err != nil {
			return nil, badRequest("body_invalid", err)
		}
		items = append(items,
			ast.Item(keyParsedBody, ast.NewTerm(body)),
			ast.Item(keyTruncatedBody, ast.InternedTerm(truncated)))
	}
	if req.TLSPrincipal != "" {
		items = append(items, ast.Item(keySourcePrincipal, ast.StringTerm(req.TLSPrincipal)))
	}
	if reads.Has(rego.InputModelguardFacts) {
		items = append(items, ast.Item(keyModelguard, ast.NewTerm(e.input(req, id, m, mr, reads&^rego.InputParsedBody))))
	}
	return ast.NewObject(items...), nil
}

// Keys of opa-envoy-plugin's input, made once (ast.InternedTerm allocates
// for strings OPA does not intern); the shared ones are in input.go.
var (
	keyAddress               = ast.StringTerm("address")
	keyAttributes            = ast.StringTerm("attributes")
	keyContextExtensionsJSON = ast.StringTerm("contextExtensions")
	keyEncoding              = ast.StringTerm("encoding")
	keyExtAuthz              = ast.StringTerm("ext_authz")
	keyFilterMetadata        = ast.StringTerm("filterMetadata")
	keyHTTP                  = ast.StringTerm("http")
	keyMetadataContextJSON   = ast.StringTerm("metadataContext")
	keyModelguard            = ast.StringTerm("modelguard")
	keyParsedPath            = ast.StringTerm("parsed_path")
	keyParsedQuery           = ast.StringTerm("parsed_query")
	keyPortValue             = ast.StringTerm("portValue")
	keyPrincipal             = ast.StringTerm("principal")
	keyRawBody               = ast.StringTerm("rawBody")
	keySocketAddress         = ast.StringTerm("socketAddress")
	keySource                = ast.StringTerm("source")
	keySourcePrincipal       = ast.StringTerm("source_principal")
	keyTruncatedBody         = ast.StringTerm("truncated_body")
	keyVersion               = ast.StringTerm("version")
)

// versionTerm is opa-envoy-plugin's input.version for ext_authz v3.
var versionTerm = ast.ObjectTerm(
	ast.Item(keyExtAuthz, ast.StringTerm("v3")),
	ast.Item(keyEncoding, ast.StringTerm("protojson")),
)

// envoyAttributes is the CheckRequest's attributes as opa-envoy-plugin
// renders them: set fields only, JSON names.
func (e *Engine) envoyAttributes(req *Request, reads rego.Inputs) ast.Object {
	httpAttrs := ast.NewObject(
		ast.Item(keyMethod, ast.StringTerm(req.Method)),
		ast.Item(keyHeaders, ast.NewTerm(e.headersObject(req))),
		ast.Item(keyHost, ast.StringTerm(req.Host)),
	)
	// Envoy's path carries the query; it is read only for policies that
	// need it (Kong hands the query over on demand).
	path := req.Path
	if reads.Has(rego.InputQuery) && req.Query != "" {
		path += "?" + req.Query
	}
	httpAttrs.Insert(keyPath, ast.StringTerm(path))
	if reads.Has(rego.InputScheme) && req.Scheme != "" {
		httpAttrs.Insert(keyScheme, ast.StringTerm(req.Scheme))
	}
	if reads.Has(rego.InputRawBody) && len(req.Body) > 0 {
		// bytes render as base64 in protobuf JSON.
		httpAttrs.Insert(keyRawBody, ast.StringTerm(base64.StdEncoding.EncodeToString(req.Body)))
	}
	attrs := ast.NewObject(ast.Item(keyRequest, ast.ObjectTerm(ast.Item(keyHTTP, ast.NewTerm(httpAttrs)))))
	if src := sourceObject(req, reads); src != nil {
		attrs.Insert(keySource, ast.NewTerm(src))
	}
	if len(req.ContextExtensions) > 0 {
		attrs.Insert(keyContextExtensionsJSON, ast.NewTerm(stringsObject(req.ContextExtensions)))
	}
	if md := metadataValue(req.MetadataContext); md != nil {
		attrs.Insert(keyMetadataContextJSON, ast.ObjectTerm(ast.Item(keyFilterMetadata, ast.NewTerm(md))))
	}
	return attrs
}

// sourceObject is attributes.source: the peer's socket address (Kong's has
// no port) and the client certificate principal; nil when neither is known.
func sourceObject(req *Request, reads rego.Inputs) ast.Object {
	src := ast.NewObject()
	if reads.Has(rego.InputSourceAddress) && req.SourceAddress != "" {
		host, port, err := net.SplitHostPort(req.SourceAddress)
		if err != nil {
			host, port = req.SourceAddress, ""
		}
		sa := ast.NewObject(ast.Item(keyAddress, ast.StringTerm(host)))
		if n, err := strconv.ParseUint(port, 10, 32); err == nil && n > 0 {
			sa.Insert(keyPortValue, ast.InternedTerm(int(n)))
		}
		src.Insert(keyAddress, ast.ObjectTerm(ast.Item(keySocketAddress, ast.NewTerm(sa))))
	}
	if req.TLSPrincipal != "" {
		src.Insert(keyPrincipal, ast.StringTerm(req.TLSPrincipal))
	}
	if src.Len() == 0 {
		return nil
	}
	return src
}

// splitPath is opa-envoy-plugin's parsed_path.
func splitPath(path string) (*ast.Array, error) {
	decoded, err := url.PathUnescape(path)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(strings.TrimLeft(decoded, "/"), "/")
	terms := make([]*ast.Term, len(parts))
	for i, p := range parts {
		terms[i] = ast.StringTerm(p)
	}
	return ast.NewArray(terms...), nil
}

// parseBody is opa-envoy-plugin's parsed_body and truncated_body: the body
// is parsed by its content type (a substring match, as there) unless it
// was cut (by the gateway, or shorter than its content-length). A model
// request's body was parsed (and decompressed) by the model checks already.
func parseBody(req *Request, mr *models.Model) (ast.Value, bool, error) {
	if req.BodyTruncated || req.Headers[partialBodyHeader] == "true" {
		return ast.Null{}, true, nil
	}
	ct := req.Headers["content-type"]
	var parse func([]byte) (ast.Value, error)
	switch {
	case strings.Contains(ct, "application/json"):
		if mr != nil {
			v, err := ast.InterfaceToValue(mr.Body)
			return v, false, err
		}
		parse = parseJSON
	case strings.Contains(ct, "application/x-www-form-urlencoded"):
		parse = parseForm
	case strings.Contains(ct, "multipart/form-data"):
		parse = func(b []byte) (ast.Value, error) { return parseMultipart(ct, b) }
	default:
		return ast.Null{}, false, nil
	}
	if len(req.Body) == 0 {
		return ast.Null{}, false, nil
	}
	if cl, ok := req.Headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("content-length %q: %w", cl, err)
		}
		if n > int64(len(req.Body)) {
			return ast.Null{}, true, nil
		}
	}
	v, err := parse(req.Body)
	return v, false, err
}

// partialBodyHeader is what Envoy adds to a CheckRequest whose body it
// buffered, "true" when it cut it.
const partialBodyHeader = "x-envoy-auth-partial-body"

func parseJSON(b []byte) (ast.Value, error) {
	var x any
	if err := util.UnmarshalJSON(b, &x); err != nil {
		return nil, err
	}
	return ast.InterfaceToValue(x)
}

func parseForm(b []byte) (ast.Value, error) {
	q, err := url.ParseQuery(string(b))
	if err != nil {
		return nil, err
	}
	return valuesObject(q), nil
}

// parseMultipart gives {field: [values]}: a part with a JSON content type
// as its parsed value, any other as a string; parts without a form name
// are skipped, and without a boundary the body is not parsed (null).
func parseMultipart(ct string, b []byte) (ast.Value, error) {
	_, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, err
	}
	boundary, ok := params["boundary"]
	if !ok {
		return ast.Null{}, nil
	}
	fields := map[string][]*ast.Term{}
	var order []string
	r := multipart.NewReader(bytes.NewReader(b), boundary)
	for {
		p, err := r.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		name := p.FormName()
		if name == "" {
			continue
		}
		value, err := io.ReadAll(p)
		if err != nil {
			return nil, err
		}
		t := ast.StringTerm(string(value))
		if strings.Contains(p.Header.Get("Content-Type"), "application/json") {
			v, err := parseJSON(value)
			if err != nil {
				return nil, err
			}
			t = ast.NewTerm(v)
		}
		if _, seen := fields[name]; !seen {
			order = append(order, name)
		}
		fields[name] = append(fields[name], t)
	}
	items := make([][2]*ast.Term, len(order))
	for i, name := range order {
		items[i] = ast.Item(ast.StringTerm(name), ast.ArrayTerm(fields[name]...))
	}
	return ast.NewObject(items...), nil
}

// valuesObject is {name: [values]}.
func valuesObject(q url.Values) ast.Object {
	items := make([][2]*ast.Term, 0, len(q))
	for k, vs := range q {
		ts := make([]*ast.Term, len(vs))
		for i, v := range vs {
			ts[i] = ast.StringTerm(v)
		}
		items = append(items, ast.Item(ast.StringTerm(k), ast.ArrayTerm(ts...)))
	}
	return ast.NewObject(items...)
}

func stringsObject(m map[string]string) ast.Object {
	items := make([][2]*ast.Term, 0, len(m))
	for k, v := range m {
		items = append(items, ast.Item(ast.StringTerm(k), ast.StringTerm(v)))
	}
	return ast.NewObject(items...)
}

// metadataValue converts filter metadata (namespace to JSON object); nil
// when there is none or it does not convert.
func metadataValue(md map[string]any) ast.Value {
	if len(md) == 0 {
		return nil
	}
	v, err := ast.InterfaceToValue(md)
	if err != nil {
		return nil
	}
	return v
}

// badRequest is the 400 of a request opa-envoy-plugin could not turn into
// its input.
func badRequest(reason string, err error) *Refusal {
	return &Refusal{Status: http.StatusBadRequest, Reason: reason, Message: "malformed request", Err: err}
}
