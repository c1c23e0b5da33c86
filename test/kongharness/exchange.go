package kongharness

import (
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
	// Calls are the PDK methods called, per phase.
	Calls map[string][]string
	// Logs are kong.log.* lines ("err: ...").
	Logs  []string
	start time.Time
}

// NewExchange starts an exchange for r.
func NewExchange(r Request) *Exchange {
	return &Exchange{
		Req:            r,
		Upstream:       r.Header.Clone(),
		ResponseHeader: http.Header{},
		Shared:         map[string]any{},
		Calls:          map[string][]string{},
		start:          time.Now(),
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
	case "kong.response.get_status":
		out = &kpp.Int{V: int32(x.Status)}
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
