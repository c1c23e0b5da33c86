package kongharness

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	kpp "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Request is a client request as Kong received it.
type Request struct {
	Method, Scheme, Host, RawQuery string
	// RawPath is the path as sent (kong.request.get_raw_path); Path is
	// NormalizePath of it (kong.request.get_path), the one Kong routes on
	// and forwards.
	RawPath, Path string
	// Header is what the client sent; names are matched case-insensitively.
	Header http.Header
	Body   []byte
	// ClientIP is the peer (kong.client.get_ip); ForwardedIP is what
	// trusted_ips and real_ip_header make of it
	// (kong.client.get_forwarded_ip).
	ClientIP, ForwardedIP string
	// BodyFile, when set, is what kong.request.get_raw_body answers as the
	// file nginx spilled the body to (bodies over client_body_buffer_size).
	BodyFile string
	// BodyError, when set, is kong.request.get_raw_body's error answer.
	BodyError string
	// TLS is the client's TLS connection as nginx describes it; nil for
	// plain text.
	TLS *ClientTLS
	// FailVar, when set, is a variable kong.nginx.get_var answers with an
	// error (as Kong does when a PDK call fails).
	FailVar string
}

// ServiceResponse is the upstream response as Kong buffered it for the
// response phase.
type ServiceResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// Exit is a kong.response.exit call.
type Exit struct {
	Status int
	Body   []byte
	Header http.Header
}

// Exchange is one request going through Kong: it answers the plugin's PDK
// calls from the request and records what the plugin did. It is the
// Handler for the request's access and log events.
type Exchange struct {
	Req Request

	mu sync.Mutex
	// Upstream is the request header as the service will receive it.
	Upstream http.Header
	// ResponseHeader is what the plugin set for the client response.
	ResponseHeader http.Header
	Exit           *Exit
	Consumer       *kpp.Consumer
	Credential     *kpp.AuthenticatedCredential
	Shared         map[string]any // kong.ctx.shared
	// Status is the final status the log phase sees.
	Status int
	// Service is the upstream's response, buffered, when the plugin has a
	// response phase (nil before the response event).
	Service *ServiceResponse
	// Calls are the PDK methods called, per phase.
	Calls map[string][]string
	// Logs are kong.log.* lines ("err: ...").
	Logs []string
	// SerializeValues are kong.log.set_serialize_value's, merged into
	// kong.log.serialize.
	SerializeValues map[string]any
	start           time.Time
}

// NewExchange starts an exchange for r.
func NewExchange(r Request) *Exchange {
	return &Exchange{
		Req:             r,
		Upstream:        r.Header.Clone(),
		ResponseHeader:  http.Header{},
		Shared:          map[string]any{},
		SerializeValues: map[string]any{},
		Calls:           map[string][]string{},
		start:           time.Now(),
	}
}

// CallCount is the number of PDK calls made in phase.
func (x *Exchange) CallCount(phase string) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.Calls[phase])
}

