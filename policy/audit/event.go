// Package audit keeps modelguard's audit trail: one record per decision and
// per operator event, hash-chained so that an edit, deletion, insertion or
// reordering is detected, written by an asynchronous group-commit writer to
// stdout, a rotated file and/or an HTTP endpoint (through a disk spool).
//
// Records never carry tokens, keys, request bodies or prompts; JWT claims
// are not recorded either (the subject, auth method, key id and issuer
// are), so there is nothing to redact.
//
// # Record encoding
//
// A record is one line: a JSON object written by this package's own encoder
// so that its bytes are stable. Members appear in the order of the Event
// fields below, with no whitespace; seq, prev, time and kind are always
// present, every other member is omitted when it is zero or empty, and
// "hash" is always last. Integers are decimal; time is RFC 3339 in UTC with
// exactly six fractional digits; strings escape '"' and '\' with a
// backslash, \n \r \t as such and other bytes below 0x20 as \u00xx (lower
// case), and carry everything else as UTF-8 (invalid UTF-8 becomes U+FFFD).
//
// The hash input of a record is its line without the final newline and
// without the final `,"hash":"..."` member: the bytes up to that comma,
// followed by "}". hash is the lower-case hex SHA-256 of that input, or its
// HMAC-SHA256 under the configured key (a keyed trail cannot be rebuilt by
// someone who can edit the file but does not hold the key). prev is the hash
// of the previous record, 64 zeros for the first record of a trail; seq
// counts from 1 with no gaps. A verifier decodes each line, encodes it again
// and requires the same bytes, so a record has exactly one valid encoding.
package audit

import "time"

// Event kinds. A decision is one request's outcome; a completion adds what
// a gateway learns only after the response; the others are operator events.
const (
	KindDecision = "decision"
	// KindCompletion follows a decision recorded before the response
	// (Kong's access phase) and is linked to it by DecisionID. Status is
	// what the client finally got (the upstream's, on an allow) and Reason
	// the decision's, or the gateway adapter's when it answered otherwise
	// than recorded (audit_unavailable, kong_pdk_error); LatencyMicros is
	// the time from the decision to the end of the response. Method, Path
	// and SourceAddress appear when the decision record lacks them (Kong
	// reads them only when the decision needs them).
	KindCompletion   = "completion"
	KindStart        = "start"           // the process started (Detail: version)
	KindStop         = "stop"            // graceful shutdown; the last record of a run
	KindConfigLoaded = "config_loaded"   // File: the configuration; PolicyRevision
	KindConfigReload = "config_reload"   // Outcome ok/refused; File; PolicyRevision; Detail: why refused, or what needs a restart
	KindPolicyReload = "policy_reload"   // Outcome ok/refused; PolicyRevision; Detail: why refused
	KindKeyReload    = "key_reload"      // Outcome ok/refused; File: the key file
	KindSchemaReload = "schema_reload"   // Outcome ok/refused
	KindJWKSRefresh  = "jwks_refresh"    // Outcome failed; Issuer; Detail
	KindRecovered    = "audit_recovered" // a torn last record was quarantined at start; File: where
	KindIPListReload = "ip_list_reload"  // Outcome ok/refused; File: the list file; Detail: list name or why refused
	KindLockout      = "lockout"         // a source was locked out after failed authentications; SourceAddress, KeyID, Reason (what tripped it)
	// KindShadow follows a decision whose shadow policy disagreed with the
	// enforced one, or failed, and is linked to it by DecisionID: Result,
	// Reason and PolicyRevision are the enforced policy's answer (allow,
	// deny or error), the Shadow fields the shadow policy's; Detail is the
	// shadow's error. The decision itself is unchanged.
	KindShadow = "shadow"
)

// BodyCheckSkipped is Event.BodyCheck for a model request whose body was
// not checked.
const BodyCheckSkipped = "skipped"

// Event is one audit record, the single definition of the audit schema:
// every gateway and every operator event produces it. The field order is the
// canonical member order (see the package documentation).
type Event struct {
	// Seq, Prev and Hash chain the record; the writer sets them.
	Seq  uint64    `json:"seq"`
	Prev string    `json:"prev"`
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`

	DecisionID    string `json:"decision_id,omitempty"`
	RequestID     string `json:"request_id,omitempty"`
	Gateway       string `json:"gateway,omitempty"`
	Subject       string `json:"subject,omitempty"`
	AuthMethod    string `json:"auth_method,omitempty"`
	KeyID         string `json:"key_id,omitempty"`
	Issuer        string `json:"issuer,omitempty"`
	Model         string `json:"model,omitempty"`
	Operation     string `json:"operation,omitempty"`
	Method        string `json:"method,omitempty"`
	Path          string `json:"path,omitempty"`
	SourceAddress string `json:"source_address,omitempty"`
	// Result is "allow" or "deny", or "would_deny": an allowed request the
	// policy denied in dry-run (Status and Reason are then the policy's).
	Result         string `json:"result,omitempty"`
	Status         int    `json:"status,omitempty"`
	Reason         string `json:"reason,omitempty"`
	PolicyRevision string `json:"policy_revision,omitempty"`
	LatencyMicros  int64  `json:"latency_us,omitempty"`
	// BodySHA256 is the hex SHA-256 of the request body as the gateway
	// forwarded it (before decompression), with audit.body_sha256.
	BodySHA256 string `json:"body_sha256,omitempty"`
	// BodyCheck is BodyCheckSkipped for a model request decided on its
	// headers alone (the gateway's authentication subrequest carries no
	// body, and the operator chose to decide such requests); absent
	// otherwise.
	BodyCheck string `json:"body_check,omitempty"`
	// RateLimit names the limit that refused a request, RateLimitKey what
	// it counts per ("subject+model"): never the key's values.
	RateLimit    string `json:"rate_limit,omitempty"`
	RateLimitKey string `json:"rate_limit_key,omitempty"`
	// TraceID and SpanID link a decision to its OpenTelemetry trace (hex,
	// with tracing on): TraceID when the decision was traced or the
	// request carried a trace context, SpanID when the decision's span was
	// sampled (exported).
	TraceID string `json:"trace_id,omitempty"`
	SpanID  string `json:"span_id,omitempty"`
	// IPList names the address list that decided (policy/iplist): the deny
	// list holding the client address, or the allow list admitting it.
	IPList string `json:"ip_list,omitempty"`
	// DLP names the prompt rules that matched (policy/dlp), comma-separated:
	// the rule that refused the request, or those that only flagged it.
	// Never the matched text.
	DLP string `json:"dlp,omitempty"`
	// The shadow policy's answer (KindShadow): allow, deny or error, its
	// reason and its revision.
	ShadowResult   string `json:"shadow_result,omitempty"`
	ShadowReason   string `json:"shadow_reason,omitempty"`
	ShadowRevision string `json:"shadow_revision,omitempty"`

	// Operator events: the outcome (ok, refused, failed), a short detail
	// (an error message, a version) and the file concerned.
	Outcome string `json:"outcome,omitempty"`
	Detail  string `json:"detail,omitempty"`
	File    string `json:"file,omitempty"`

	Hash string `json:"hash"`
}
