// Package policy is modelguard's transport-neutral core. Gateway adapters
// (extauthz for Envoy and Istio, kongplugin for Kong) translate their request
// into a Request, call Engine.Decide (and RecordCompletion when the gateway
// reports the final status later), and translate the Decision back;
// what they share beyond that is in adapter.go. The core authenticates
// (policy/jwtauth, policy/apikey), checks model bodies (policy/models),
// authorizes with Rego (policy/rego) and records an audit event
// (policy/audit); gateway-specific code and advice live in the adapters.
package policy

// Request is one HTTP request as a gateway saw it.
type Request struct {
	// Gateway names the adapter: "envoy" or "kong" (and, for the HTTP
	// authorization service, "envoy_http", "nginx" or "forward_auth").
	Gateway string
	// ID is the request id (x-request-id when present), for correlation.
	ID string

	Method string
	// Path excludes the query string.
	Path string
	// Query is the raw query string, without "?".
	Query  string
	Host   string
	Scheme string

	// Headers has lower-case names; repeated headers are joined with ",".
	// Names starting with ":" (HTTP/2 pseudo-headers, which Envoy includes)
	// are ignored, so adapters can pass the gateway's map without copying.
	Headers map[string]string

	// SourceAddress is the downstream peer ("ip:port"), not X-Forwarded-For.
	SourceAddress string
	// TLSPrincipal is the client certificate identity (e.g. a SPIFFE ID).
	TLSPrincipal string

	// ContextExtensions are the per-route context_extensions Envoy sends
	// (nil from Kong).
	ContextExtensions map[string]string
	// MetadataContext is Envoy's metadata_context.filter_metadata:
	// namespace to JSON object, such as the claims of Envoy's jwt_authn
	// filter (nil from Kong).
	MetadataContext map[string]any

	// Body is the request body as received (possibly compressed), or nil.
	Body []byte
	// BodyTruncated is set when the gateway cut the body short; a truncated
	// body is never inspected as if it were whole.
	BodyTruncated bool
	// BodyOmitted is set when the gateway was not configured to forward
	// bodies (Envoy without with_request_body): model requests are then
	// refused, since their bodies cannot be checked.
	BodyOmitted bool
	// HeadersOnly is set by an adapter whose gateway never forwards bodies
	// (an authentication subrequest) when the operator chose to decide
	// model requests on their headers: the body checks are skipped, the
	// model is known only when the path names it, input.body is absent,
	// a token budget reserves the completion allowance alone, and the
	// audit record says body_check "skipped".
	HeadersOnly bool

	// Fetch, when set, hands over parts of the request the gateway has not
	// set yet: an adapter whose every read is a round trip (Kong's plugin
	// socket) starts with the headers and reads the rest only when the
	// decision needs it. Evaluate asks for each part at most once: the
	// method and path once the caller is authenticated, the body for
	// model requests, the query, scheme and source address for policies
	// that read them, the client certificate's principal when it may
	// authenticate the caller or the policy reads it. An error denies the
	// request: a *Refusal with its status, any other with 503.
	Fetch   func(req *Request, parts Part) error
	fetched Part
}

// Part names parts of a Request a Fetch hands over.
type Part uint8

const (
	PartTarget        Part = 1 << iota // Method and Path
	PartBody                           // Body and BodyTruncated
	PartQuery                          // Query
	PartScheme                         // Scheme
	PartSourceAddress                  // SourceAddress
	PartTLSPrincipal                   // TLSPrincipal
)

// Complete asks Fetch for those of parts not fetched yet: Evaluate does for
// what the decision needs, an adapter may for what it records.
func (r *Request) Complete(parts Part) error {
	parts &^= r.fetched
	if r.Fetch == nil || parts == 0 {
		return nil
	}
	r.fetched |= parts
	return r.Fetch(r, parts)
}

// Header is one header name and value.
type Header struct {
	Name  string
	Value string
}
