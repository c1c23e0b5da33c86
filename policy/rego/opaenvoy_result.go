package rego

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"golang.org/x/net/http/httpguts"
)

// allowedTerm finds the key that marks opa-envoy-plugin's result.
var allowedTerm = ast.NewTerm(keyAllowed)

// Keys of opa-envoy-plugin's object result, told apart from modelguard's
// by "allowed" (modelguard's says "allow").
const (
	keyAllowed                ast.String = "allowed"
	keyResponseHeadersToAdd   ast.String = "response_headers_to_add"
	keyRequestHeadersToRemove ast.String = "request_headers_to_remove"
	keyHTTPStatus             ast.String = "http_status"
	keyBody                   ast.String = "body"
	keyDynamicMetadata        ast.String = "dynamic_metadata"
)

// decodeOPAEnvoy reads opa-envoy-plugin's object result with the meaning
// that project gives it (envoyauth/response.go there): headers go upstream
// on allow and on the denial response otherwise; response_headers_to_add
// go to the client and request_headers_to_remove leave the upstream
// request on allow; http_status (default 403) and body make the denial;
// dynamic_metadata is kept with the request. Header values are a string
// or an array of strings (repeats are joined with ","), and headers may be
// an array of such objects. Unlike opa-envoy-plugin, unknown keys (its
// query_parameters_to_set and query_parameters_to_remove among them) are
// errors: a result modelguard would not apply in full denies.
func decodeOPAEnvoy(obj ast.Object) (Result, error) {
	var (
		r                 Result
		headers, toClient map[string]string
	)
	err := resultMembers(obj, func(key ast.String, k, v *ast.Term) error {
		var err error
		switch key {
		case keyAllowed:
			b, ok := v.Value.(ast.Boolean)
			if !ok {
				return fmt.Errorf("result allowed is %s, want a boolean", ast.ValueName(v.Value))
			}
			r.Allow = bool(b)
		case keyHeaders:
			headers, err = decodeHeaderList(key, v.Value)
		case keyResponseHeadersToAdd:
			toClient, err = decodeHeaderList(key, v.Value)
		case keyRequestHeadersToRemove:
			r.RemoveHeaders, err = decodeNames(key, v.Value)
		case keyHTTPStatus:
			r.Status, err = decodeHTTPStatus(v.Value)
		case keyBody:
			var s string
			s, err = decodeString(key, v.Value)
			r.Body = []byte(s)
		case keyDynamicMetadata:
			r.DynamicMetadata, err = decodeMetadata(v.Value)
		default:
			return fmt.Errorf("result has unknown key %s", k)
		}
		return err
	})
	if err != nil {
		return Result{}, err
	}
	if r.Allow {
		r.Status, r.Body = 0, nil
		r.Headers, r.ResponseHeaders = headers, toClient
	} else {
		r.ResponseHeaders, r.RemoveHeaders = headers, nil
	}
	return r, nil
}

// decodeHTTPStatus accepts what opa-envoy-plugin does for a denial, less
// the 1xx and 2xx codes (a denial answered with 200 would read as an allow
// in every metric): a known status in 300..599, so that a policy can
// redirect to a login page.
func decodeHTTPStatus(v ast.Value) (int, error) {
	n, ok := v.(ast.Number)
	if !ok {
		return 0, fmt.Errorf("result http_status is %s, want a number", ast.ValueName(v))
	}
	status, ok := n.Int()
	if !ok || status < 300 || status > 599 || http.StatusText(status) == "" {
		return 0, fmt.Errorf("result http_status %s, want a known HTTP status in 300..599", n)
	}
	return status, nil
}

// decodeHeaderList reads opa-envoy-plugin's headers: an object, or an
// array of objects, of names to a string or an array of strings.
func decodeHeaderList(key ast.String, v ast.Value) (map[string]string, error) {
	var objs []ast.Object
	switch v := v.(type) {
	case ast.Object:
		objs = []ast.Object{v}
	case *ast.Array:
		for i := range v.Len() {
			o, ok := v.Elem(i).Value.(ast.Object)
			if !ok {
				return nil, fmt.Errorf("result %s[%d] is %s, want an object", string(key), i, ast.ValueName(v.Elem(i).Value))
			}
			objs = append(objs, o)
		}
	default:
		return nil, fmt.Errorf("result %s is %s, want an object or an array of objects", string(key), ast.ValueName(v))
	}
	var h map[string]string
	for _, o := range objs {
		err := o.Iter(func(k, v *ast.Term) error {
			lower, err := headerName(key, k)
			if err != nil {
				return err
			}
			values, err := headerValues(v.Value)
			if err != nil {
				return fmt.Errorf("result %s[%s]: %w", string(key), k, err)
			}
			if h == nil {
				h = make(map[string]string)
			}
			for _, value := range values {
				if prev, ok := h[lower]; ok {
					value = prev + "," + value
				}
				h[lower] = value
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return h, nil
}

// headerValues reads a header value: a string or an array of strings,
// each valid in a header (no CR, LF or NUL).
func headerValues(v ast.Value) ([]string, error) {
	var out []string
	add := func(v ast.Value) error {
		s, ok := v.(ast.String)
		if !ok || !httpguts.ValidHeaderFieldValue(string(s)) {
			return errors.New("not a valid header value")
		}
		out = append(out, string(s))
		return nil
	}
	if a, ok := v.(*ast.Array); ok {
		for i := range a.Len() {
			if err := add(a.Elem(i).Value); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return out, add(v)
}

// decodeNames reads an array of header names, lower-cased.
func decodeNames(key ast.String, v ast.Value) ([]string, error) {
	a, ok := v.(*ast.Array)
	if !ok {
		return nil, fmt.Errorf("result %s is %s, want an array of header names", string(key), ast.ValueName(v))
	}
	out := make([]string, 0, a.Len())
	for i := range a.Len() {
		s, ok := a.Elem(i).Value.(ast.String)
		if !ok || !httpguts.ValidHeaderFieldName(string(s)) {
			return nil, fmt.Errorf("result %s[%d] is not a header name", string(key), i)
		}
		out = append(out, strings.ToLower(string(s)))
	}
	return out, nil
}

// decodeMetadata reads dynamic_metadata: an object, as JSON values.
func decodeMetadata(v ast.Value) (map[string]any, error) {
	if _, ok := v.(ast.Object); !ok {
		return nil, fmt.Errorf("result dynamic_metadata is %s, want an object", ast.ValueName(v))
	}
	j, err := ast.JSON(v)
	if err != nil {
		return nil, fmt.Errorf("result dynamic_metadata: %w", err)
	}
	m, _ := j.(map[string]any)
	return m, nil
}
