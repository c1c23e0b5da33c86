// Package envoyharness plays Envoy's side of ext_authz for tests, since
// Envoy cannot be installed here. Front is an HTTP proxy that, for every
// request, builds the CheckRequest Envoy would send, calls the real gRPC
// server, and applies the CheckResponse as Envoy does, following
// docs/envoy-ext-authz.md:
//
//   - status.code 0 allows; otherwise the denied_response status (403 when
//     unset), headers and body go to the client as they are.
//   - a gRPC error or timeout is an error: failure_mode_allow passes the
//     request, otherwise status_on_error (default 403) with an empty body.
//   - on allow, headers are set (append=false) or added (append=true), then
//     headers_to_remove runs; pseudo-headers, host and x-envoy-* cannot be
//     changed; response_headers_to_add go on the response.
//   - with_request_body: without allow_partial_message a body over
//     max_request_bytes gets 413 from Envoy itself; with it the body is cut
//     and flagged with x-envoy-auth-partial-body.
//   - dynamic_metadata is recorded for allow and deny (the access log).
package envoyharness

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/modelguard/modelguard/extauthz"
)

// Filter mirrors the ext_authz filter settings the harness honours.
type Filter struct {
	Timeout             time.Duration // grpc_service.timeout, default 200ms
	FailureModeAllow    bool
	StatusOnError       int // default 403
	WithRequestBody     bool
	MaxRequestBytes     int
	AllowPartialMessage bool
	PackAsBytes         bool
	EncodeRawHeaders    bool
}

// AccessLogEntry is what an access log line would print.
type AccessLogEntry struct {
	RequestID string
	Status    int
	Metadata  map[string]any // %DYNAMIC_METADATA(envoy.filters.http.ext_authz:...)%
	Err       error          // the ext_authz call failed
}

// Front is the Envoy stand-in. Serve it with httptest.NewServer.
type Front struct {
	Client   authv3.AuthorizationClient
	Upstream *url.URL
	Filter   Filter
	// AccessLog, when set, receives one entry per request.
	AccessLog func(AccessLogEntry)

	proxy  *httputil.ReverseProxy
	stream atomic.Uint64
}

// New returns a Front for the client and upstream.
func New(client authv3.AuthorizationClient, upstream *url.URL, f Filter) *Front {
	if f.Timeout == 0 {
		f.Timeout = 200 * time.Millisecond
	}
	if f.StatusOnError == 0 {
		f.StatusOnError = http.StatusForbidden
	}
	fr := &Front{Client: client, Upstream: upstream, Filter: f}
	fr.proxy = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(upstream)
		pr.Out.Host = pr.In.Host
	}}
	return fr
}

func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	entry := AccessLogEntry{RequestID: r.Header.Get("x-request-id")}
	defer func() {
		if f.AccessLog != nil {
			f.AccessLog(entry)
		}
	}()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		entry.Status = http.StatusBadRequest
		w.WriteHeader(entry.Status)
		return
	}
	if f.Filter.WithRequestBody && f.Filter.MaxRequestBytes > 0 && len(body) > f.Filter.MaxRequestBytes && !f.Filter.AllowPartialMessage {
		entry.Status = http.StatusRequestEntityTooLarge
		http.Error(w, "Payload Too Large", entry.Status)
		return
	}
	cr := extauthz.CheckRequestFromHTTP(r, body, extauthz.EnvoyOptions{
		EncodeRawHeaders: f.Filter.EncodeRawHeaders,
		WithBody:         f.Filter.WithRequestBody,
		MaxBodyBytes:     f.Filter.MaxRequestBytes,
		PackAsBytes:      f.Filter.PackAsBytes,
		StreamID:         f.stream.Add(1),
	})
	ctx, cancel := context.WithTimeout(r.Context(), f.Filter.Timeout)
	resp, err := f.Client.Check(ctx, cr)
	cancel()
	if err != nil {
		entry.Err = err
		if f.Filter.FailureModeAllow {
			entry.Status = f.forward(w, r, body, nil)
			return
		}
		entry.Status = f.Filter.StatusOnError
		w.WriteHeader(entry.Status)
		return
	}
	entry.Metadata = metadata(resp.GetDynamicMetadata())
	if resp.GetStatus().GetCode() == 0 {
		entry.Status = f.forward(w, r, body, resp.GetOkResponse())
		return
	}
	entry.Status = deny(w, resp.GetDeniedResponse())
}

func deny(w http.ResponseWriter, d *authv3.DeniedHttpResponse) int {
	status := int(d.GetStatus().GetCode())
	if status == 0 {
		status = http.StatusForbidden
	}
	for _, h := range d.GetHeaders() {
		applyHeader(w.Header(), h.GetHeader().GetKey(), h.GetHeader().GetValue(), h.GetAppend().GetValue())
	}
	w.WriteHeader(status)
	io.WriteString(w, d.GetBody())
	return status
}

func (f *Front) forward(w http.ResponseWriter, r *http.Request, body []byte, ok *authv3.OkHttpResponse) int {
	out := r.Clone(r.Context())
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	for _, h := range ok.GetHeaders() {
		name := strings.ToLower(h.GetHeader().GetKey())
		if immutable(name) {
			continue
		}
		// A bare HeaderValueOption appends in newer Envoy: only an explicit
		// append=false sets.
		appendValue := h.GetAppend() == nil || h.GetAppend().GetValue()
		applyHeader(out.Header, name, h.GetHeader().GetValue(), appendValue)
	}
	for _, name := range ok.GetHeadersToRemove() {
		if !immutable(strings.ToLower(name)) {
			out.Header.Del(name)
		}
	}
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	for _, h := range ok.GetResponseHeadersToAdd() {
		applyHeader(w.Header(), h.GetHeader().GetKey(), h.GetHeader().GetValue(), h.GetAppend().GetValue())
	}
	f.proxy.ServeHTTP(rec, out)
	return rec.status
}

func applyHeader(h http.Header, name, value string, appendValue bool) {
	if appendValue {
		h.Add(name, value)
		return
	}
	h.Set(name, value)
}

func immutable(name string) bool {
	return strings.HasPrefix(name, ":") || name == "host" || strings.HasPrefix(name, "x-envoy-")
}

func metadata(s *structpb.Struct) map[string]any {
	if s == nil {
		return nil
	}
	return s.AsMap()
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}