// Answer implements Handler. In the log phase Kong answers from data saved
// when the request ended (ctx.shared, request and response headers, the
// status) and refuses calls that need the live request.
func (x *Exchange) Answer(phase, method string, args []byte) ([]byte, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.Calls[phase] = append(x.Calls[phase], method)
	var out proto.Message
	switch method {
	case "kong.request.get_headers":
		var max kpp.Int
		if err := proto.Unmarshal(args, &max); err != nil {
			return nil, err
		}
		h := x.Req.Header
		if phase == "log" {
			h = x.Upstream // saved ngx.req.get_headers(), after the plugins' changes
		}
		if max.V < 1 || max.V > 1000 {
			return nil, fmt.Errorf("max_headers must be between 1 and 1000, got %d", max.V)
		}
		out = ngxHeaders(h, int(max.V))
	case "kong.request.get_header":
		name, err := str(args)
		if err != nil {
			return nil, err
		}
		h := x.Req.Header
		if phase == "log" {
			h = x.Upstream
		}
		if vs := h.Values(name); len(vs) > 0 {
			out = &kpp.String{V: vs[0]}
		}
	case "kong.request.get_raw_body":
		if phase == "log" {
			return nil, fmt.Errorf("%s is not available in the log phase", method)
		}
		switch {
		case x.Req.BodyError != "":
			out = &kpp.RawBodyResult{Kind: &kpp.RawBodyResult_Error{Error: x.Req.BodyError}}
		case x.Req.BodyFile != "":
			out = &kpp.RawBodyResult{Kind: &kpp.RawBodyResult_BodyFilepath{BodyFilepath: x.Req.BodyFile}}
		default:
			out = &kpp.RawBodyResult{Kind: &kpp.RawBodyResult_Content{Content: x.Req.Body}}
		}
	case "kong.request.get_method":
		out = &kpp.String{V: x.Req.Method}
	case "kong.request.get_path":
		out = &kpp.String{V: x.Req.Path}
	case "kong.request.get_raw_path":
		out = &kpp.String{V: x.Req.RawPath}
	case "kong.request.get_raw_query":
		out = &kpp.String{V: x.Req.RawQuery}
	case "kong.request.get_path_with_query":
		pq := x.Req.RawPath // not normalised: ngx.var.request_uri
		if x.Req.RawQuery != "" {
			pq += "?" + x.Req.RawQuery
		}
		out = &kpp.String{V: pq}
	case "kong.nginx.get_var":
		name, err := str(args)
		if err != nil {
			return nil, err
		}
		if phase == "log" {
			return nil, fmt.Errorf("API disabled in the context of ngx.timer") // ngx.var in a timer
		}
		if name == x.Req.FailVar {
			return nil, fmt.Errorf("cannot read variable %q", name)
		}
		if name == "request" { // $request: the request line as received
			target := x.Req.RawPath
			if target == "" {
				target = x.Req.Path
			}
			if x.Req.RawQuery != "" {
				target += "?" + x.Req.RawQuery
			}
			out = &kpp.String{V: x.Req.Method + " " + target + " HTTP/1.1"}
		} else if v, found := x.Req.sslVariable(name); found {
			out = &kpp.String{V: v}
		} // other variables: nil here
	case "kong.request.get_scheme":
		out = &kpp.String{V: x.Req.Scheme}
	case "kong.request.get_host":
		out = &kpp.String{V: x.Req.Host}
	case "kong.client.get_ip":
		out = &kpp.String{V: x.Req.ClientIP}
	case "kong.client.get_forwarded_ip":
		ip := x.Req.ForwardedIP
		if ip == "" {
			ip = x.Req.ClientIP
		}
		out = &kpp.String{V: ip}
	case "kong.client.authenticate":
		if err := x.live(phase, method); err != nil {
			return nil, err
		}
		var a kpp.AuthenticateArgs
		if err := proto.Unmarshal(args, &a); err != nil {
			return nil, err
		}
		if a.Consumer == nil && a.Credential == nil {
			return nil, fmt.Errorf("either credential or consumer must be provided")
		}
		x.Consumer, x.Credential = a.Consumer, a.Credential
	case "kong.client.get_consumer":
		if x.Consumer != nil {
			out = x.Consumer
		}
	case "kong.client.get_credential":
		if x.Credential != nil {
			out = x.Credential
		}
	case "kong.ctx.shared.set":
		var kv kpp.KV
		if err := proto.Unmarshal(args, &kv); err != nil {
			return nil, err
		}
		x.Shared[kv.K] = kv.V.AsInterface()
	case "kong.ctx.shared.get":
		k, err := str(args)
		if err != nil {
			return nil, err
		}
		if v, ok := x.Shared[k]; ok && v != nil {
			var err error
			if out, err = structpb.NewValue(v); err != nil {
				return nil, err
			}
		}
	case "kong.service.request.set_headers", "kong.response.set_headers":
		if err := x.live(phase, method); err != nil {
			return nil, err
		}
		var s structpb.Struct
		if err := proto.Unmarshal(args, &s); err != nil {
			return nil, err
		}
		h := x.target(method)
		for name, v := range s.GetFields() {
			vals, err := headerValues(v)
			if err != nil {
				return nil, fmt.Errorf("%s: header %s: %w", method, name, err)
			}
			h.Del(name)
			for _, val := range vals {
				h.Add(name, val)
			}
		}
	case "kong.service.request.set_header", "kong.service.request.add_header", "kong.response.set_header", "kong.response.add_header":
		if err := x.live(phase, method); err != nil {
			return nil, err
		}
		var kv kpp.KV
		if err := proto.Unmarshal(args, &kv); err != nil {
			return nil, err
		}
		vals, err := headerValues(kv.V)
		if err != nil {
			return nil, err
		}
		h := x.target(method)
		if strings.HasSuffix(method, ".set_header") {
			h.Del(kv.K)
		}
		for _, v := range vals {
			h.Add(kv.K, v)
		}
	case "kong.service.request.clear_header", "kong.response.clear_header":
		if err := x.live(phase, method); err != nil {
			return nil, err
		}
		name, err := str(args)
		if err != nil {
			return nil, err
		}
		x.target(method).Del(name)
	case "kong.response.exit":
		if err := x.live(phase, method); err != nil {
			return nil, err
		}
		var e kpp.ExitArgs
		if err := proto.Unmarshal(args, &e); err != nil {
			return nil, err
		}
		ex := &Exit{Status: int(e.Status), Body: e.Body, Header: http.Header{}}
		for name, v := range e.GetHeaders().GetFields() {
			vals, err := headerValues(v)
			if err != nil {
				return nil, err
			}
			for _, val := range vals {
				ex.Header.Add(name, val)
			}
		}
		x.Exit = ex
		x.Status = ex.Status
		return nil, errExit
	case "kong.log.set_serialize_value":
		var kv kpp.KV
		if err := proto.Unmarshal(args, &kv); err != nil {
			return nil, err
		}
		x.SerializeValues[kv.K] = kv.V.AsInterface()
	case "kong.log.serialize":
		// kong.log.serialize checks for the log phase; the plugin server
		// answers the table saved when the log phase began, JSON-encoded.
		if phase != "log" {
			return nil, fmt.Errorf("function %s can only be called in the log phase", method)
		}
		b, err := json.Marshal(x.serialize())
		if err != nil {
			return nil, err
		}
		out = &kpp.String{V: string(b)}
	case "kong.response.get_status":
		out = &kpp.Int{V: int32(x.Status)}
	case "kong.service.response.get_status", "kong.service.response.get_headers", "kong.service.response.get_header", "kong.service.response.get_raw_body":
		var err error
		if out, err = x.serviceResponse(phase, method, args); err != nil {
			return nil, err
		}
	case "kong.nginx.req_start_time":
		out = &kpp.Number{V: float64(x.start.UnixNano()) / 1e9}
	case "kong.log.alert", "kong.log.crit", "kong.log.err", "kong.log.warn", "kong.log.notice", "kong.log.info", "kong.log.debug":
		var l structpb.ListValue
		if err := proto.Unmarshal(args, &l); err != nil {
			return nil, err
		}
		parts := make([]string, 0, len(l.Values))
		for _, v := range l.AsSlice() {
			parts = append(parts, fmt.Sprint(v))
		}
		x.Logs = append(x.Logs, method[len("kong.log."):]+": "+strings.Join(parts, " "))
	default:
		return nil, fmt.Errorf("method %q not found", method)
	}
	if out == nil {
		return nil, nil // Lua nil: an empty frame
	}
	return proto.Marshal(out)
}

