// Package envoyharness plays Envoy's side of ext_authz for tests, since
// Envoy cannot be installed here. Front is an HTTP proxy that, for every
// request, does what Envoy does (source/common/http/conn_manager_utility.cc,
// source/extensions/filters/http/ext_authz/ext_authz.cc and
// check_request_utils.cc; see docs/envoy-ext-authz.md):
//
//   - the connection manager first (ConnectionManager): a '#' in the path
//     and, with REJECT_REQUEST, an escaped slash are refused with 400;
//     normalize_path and merge_slashes rewrite :path; hop-by-hop headers
//     are dropped, x-forwarded-for appended, x-forwarded-proto set, and
//     x-request-id replaced with Envoy's own;
//   - routes: a route with ext_authz disabled is not checked at all;
//   - the CheckRequest as Envoy builds it; the body is buffered in data
//     frames, so a buffer that fills exactly at max_request_bytes is sent
//     cut but flagged "false"; x-envoy-auth-partial-body only when a body
//     was buffered; without allow_partial_message an oversized body gets
//     413 from Envoy itself;
//   - status.code 0 allows; otherwise the denied_response status (403 when
//     unset), its append=false headers (duplicates kept) and body go to the
//     client;
//   - a gRPC error or timeout: failure_mode_allow passes the request,
//     otherwise status_on_error with an empty body;
//   - on allow, headers are applied as Envoy does: append unset or false
//     sets, append true appends only to a header that exists, any name is
//     applied (:path, :authority, host, x-envoy-* included) unless
//     decoder_header_mutation_rules forbid it, values are checked only with
//     validate_mutations (500); headers_to_remove runs after the sets and
//     cannot remove pseudo-headers or host; response_headers_to_add are
//     added to the upstream's response;
//   - dynamic_metadata is recorded for allow and deny (the access log).
package envoyharness

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
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
	// ValidateMutations makes an invalid header name or value from the
	// server a 500.
	ValidateMutations bool
	// MutationRules is decoder_header_mutation_rules; nil applies any
	// header the server sets.
	MutationRules *MutationRules
	// FrameBytes is the size of the data frames the body arrives in
	// (default 16 KiB, HTTP/2's default frame and Envoy's read size).
	FrameBytes int
}

// MutationRules mirrors HeaderMutationRules (without the expressions).
type MutationRules struct {
	AllowAllRouting, AllowEnvoy, DisallowSystem, DisallowAll, DisallowIsError bool
}

// ShippedFilter is the ext_authz filter of envoy/envoy.yaml.
var ShippedFilter = Filter{Timeout: 250 * time.Millisecond, StatusOnError: http.StatusServiceUnavailable,
	WithRequestBody: true, MaxRequestBytes: 1 << 20, AllowPartialMessage: true, PackAsBytes: true,
	ValidateMutations: true, MutationRules: &MutationRules{DisallowSystem: true, DisallowIsError: true}}

// Route is a route of the harness's virtual host, matched on the exact
// normalised path; other paths take the default route (checked, then the
// upstream).
type Route struct {
	// AuthzDisabled: ExtAuthzPerRoute disabled, no check at all.
	AuthzDisabled bool
	// DirectStatus, when set, is a direct_response.
	DirectStatus int
	DirectBody   string
	// ContextExtensions are ExtAuthzPerRoute's
	// check_settings.context_extensions, sent in every CheckRequest of
	// the route.
	ContextExtensions map[string]string
	// FilterMetadata is what filters before ext_authz (jwt_authn, say)
	// left in the request's dynamic metadata, by namespace, sent as
	// metadata_context (metadata_context_namespaces naming them all).
	FilterMetadata map[string]map[string]any
}

// ShippedRoutes are the routes of envoy/envoy.yaml besides the default.
var ShippedRoutes = map[string]Route{"/healthz": {AuthzDisabled: true, DirectStatus: http.StatusOK, DirectBody: "ok\n"}}

// AccessLogEntry is what an access log line would print.
type AccessLogEntry struct {
	RequestID string // %REQ(X-REQUEST-ID)%: Envoy's, unless preserved
	Status    int
	Metadata  map[string]any // %DYNAMIC_METADATA(envoy.filters.http.ext_authz:...)%
	Err       error          // the ext_authz call failed
	Checked   bool           // ext_authz called the server
}

// Front is the Envoy stand-in. Serve it with httptest.NewServer.
type Front struct {
	Client   authv3.AuthorizationClient
	Upstream *url.URL
	Filter   Filter
	Routes   map[string]Route
	// AccessLog, when set, receives one entry per request.
	AccessLog func(AccessLogEntry)

	proxy  *httputil.ReverseProxy
	stream atomic.Uint64
	hcm    atomic.Pointer[ConnectionManager]
}

// SetHCM replaces the connection manager settings (ShippedHCM by default).
func (f *Front) SetHCM(cm ConnectionManager) { f.hcm.Store(&cm) }

