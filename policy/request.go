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
	// Gateway names the adapter: "envoy" or "kong".
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

	// Body is the request body as received (possibly compressed), or nil.
	Body []byte
	// BodyTruncated is set when the gateway cut the body short; a truncated
	// body is never inspected as if it were whole.
	BodyTruncated bool
	// BodyOmitted is set when the gateway was not configured to forward
	// bodies (Envoy without with_request_body): model requests are then
	// refused, since their bodies cannot be checked.
	BodyOmitted bool
}

// Header is one header name and value.
type Header struct {
	Name  string
	Value string
}