// serialize is kong.log.serialize's table (kong/pdk/log.lua) for this
// request as Kong would have it at the log phase: request headers as sent
// upstream (at most 100 lines, lua_max_req_headers' default, with
// authorization redacted), the response's status and headers, the route
// and service entities, the consumer and credential, and the values set
// with kong.log.set_serialize_value.
func (x *Exchange) serialize() map[string]any {
	uri := x.Req.RawPath
	if uri == "" {
		uri = x.Req.Path
	}
	if x.Req.RawQuery != "" {
		uri += "?" + x.Req.RawQuery
	}
	reqHeaders := ngxHeaders(x.Upstream, 100).AsMap()
	for _, h := range []string{"authorization", "proxy-authorization"} {
		if _, ok := reqHeaders[h]; ok {
			reqHeaders[h] = "REDACTED"
		}
	}
	respHeader, source := x.ResponseHeader, "service"
	if x.Exit != nil {
		respHeader, source = x.Exit.Header, "exit"
	}
	forwarded := x.Req.ForwardedIP
	if forwarded == "" {
		forwarded = x.Req.ClientIP
	}
	root := map[string]any{
		"request": map[string]any{
			"id": "1f3e2c0d9b8a7f6e5d4c3b2a19080706", "uri": uri, "url": x.Req.Scheme + "://" + x.Req.Host + ":8000" + uri,
			"querystring": map[string]any{}, "method": x.Req.Method, "headers": reqHeaders, "size": len(x.Req.Body) + 200,
		},
		"upstream_uri": x.Req.Path,
		"response":     map[string]any{"status": x.Status, "headers": ngxHeaders(respHeader, 100).AsMap(), "size": 512},
		"latencies":    map[string]any{"kong": 2, "proxy": 40, "request": 43, "receive": 1},
		"tries":        []any{map[string]any{"balancer_start": x.start.UnixMilli(), "balancer_latency": 0, "ip": "10.0.0.20", "port": 8080}},
		"route": map[string]any{
			"id": "6b0f3b9e-2d4c-4c1e-9f7a-3d2e1c0b9a87", "name": "models", "protocols": []any{"http", "https"}, "paths": []any{"/v1", "/v2"},
			"strip_path": false, "preserve_host": false, "regex_priority": 0, "path_handling": "v0", "https_redirect_status_code": 426,
			"request_buffering": true, "response_buffering": true, "created_at": 1767225600, "updated_at": 1767225600,
			"service": map[string]any{"id": "a1c2e3f4-5b6d-4e7f-8091-a2b3c4d5e6f7"}, "ws_id": "0dc6f45b-8f8d-40d2-a504-473544ee190b",
		},
		"service": map[string]any{
			"id": "a1c2e3f4-5b6d-4e7f-8091-a2b3c4d5e6f7", "name": "model-server", "protocol": "http", "host": "vllm.internal", "port": 8080,
			"path": "/", "retries": 5, "connect_timeout": 60000, "read_timeout": 60000, "write_timeout": 60000, "enabled": true,
			"created_at": 1767225600, "updated_at": 1767225600, "ws_id": "0dc6f45b-8f8d-40d2-a504-473544ee190b",
		},
		"client_ip":      forwarded,
		"started_at":     x.start.UnixMilli(),
		"source":         source,
		"workspace":      "0dc6f45b-8f8d-40d2-a504-473544ee190b",
		"workspace_name": "default",
	}
	if x.Consumer != nil {
		root["consumer"] = map[string]any{"id": x.Consumer.Id, "username": x.Consumer.Username, "custom_id": x.Consumer.CustomId}
	}
	if x.Credential != nil {
		root["authenticated_entity"] = map[string]any{"id": x.Credential.Id, "consumer_id": x.Credential.ConsumerId}
	}
	for k, v := range x.SerializeValues {
		root[k] = v
	}
	return root
}

