// Package httpauthz serves the core over plain HTTP, for gateways that call
// an authorization service with an HTTP request instead of gRPC: Envoy's
// HTTP ext_authz service (under EnvoyPrefix), and the authentication
// subrequests of nginx auth_request and ingress-nginx auth-url (NginxPath,
// IngressNginxPath), Traefik forwardAuth and Caddy forward_auth
// (ForwardAuthPath). Like extauthz and kongplugin it only translates: a
// request in, the core's Decision out. The contracts it follows are in
// docs/envoy-ext-authz.md ("HTTP service mode", "Other gateways'
// authentication subrequests").
package httpauthz

import (
	"context"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/modelguard/modelguard/httpauthz/httpsettings"
	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/certid"
	"github.com/modelguard/modelguard/policy/models"
)

// The listener's routes. Envoy's http_service.path_prefix must be
// EnvoyPrefix: Envoy appends the checked request's path to it.
const (
	EnvoyPrefix      = "/envoy"
	NginxPath        = "/auth/nginx"
	IngressNginxPath = "/auth/ingress-nginx"
	ForwardAuthPath  = "/auth/forward"
)

// Gateway names, as the policy input, audit records and metrics show them.
const (
	gatewayEnvoy   = "envoy_http"
	gatewayNginx   = "nginx"
	gatewayForward = "forward_auth"
)

// ReasonBodyUnavailable denies a model request on a subrequest endpoint,
// which never receives the body, unless server.http.without_body is
// headers_only.
const ReasonBodyUnavailable = "body_unavailable"

// Decider is the core, as the handler uses it: *policy.Engine.
type Decider interface {
	Decide(ctx context.Context, req *policy.Request) *policy.Decision
	Deny(id string, status int, reason, message string) *policy.Decision
	// MaxBodyBytes is the largest body any model accepts.
	MaxBodyBytes() int
	// RecordsBody reports whether the audit record hashes the body.
	RecordsBody() bool
}

// BodyBudget bounds the request bytes held by checks in flight
// (admission.max_inflight_body_bytes); *policy.Engine implements it.
type BodyBudget interface {
	// ReserveBody takes n bytes, waiting briefly; false means overloaded.
	ReserveBody(ctx context.Context, n int64) bool
	ReleaseBody(n int64)
}

// Handler answers the listener's routes.
type Handler struct {
	decider     Decider
	budget      BodyBudget // nil when the decider has none
	headersOnly bool       // server.http.without_body: headers_only
	nginxCerts  bool       // server.http.nginx_client_certs
	principals  *certid.Principals
	log         *slog.Logger
}

// NewHandler returns the handler over d. When d is also a BodyBudget,
// bodies read for Envoy take room in it.
func NewHandler(d Decider, s httpsettings.Settings, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{decider: d, headersOnly: s.WithoutBody == httpsettings.HeadersOnly, nginxCerts: s.NginxClientCerts, log: log}
	if h.nginxCerts {
		h.principals = certid.NewPrincipals()
	}
	h.budget, _ = d.(BodyBudget)
	return h
}

// ServeHTTP routes on the raw request target: the checked path is
// modelguard's to normalise (net/http's ServeMux would clean it and
// answer with a redirect). A panic denies with 503.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if rec := recover(); rec != nil {
			d := h.decider.Deny(policy.NewDecisionID(), http.StatusServiceUnavailable, "internal_error", "service unavailable")
			h.log.Error("panic in the HTTP authorization handler: denied", "decision_id", d.ID, "panic", rec, "stack", string(debug.Stack()))
			writeDecision(w, d, false)
		}
	}()
	if target, ok := strings.CutPrefix(r.RequestURI, EnvoyPrefix); ok && strings.HasPrefix(target, "/") {
		h.envoy(w, r, target)
		return
	}
	switch r.URL.Path {
	case NginxPath:
		h.subrequest(w, r, nginxTarget)
	case IngressNginxPath:
		h.subrequest(w, r, ingressNginxTarget)
	case ForwardAuthPath:
		h.subrequest(w, r, forwardTarget)
	default:
		d := h.decider.Deny(policy.NewDecisionID(), http.StatusNotFound, "route_unknown", "not found")
		writeDecision(w, d, false)
	}
}

// envoy serves Envoy's HTTP ext_authz service: the checked request's
// method, its path after EnvoyPrefix, the headers the filter's
// allowed_headers let through and, with with_request_body, the body.
func (h *Handler) envoy(w http.ResponseWriter, r *http.Request, target string) {
	req := newRequest(r, gatewayEnvoy)
	req.Method = r.Method
	req.Path, req.Query = splitTarget(target)
	req.Host = r.Host
	req.Scheme = req.Headers["x-forwarded-proto"]
	req.SourceAddress = lastForwardedFor(req.Headers["x-forwarded-for"])
	b := &envoyBody{h: h, r: r}
	defer b.release()
	req.Fetch = b.fetch
	if h.decider.RecordsBody() {
		b.read(r.Context(), req)
	}
	d := h.decider.Decide(r.Context(), req)
	if d.Reason == models.ReasonBodyNotForwarded {
		h.log.Error("a model request arrived without its body or its x-envoy-auth-partial-body header: set with_request_body (pack_as_bytes: false) on Envoy's ext_authz filter and list x-envoy-auth-partial-body in http_service.authorization_request.allowed_headers",
			"decision_id", d.ID, "path", req.Path)
	}
	writeDecision(w, d, false)
}

// subrequest serves an authentication subrequest: the gateway names the
// checked request's method and target in headers (parse reads them) and
// sends no body.
func (h *Handler) subrequest(w http.ResponseWriter, r *http.Request, parse targetParser) {
	gateway := gatewayForward
	if r.URL.Path != ForwardAuthPath {
		gateway = gatewayNginx
	}
	req := newRequest(r, gateway)
	refusal := parse(req, r)
	req.HeadersOnly = h.headersOnly
	certs := h.nginxCerts && r.URL.Path == NginxPath
	req.Fetch = func(req *policy.Request, parts policy.Part) error {
		if parts&policy.PartTLSPrincipal != 0 && certs {
			// Asked for while authenticating: before the target's refusal,
			// which waits for the caller to be known.
			p, err := nginxPrincipal(h.principals, req.Headers)
			if err != nil {
				h.log.Warn("the verified client certificate is no identity", "request_id", req.ID, "error", err)
			}
			req.TLSPrincipal = p
		}
		if parts &^= policy.PartTLSPrincipal; parts == 0 {
			return nil
		}
		if refusal != nil {
			return refusal
		}
		if parts&policy.PartBody != 0 && !h.headersOnly {
			return &policy.Refusal{Status: http.StatusForbidden, Reason: ReasonBodyUnavailable,
				Message: "model requests are not accepted on this route", Err: errNoBody}
		}
		return nil
	}
	d := h.decider.Decide(r.Context(), req)
	writeDecision(w, d, gateway == gatewayNginx)
}

// newRequest starts the policy.Request of r with its headers: lower-case
// names, repeats joined with "," as the core expects.
func newRequest(r *http.Request, gateway string) *policy.Request {
	headers := make(map[string]string, len(r.Header))
	for name, values := range r.Header {
		name = strings.ToLower(name)
		if len(values) == 1 {
			headers[name] = values[0]
			continue
		}
		for _, v := range values {
			policy.AddHeader(headers, name, v)
		}
	}
	return &policy.Request{Gateway: gateway, ID: policy.RequestID(headers, ""), Headers: headers}
}
