// Package rego is modelguard's authorization step: it evaluates the
// operator's Rego policy (OPA, Rego v1 syntax) for each request and keeps the
// policy current as its files change.
//
// # Policy directory
//
// The directory holds .rego modules and data files (.json, .yaml, .yml),
// loaded with OPA's loader: data in a subdirectory lands under data.<subdir>.
// Files named *_test.rego are Rego tests, run by [RunTests] and never part of
// the running policy. Names starting with "." are skipped, which also skips a
// Kubernetes ConfigMap volume's hidden "..data" and "..<timestamp>" entries:
// files are read through the visible names, whose symlinks are followed.
// The revision is a short hex SHA-256 over the sorted names and contents of
// the running policy's files.
//
// # Input document
//
// The core writes input (an [Input]) with only the members the policy can
// read ([Policy.Inputs]); it is built as an ast.Value when the policy
// evaluates:
//
//	input.gateway   "envoy" | "kong"
//	input.subject   id            subject (JWT subject claim or API key owner)
//	                roles         [string]
//	                auth_method   "jwt" | "api_key" | "none"
//	                key_id        API key id, "" otherwise
//	                issuer        JWT issuer, "" for API keys
//	                claims        the JWT's claims, {} otherwise
//	input.request   id, method, path (no query string), host, scheme,
//	                query          {name: [values]}
//	                headers        {lower-case name: value}, credentials removed
//	                               (kept with allow_anonymous and no authenticator)
//	                context_extensions, metadata_context (Envoy, when set)
//	                source_address, tls_principal
//	input.model     {name, operation} when known, absent otherwise;
//	                operation is one of chat, completion, embeddings, infer,
//	                predict, list (model listing and metadata)
//
// With Settings.Input ShapeOPAEnvoy, the input is opa-envoy-plugin's
// (attributes, parsed_path, parsed_query, parsed_body, truncated_body,
// version) with the document above under input.modelguard; the core builds
// it (policy/opaenvoy.go). [Inputs] names the members built only for
// policies that read them, in either shape.
//
// # Result
//
// The query (default [DefaultQuery]) must name a rule. Its value is either a
// boolean or an object:
//
//	{"allow": bool,                      required
//	 "status": 400..599,                 deny status, used only when denied
//	 "reason": string,                   operator-facing code, logged
//	 "message": string,                  safe to show the client
//	 "headers": {name: value},           set on the upstream request when allowed
//	 "response_headers": {name: value},  set on the response to the client
//	 "rate_limit_class": string}         selects rate limit rules by class
//
// An object with "allowed" is opa-envoy-plugin's result instead:
//
//	{"allowed": bool, "headers", "response_headers_to_add",
//	 "request_headers_to_remove", "http_status", "body", "dynamic_metadata"}
//
// with that project's meaning (see decodeOPAEnvoy).
//
// print() output goes to the Engine's logger with the decision id the
// evaluation's context carries ([WithDecisionID]); [WithTracer] records
// OPA's evaluation trace.
//
// An undefined result denies with reason [ReasonUndefined]. Any other shape
// (allow missing or not a boolean, unknown keys, a status out of range,
// non-string or invalid headers) is an error, as are evaluation errors,
// including builtin errors and timeouts: the caller denies on every error.
//
// # Decision cache
//
// An Engine with a decision cache (see [CacheSettings]) answers a request
// whose values at every input path the policy can read equal those of an
// earlier one with that earlier decision. Policies whose decisions depend
// on more than input and data are never cached; [Policy.Cacheable] says
// why. The key is encoded as the request's input is written, without
// building it (policy/rego/inputdoc): a hit builds no input.
//
// # Reload
//
// [Open] compiles the policy once and then watches its directory, or, with
// Settings.Bundle, starts an OPA bundle source (policy/bundle) whose
// bundles replace the policy as they arrive; before its first bundle,
// evaluations fail with [ErrNoPolicy]. A changed policy is compiled and
// prepared before it replaces the running one, off the request path; one
// that fails (syntax or type error, unknown query rule, bad data file, a
// bundle that is unsigned or tampered with) is refused and the last good
// revision keeps deciding. Evaluations in flight finish on the revision they
// started with.
//
// # Dry-run and shadow
//
// [DryRun] says which requests' denials the caller lets through (recording
// them); [OpenShadow] opens a second policy source that the caller
// evaluates beside the enforced one. Both are settings of the
// authorization section; what they do to a decision is the caller's.
package rego