// live refuses calls that change the request or response in the log phase,
// which Kong runs after the response in a timer.
func (x *Exchange) live(phase, method string) error {
	if phase == "log" {
		return fmt.Errorf("function %s cannot be called in the log phase", method)
	}
	return nil
}

func (x *Exchange) target(method string) http.Header {
	if strings.HasPrefix(method, "kong.response.") {
		return x.ResponseHeader
	}
	return x.Upstream
}

// ngxHeaders is ngx.req.get_headers(max): lower-case names, a string for a
// single value and a list for a repeated header, at most max header lines.
func ngxHeaders(h http.Header, max int) *structpb.Struct {
	names := make([]string, 0, len(h))
	for name := range h {
		names = append(names, name)
	}
	slices.Sort(names)
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	lines := 0
	for _, name := range names {
		var vals []*structpb.Value
		for _, v := range h[name] {
			if lines == max {
				break
			}
			lines++
			vals = append(vals, structpb.NewStringValue(v))
		}
		switch len(vals) {
		case 0:
		case 1:
			s.Fields[strings.ToLower(name)] = vals[0]
		default:
			s.Fields[strings.ToLower(name)] = structpb.NewListValue(&structpb.ListValue{Values: vals})
		}
	}
	return s
}

// headerValues accepts what Kong's header checks accept: a string, a
// number, a boolean, or a list of strings.
func headerValues(v *structpb.Value) ([]string, error) {
	vals, err := headerValueList(v)
	for _, s := range vals {
		if strings.ContainsAny(s, "\r\n") {
			return nil, fmt.Errorf("header value %q contains CR or LF", s)
		}
	}
	return vals, err
}

