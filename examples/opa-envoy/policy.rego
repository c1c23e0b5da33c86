# Example policy written the way opa-envoy-plugin's documentation writes
# them: package envoy.authz, rule allow (modelguard's default query with
# authorization.input: opa-envoy), reading input.attributes,
# input.parsed_path and input.parsed_body, and answering with
# opa-envoy-plugin's object result. It runs unchanged under
# opa-envoy-plugin, and under modelguard behind Envoy or Kong.
#
# The policy verifies the bearer token itself (io.jwt.decode_verify with
# the key in data.yaml), so modelguard runs it with
# authentication.allow_anonymous and no JWT issuer or API key file: the
# Authorization header then reaches the policy untouched.
#
# modelguard's own facts sit beside opa-envoy-plugin's input under
# input.modelguard (subject, model, body facts such as stream and
# max_tokens); one rule below reads them.
package envoy.authz

# The token of "Authorization: Bearer <token>"; undefined without one.
bearer := t if {
	v := input.attributes.request.http.headers.authorization
	startswith(v, "Bearer ")
	t := substring(v, count("Bearer "), -1)
}

# The verified claims; undefined when the token is missing, expired,
# signed with another key or for another issuer or audience.
claims := payload if {
	[valid, _, payload] := io.jwt.decode_verify(bearer, data.jwt.constraints)
	valid
}

role := claims.role

# Header check: the x-tenant header must name the token's tenant.
tenant_matches if input.attributes.request.http.headers["x-tenant"] == claims.tenant

method := input.attributes.request.http.method

# The path as parsed_path gives it: percent-decoded, without the query.
path := concat("/", array.concat([""], input.parsed_path))

# Path and method RBAC: a role may use the routes data.yaml lists for it
# (glob patterns, "*" within one path segment).
route_allowed if {
	some route in data.rbac[role].routes
	route.method == method
	glob.match(route.path, ["/"], path)
}

is_chat if input.parsed_path == ["v1", "chat", "completions"]

# parsed_body checks: a chat request names a model of the role and asks
# for no more completion tokens than the role's cap.
body_allowed if not is_chat

body_allowed if {
	is_chat
	input.parsed_body.model in data.rbac[role].models
	object.get(input.parsed_body, "max_tokens", 0) <= data.rbac[role].max_tokens
	stream_allowed
}

# modelguard's facts: streaming is for roles that allow it.
stream_allowed if not input.modelguard.body.stream

stream_allowed if data.rbac[role].stream

permitted if {
	tenant_matches
	route_allowed
	body_allowed
}

# Without a valid token: 401 with a challenge, as a denial's headers.
default allow := {
	"allowed": false,
	"http_status": 401,
	"headers": {"www-authenticate": "Bearer realm=\"models\"", "content-type": "application/json"},
	"body": "{\"error\":{\"message\":\"invalid or missing token\",\"type\":\"authentication_error\",\"code\":\"invalid_token\"}}",
}

# Allowed: the upstream learns who called, the token stays here, and the
# client sees which policy decided.
allow := {
	"allowed": true,
	"headers": {"x-user": claims.sub, "x-tenant": claims.tenant},
	"request_headers_to_remove": ["authorization"],
	"response_headers_to_add": {"x-policy": "opa-envoy-example"},
	"dynamic_metadata": {"tenant": claims.tenant, "role": role},
} if permitted

# A valid token that may not do this: 403.
allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":{\"message\":\"access denied\",\"type\":\"permission_error\",\"code\":\"forbidden\"}}",
} if {
	claims
	not permitted
}