// New returns a Front for the client and upstream with the connection
// manager and routes of envoy/envoy.yaml.
func New(client authv3.AuthorizationClient, upstream *url.URL, f Filter) *Front {
	if f.Timeout == 0 {
		f.Timeout = 200 * time.Millisecond
	}
	if f.StatusOnError == 0 {
		f.StatusOnError = http.StatusForbidden
	}
	if f.FrameBytes == 0 {
		f.FrameBytes = 16 << 10
	}
	fr := &Front{Client: client, Upstream: upstream, Filter: f, Routes: ShippedRoutes}
	fr.SetHCM(ShippedHCM)
	fr.proxy = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(upstream)
		pr.Out.Host = pr.In.Host
		// The connection manager already set these; keep them.
		for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto"} {
			pr.Out.Header[h] = pr.In.Header[h]
		}
	}}
	return fr
}

func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var entry AccessLogEntry
	defer func() {
		if f.AccessLog != nil {
			f.AccessLog(entry)
		}
	}()
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	hcm := f.hcm.Load()
	target, status := hcm.prepare(r)
	if status == http.StatusBadRequest {
		entry.Status = status
		w.WriteHeader(status)
		return
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		entry.Status = http.StatusBadRequest
		w.WriteHeader(entry.Status)
		return
	}
	if status == http.StatusTemporaryRedirect {
		entry.Status = status
		w.Header().Set("location", target)
		w.WriteHeader(status)
		return
	}
	out := r.Clone(r.Context())
	out.URL, out.RequestURI = u, target
	entry.RequestID = hcm.headers(out.Header, r.RemoteAddr, scheme)
	if hcm.AlwaysSetRequestIDInResponse {
		w.Header().Set("x-request-id", entry.RequestID)
	}

	body, err := io.ReadAll(r.Body)
	if err != nil {
		entry.Status = http.StatusBadRequest
		w.WriteHeader(entry.Status)
		return
	}
	route, matched := f.Routes[u.Path]
	if matched && route.DirectStatus != 0 {
		entry.Status = route.DirectStatus
		w.WriteHeader(route.DirectStatus)
		io.WriteString(w, route.DirectBody)
		return
	}
	if matched && route.AuthzDisabled {
		entry.Status = f.forward(w, out, body, nil)
		return
	}
	if f.Filter.WithRequestBody && f.Filter.MaxRequestBytes > 0 && len(body) > f.Filter.MaxRequestBytes && !f.Filter.AllowPartialMessage {
		entry.Status = http.StatusRequestEntityTooLarge
		http.Error(w, "Payload Too Large", entry.Status)
		return
	}
	entry.Checked = true
	cr := extauthz.CheckRequestFromHTTP(out, f.buffered(body), extauthz.EnvoyOptions{
		EncodeRawHeaders: f.Filter.EncodeRawHeaders,
		WithBody:         f.Filter.WithRequestBody,
		MaxBodyBytes:     f.Filter.MaxRequestBytes,
		PackAsBytes:      f.Filter.PackAsBytes,
		StreamID:         f.stream.Add(1),
		Principal:        principal(r),
	})
	if matched {
		if err := route.context(cr.GetAttributes()); err != nil {
			entry.Status = http.StatusInternalServerError
			w.WriteHeader(entry.Status)
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), f.Filter.Timeout)
	resp, err := f.Client.Check(ctx, cr)
	cancel()
	if err != nil {
		entry.Err = err
		if f.Filter.FailureModeAllow {
			entry.Status = f.forward(w, out, body, nil)
			return
		}
		entry.Status = f.Filter.StatusOnError
		w.WriteHeader(entry.Status)
		return
	}
	entry.Metadata = metadata(resp.GetDynamicMetadata())
	if resp.GetStatus().GetCode() == 0 {
		if status := f.mutate(out, resp.GetOkResponse()); status != 0 {
			entry.Status = status
			w.WriteHeader(status)
			return
		}
		entry.Status = f.forward(w, out, body, resp.GetOkResponse().GetResponseHeadersToAdd())
		return
	}
	entry.Status = deny(w, resp.GetDeniedResponse())
}

// buffered is what ext_authz holds when it calls the server: the body as
// received in data frames, until the stream ends or the buffer reaches
// max_request_bytes. A frame boundary at exactly the limit leaves a cut
// body of exactly the limit, which Envoy flags "false".
func (f *Front) buffered(body []byte) []byte {
	max := f.Filter.MaxRequestBytes
	if !f.Filter.WithRequestBody || max <= 0 || len(body) <= max {
		return body
	}
	n := (max + f.Filter.FrameBytes - 1) / f.Filter.FrameBytes * f.Filter.FrameBytes
	return body[:min(n, len(body))]
}

// principal is source.principal: the peer certificate's URI SAN, else its
// DNS SAN, else its subject.
func principal(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return ""
	}
	return certPrincipal(r.TLS.PeerCertificates[0])
}