func headerValueList(v *structpb.Value) ([]string, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return []string{k.StringValue}, nil
	case *structpb.Value_BoolValue:
		return []string{fmt.Sprint(k.BoolValue)}, nil
	case *structpb.Value_NumberValue:
		return []string{fmt.Sprint(k.NumberValue)}, nil
	case *structpb.Value_ListValue:
		var out []string
		for _, e := range k.ListValue.GetValues() {
			s, ok := e.GetKind().(*structpb.Value_StringValue)
			if !ok {
				return nil, fmt.Errorf("list element %v is not a string", e)
			}
			out = append(out, s.StringValue)
		}
		return out, nil
	}
	return nil, fmt.Errorf("invalid header value %v", v)
}

func str(args []byte) (string, error) {
	var s kpp.String
	err := proto.Unmarshal(args, &s)
	return s.V, err
}

// Spill writes body to a file in dir, as nginx does for bodies larger than
// client_body_buffer_size, and returns its path.
func Spill(dir string, body []byte) (string, error) {
	f, err := os.CreateTemp(dir, "body-*")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Write(body); err != nil {
		return "", err
	}
	return filepath.Clean(f.Name()), nil
}

// serviceResponse answers kong.service.response.* (kong/pdk/service/
// response.lua): the upstream's status, headers (lowercase names, at most
// max_headers, 1 to 1000) and raw body as buffered (Kong's plugin server
// answers the body as a ByteString; an empty body, like Lua nil, is an
// empty frame). They exist only once a response came back: in the
// response phase, and (but for the body) in the log phase.
func (x *Exchange) serviceResponse(phase, method string, args []byte) (proto.Message, error) {
	if x.Service == nil || phase != "response" && (phase != "log" || method == "kong.service.response.get_raw_body") {
		return nil, fmt.Errorf("function %s cannot be called in the %s phase", method, phase)
	}
	switch method {
	case "kong.service.response.get_status":
		return &kpp.Int{V: int32(x.Service.Status)}, nil
	case "kong.service.response.get_headers":
		var max kpp.Int
		if err := proto.Unmarshal(args, &max); err != nil {
			return nil, err
		}
		if max.V < 1 || max.V > 1000 {
			return nil, fmt.Errorf("max_headers must be between 1 and 1000, got %d", max.V)
		}
		return ngxHeaders(x.Service.Header, int(max.V)), nil
	case "kong.service.response.get_header":
		name, err := str(args)
		if err != nil {
			return nil, err
		}
		if vs := x.Service.Header.Values(name); len(vs) > 0 {
			return &kpp.String{V: vs[0]}, nil
		}
		return nil, nil
	default: // get_raw_body
		if len(x.Service.Body) == 0 {
			return nil, nil
		}
		return &kpp.ByteString{V: x.Service.Body}, nil
	}
}
