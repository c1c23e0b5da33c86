package policy

import (
	"cmp"
	"encoding/json"
	"net/http"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/ratelimit"
)

// Decision is the core's answer for one Request.
type Decision struct {
	// ID identifies this decision in logs, audit and upstream headers.
	ID    string
	Allow bool
	// Status is the HTTP status: 200 when allowed, 4xx/5xx when denied.
	Status int
	// Reason is a stable snake_case code for operators (logs, audit,
	// metrics). It is never sent to the client.
	Reason string
	// Message is short and safe to show the client.
	Message string
	// ErrorType and ErrorCode, when set, replace the OpenAI error type and
	// code Body derives from Status (rate limit refusals use OpenAI's own).
	ErrorType, ErrorCode string

	// UpstreamHeaders are set (replacing any client value) on allowed
	// requests; RemoveHeaders are removed from them (credentials and
	// client-sent identity headers that were not set).
	UpstreamHeaders []Header
	RemoveHeaders   []string
	// ResponseHeaders go to the client, on allow and on deny.
	ResponseHeaders []Header
	// PolicyBody, when not nil, is the denial body the policy chose
	// (opa-envoy-plugin's body), sent as is instead of Body's JSON.
	PolicyBody []byte
	// Metadata is the policy's dynamic_metadata (opa-envoy-plugin's), for
	// the gateway to keep with the request; nil when none.
	Metadata map[string]any

	// Identity is the authenticated caller, nil when authentication failed.
	Identity *Identity
	// Model is the model the request addresses, when known.
	Model Model
	// PolicyRevision is the Rego revision that decided ("" if not reached).
	PolicyRevision string
	// BodyUnchecked is set for a model request decided on its headers
	// alone (Request.HeadersOnly).
	BodyUnchecked bool
	// WouldDeny is the policy's denial (or error) that dry-run let through,
	// nil otherwise: the audit record and metrics say would_deny with it.
	WouldDeny *PolicyDenial
	// RateLimit names the limit that refused the request and RateLimitKey
	// what it counts per ("subject+model"), for the audit record.
	RateLimit, RateLimitKey string
	// IPList names the address list that decided (see policy/iplist).
	IPList string
	// DLP names the prompt rules that matched (see policy/dlp),
	// comma-separated: the one that denied, or those that flagged.
	DLP string
	// Reservation is the token budgets an allowed request holds, for the
	// gateway to settle from the real usage; set only with
	// Options.HoldReservations, nil when it holds none.
	Reservation *ratelimit.Reservation
	// Start is when evaluation began; Latency how long it took.
	Start   time.Time
	Latency time.Duration
	// Trace links the decision to its OpenTelemetry trace, when traced.
	Trace Trace
}

// ReasonOverloaded is the reason of a request shed under load (see
// policy/admission): 503 with retry-after, which clients may retry.
const ReasonOverloaded = "overloaded"

// SetOverloaded makes d the denial of a request shed under load.
func (d *Decision) SetOverloaded() {
	d.Allow = false
	d.Status = http.StatusServiceUnavailable
	d.Reason = ReasonOverloaded
	d.Message = "server overloaded, retry later"
	d.ResponseHeaders = append(d.ResponseHeaders, Header{"retry-after", "1"})
}

// PolicyDenial is what the policy would have answered in dry-run.
type PolicyDenial struct {
	Status int
	Reason string
}

// Identity is an authenticated caller.
type Identity struct {
	Subject string
	Roles   []string
	// Method is "jwt", "api_key" or "none" (anonymous).
	Method string
	// KeyID is the API key id; Issuer the JWT issuer.
	KeyID  string
	Issuer string
	// Claims are the verified JWT claims (nil for other methods).
	Claims map[string]any

	claimsValue ast.Object // Claims as policy input, when already converted
}

// Model is the model and operation a request addresses.
type Model struct {
	Name      string
	Operation string
}

// Body is the JSON error body for a denied request, shaped like OpenAI's
// errors ({"error":{"message","type","code"}}) so OpenAI-compatible SDKs
// show it. It carries only Message and codes derived from Status (or set
// in ErrorType and ErrorCode).
func (d *Decision) Body() []byte {
	if d.PolicyBody != nil {
		return d.PolicyBody
	}
	type apiError struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	}
	b, err := json.Marshal(struct {
		Error apiError `json:"error"`
	}{apiError{Message: d.Message, Type: cmp.Or(d.ErrorType, errorType(d.Status)), Code: cmp.Or(d.ErrorCode, errorCode(d.Status))}})
	if err != nil { // unreachable: strings always marshal
		return []byte(`{"error":{"message":"denied","type":"permission_error","code":"forbidden"}}`)
	}
	return b
}

// DenialHeaders are the response headers of a denial: Body's content type,
// then ResponseHeaders. A policy's own body is text unless the policy's
// headers say otherwise.
func (d *Decision) DenialHeaders() []Header {
	hs := make([]Header, 0, len(d.ResponseHeaders)+1)
	switch {
	case d.PolicyBody == nil:
		hs = append(hs, Header{"content-type", "application/json"})
	case !hasHeader(d.ResponseHeaders, "content-type"):
		hs = append(hs, Header{"content-type", "text/plain; charset=utf-8"})
	}
	return append(hs, d.ResponseHeaders...)
}

// errorType follows OpenAI's error "type" vocabulary.
func errorType(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusNotFound:
		return "invalid_request_error"
	default:
		if status >= 500 {
			return "server_error"
		}
		return "invalid_request_error"
	}
}

func errorCode(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "invalid_credentials"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusTooManyRequests:
		return "rate_limit_exceeded"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusUnsupportedMediaType:
		return "unsupported_media_type"
	case http.StatusServiceUnavailable:
		return "service_unavailable"
	case http.StatusBadRequest:
		return "invalid_request"
	default:
		return "error"
	}
}