func certPrincipal(c *x509.Certificate) string {
	switch {
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return c.Subject.String()
}

func deny(w http.ResponseWriter, d *authv3.DeniedHttpResponse) int {
	status := int(d.GetStatus().GetCode())
	if status == 0 {
		status = http.StatusForbidden
	}
	for _, h := range d.GetHeaders() {
		if h.GetAppend().GetValue() {
			continue // only append=false headers reach a denial
		}
		w.Header().Add(h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	w.WriteHeader(status)
	io.WriteString(w, d.GetBody())
	return status
}

// mutate applies an allow's request header changes to out; a non-zero
// status is Envoy's 500 for a mutation the rules or validation refuse.
func (f *Front) mutate(out *http.Request, ok *authv3.OkHttpResponse) int {
	for _, h := range ok.GetHeaders() {
		name, value := strings.ToLower(h.GetHeader().GetKey()), headerValue(h.GetHeader())
		if f.Filter.ValidateMutations && (!validName(name) || !validValue(value)) {
			return http.StatusInternalServerError
		}
		if !f.Filter.MutationRules.allowed(name) {
			if f.Filter.MutationRules.DisallowIsError {
				return http.StatusInternalServerError
			}
			continue
		}
		setRequestHeader(out, name, value, h.GetAppend().GetValue())
	}
	for _, name := range ok.GetHeadersToRemove() {
		name = strings.ToLower(name)
		if strings.HasPrefix(name, ":") || name == "host" {
			continue
		}
		if f.Filter.ValidateMutations && !validName(name) {
			return http.StatusInternalServerError
		}
		if !f.Filter.MutationRules.allowed(name) {
			if f.Filter.MutationRules.DisallowIsError {
				return http.StatusInternalServerError
			}
			continue
		}
		out.Header.Del(name)
	}
	return 0
}

func headerValue(h *corev3.HeaderValue) string {
	if len(h.GetRawValue()) > 0 {
		return string(h.GetRawValue())
	}
	return h.GetValue()
}

// setRequestHeader is setCopy (append false or unset) or appendCopy
// (append true: joined with "," to a header that exists, skipped
// otherwise). Pseudo-headers and host change the request itself.
func setRequestHeader(out *http.Request, name, value string, appendValue bool) {
	switch name {
	case ":path":
		if u, err := url.ParseRequestURI(value); err == nil {
			out.URL, out.RequestURI = u, value
		}
		return
	case ":authority", "host":
		out.Host = value
		return
	case ":method":
		out.Method = value
		return
	case ":scheme":
		return
	}
	if appendValue {
		if prev := out.Header.Values(name); len(prev) > 0 {
			out.Header.Set(name, strings.Join(prev, ",")+","+value)
		}
		return
	}
	out.Header.Set(name, value)
}

// allowed applies HeaderMutationRules; nil rules allow everything.
func (m *MutationRules) allowed(name string) bool {
	switch {
	case m == nil:
		return true
	case m.DisallowAll:
		return false
	case strings.HasPrefix(name, ":") && m.DisallowSystem:
		return false
	case name == "host" || name == ":authority" || name == ":scheme" || name == ":method":
		return m.AllowAllRouting
	case strings.HasPrefix(name, "x-envoy"):
		return m.AllowEnvoy
	}
	return true
}

// validName and validValue are Envoy's header checks (validate_mutations):
// a lower-case token (or a pseudo-header), and no NUL, CR or LF.
func validName(name string) bool {
	n := strings.TrimPrefix(name, ":")
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

func validValue(v string) bool {
	return !strings.ContainsAny(v, "\x00\r\n")
}

func (f *Front) forward(w http.ResponseWriter, out *http.Request, body []byte, respHeaders []*corev3.HeaderValueOption) int {
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK, add: respHeaders}
	f.proxy.ServeHTTP(rec, out)
	return rec.status
}

func metadata(s *structpb.Struct) map[string]any {
	if s == nil {
		return nil
	}
	return s.AsMap()
}

// statusRecorder records the status and adds response_headers_to_add to
// the upstream's response headers (the upstream's own values stay).
type statusRecorder struct {
	http.ResponseWriter
	status int
	add    []*corev3.HeaderValueOption
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	for _, h := range s.add {
		s.Header().Add(h.GetHeader().GetKey(), headerValue(h.GetHeader()))
	}
	s.ResponseWriter.WriteHeader(code)
}

// context adds the route's context_extensions and metadata_context.
func (rt Route) context(a *authv3.AttributeContext) error {
	a.ContextExtensions = rt.ContextExtensions
	if len(rt.FilterMetadata) == 0 {
		return nil
	}
	a.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
	for ns, m := range rt.FilterMetadata {
		st, err := structpb.NewStruct(m)
		if err != nil {
			return err
		}
		a.MetadataContext.FilterMetadata[ns] = st
	}
	return nil
}
