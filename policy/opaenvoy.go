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
	"github.com/modelguard/modelguard/policy/rego/inputdoc"
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
//
// The parsed query and body are made as Rego values before anything is
// written (parsing them can refuse the request, on the decision cache's
// key too); the rest is written member by member.
func (e *Engine) writeOPAEnvoyInput(w inputdoc.Writer, req *Request, id *Identity, m Model, mr *models.Model, reads rego.Inputs) error {
	parsedPath, err := splitPath(req.Path)
	if err != nil {
		return badRequest("path_invalid", err)
	}
	var query ast.Value
	if reads.Has(rego.InputQuery) {
		q, err := url.ParseQuery(req.Query)
		if err != nil {
			return badRequest("query_invalid", err)
		}
		query = valuesObject(q)
	}
	var (
		body      ast.Value
		truncated bool
	)
	if reads.Has(rego.InputParsedBody) {
		if body, truncated, err = parseBody(req, mr); err != nil {
			return badRequest("body_invalid", err)
		}
	}
	if w.Object(keyAttributes) {
		e.writeEnvoyAttributes(w, req, reads)
		w.End()
	}
	w.Strings(keyParsedPath, parsedPath)
	w.Value(keyVersion, versionValue)
	if reads.Has(rego.InputQuery) {
		w.Value(keyParsedQuery, query)
	}
	if reads.Has(rego.InputParsedBody) {
		w.Value(keyParsedBody, body)
		w.Bool(keyTruncatedBody, truncated)
	}
	if req.TLSPrincipal != "" {
		w.String(keySourcePrincipal, req.TLSPrincipal)
	}
	if reads.Has(rego.InputModelguardFacts) && w.Object(keyModelguard) {
		e.writeInput(w, req, id, m, mr, reads&^rego.InputParsedBody)
		w.End()
	}
	return nil
}

// Keys of opa-envoy-plugin's input, made once; the shared ones are in
// input.go.
var (
	keyAddress               = inputdoc.NewKey("address")
	keyAttributes            = inputdoc.NewKey("attributes")
	keyContextExtensionsJSON = inputdoc.NewKey("contextExtensions")
	keyFilterMetadata        = inputdoc.NewKey("filterMetadata")
	keyHTTP                  = inputdoc.NewKey("http")
	keyMetadataContextJSON   = inputdoc.NewKey("metadataContext")
	keyModelguard            = inputdoc.NewKey("modelguard")
	keyParsedPath            = inputdoc.NewKey("parsed_path")
	keyParsedQuery           = inputdoc.NewKey("parsed_query")
	keyPortValue             = inputdoc.NewKey("portValue")
	keyPrincipal             = inputdoc.NewKey("principal")
	keyRawBody               = inputdoc.NewKey("rawBody")
	keySocketAddress         = inputdoc.NewKey("socketAddress")
	keySource                = inputdoc.NewKey("source")
	keySourcePrincipal       = inputdoc.NewKey("source_principal")
	keyTruncatedBody         = inputdoc.NewKey("truncated_body")
	keyVersion               = inputdoc.NewKey("version")
)

// versionValue is opa-envoy-plugin's input.version for ext_authz v3.
var versionValue = ast.NewObject(
	ast.Item(ast.StringTerm("ext_authz"), ast.StringTerm("v3")),
	ast.Item(ast.StringTerm("encoding"), ast.StringTerm("protojson")),
)

// writeEnvoyAttributes writes the CheckRequest's attributes as
// opa-envoy-plugin renders them: set fields only, JSON names.
func (e *Engine) writeEnvoyAttributes(w inputdoc.Writer, req *Request, reads rego.Inputs) {
	if w.Object(keyRequest) {
		if w.Object(keyHTTP) {
			w.String(keyMethod, req.Method)
			if w.Object(keyHeaders) {
				e.writeHeaders(w, req)
				w.End()
			}
			w.String(keyHost, req.Host)
			// Envoy's path carries the query; it is read only for policies
			// that need it (Kong hands the query over on demand).
			path := req.Path
			if reads.Has(rego.InputQuery) && req.Query != "" {
				path += "?" + req.Query
			}
			w.String(keyPath, path)
			if reads.Has(rego.InputScheme) && req.Scheme != "" {
				w.String(keyScheme, req.Scheme)
			}
			if reads.Has(rego.InputRawBody) && len(req.Body) > 0 && w.Wants(keyRawBody) {
				// bytes render as base64 in protobuf JSON.
				w.String(keyRawBody, base64.StdEncoding.EncodeToString(req.Body))
			}
			w.End()
		}
		w.End()
	}
	e.writeSource(w, req, reads)
	if len(req.ContextExtensions) > 0 && w.Object(keyContextExtensionsJSON) {
		writeStrings(w, req.ContextExtensions)
		w.End()
	}
	if len(req.MetadataContext) > 0 && w.Wants(keyMetadataContextJSON) {
		if md := metadataValue(req.MetadataContext); md != nil && w.Object(keyMetadataContextJSON) {
			w.Value(keyFilterMetadata, md)
			w.End()
		}
	}
}

// writeSource writes attributes.source: the peer's socket address (Kong's
// has no port) and the client certificate principal; nothing when neither
// is known.
func (e *Engine) writeSource(w inputdoc.Writer, req *Request, reads rego.Inputs) {
	address := reads.Has(rego.InputSourceAddress) && req.SourceAddress != ""
	if !address && req.TLSPrincipal == "" || !w.Object(keySource) {
		return
	}
	if address && w.Object(keyAddress) {
		if w.Object(keySocketAddress) {
			host, port, err := net.SplitHostPort(req.SourceAddress)
			if err != nil {
				host, port = req.SourceAddress, ""
			}
			w.String(keyAddress, host)
			if n, err := strconv.ParseUint(port, 10, 32); err == nil && n > 0 {
				w.Int(keyPortValue, int64(n))
			}
			w.End()
		}
		w.End()
	}
	if req.TLSPrincipal != "" {
		w.String(keyPrincipal, req.TLSPrincipal)
	}
	w.End()
}

// splitPath is opa-envoy-plugin's parsed_path.
func splitPath(path string) ([]string, error) {
	decoded, err := url.PathUnescape(path)
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimLeft(decoded, "/"), "/"), nil
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
