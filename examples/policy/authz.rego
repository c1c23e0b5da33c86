# Example modelguard policy: role-based access to models, driven by the data
# in data.yaml (data.modelguard.rbac) so operators grant access by editing
# data, without touching code or redeploying.
#
# Configure authorization.query: data.modelguard.authz.decision to get a
# denial reason and message for each request; the default query,
# data.modelguard.authz.allow, gives a plain yes/no (denials then use 403).
#
# The input document (built by modelguard for every request):
#
#	input.gateway   "envoy" | "kong" | "envoy_http" | "nginx" | "forward_auth"
#	input.subject   {id, roles, auth_method ("jwt" | "api_key" | "none"),
#	                 key_id, issuer, claims}
#	input.request   {id, method, path, query, host, scheme, headers,
#	                 source_address, tls_principal}
#	input.body      {max_tokens, stream, n, messages, prompt_chars, tools}:
#	                facts of a checked model request body; max_tokens (the
#	                largest of max_tokens, max_completion_tokens and
#	                max_output_tokens) and n only when the request sets them.
#	input.model     {name, operation}; absent when the model is unknown.
#	                Operations: chat, completion, embeddings, infer, predict,
#	                list (model listing and metadata; name may be "").
package modelguard.authz

# roles maps a role name to {models, operations, read_only}; see data.yaml.
roles := data.modelguard.rbac.roles

# subject_roles are the caller's role names; anonymous callers have none.
subject_roles := object.get(input, ["subject", "roles"], [])

# granted holds the definitions of the caller's roles. Role names this policy
# does not define grant nothing.
granted contains role if {
	some name in subject_roles
	role := roles[name]
}

default allow := false

# A request is allowed when at least one of the caller's roles permits it.
allow if {
	some name in subject_roles
	permits(roles[name])
}

# A read-only role permits reads and nothing else.
permits(role) if {
	role.read_only
	is_read
}

permits(role) if {
	not role.read_only
	operation_permitted(role)
	model_permitted(role)
	within_token_cap(role)
}

# within_token_cap: the role sets no cap, the request asks for no particular
# number of tokens, or it asks for no more than the cap.
within_token_cap(role) if not role.max_tokens

within_token_cap(_) if not input.body.max_tokens

within_token_cap(role) if input.body.max_tokens <= role.max_tokens

# is_read: a GET or HEAD whose operation, when known, is a listing. A GET
# that runs a model (say, an inference server's GET predict route) is not a read.
is_read if {
	input.request.method in {"GET", "HEAD"}
	not input.model
}

is_read if {
	input.request.method in {"GET", "HEAD"}
	input.model.operation == "list"
}

# With input.model absent, only a role granting every operation and every
# model passes both checks below: an unidentified model is not a named one.
operation_permitted(role) if "*" in role.operations

operation_permitted(role) if input.model.operation in role.operations

model_permitted(role) if "*" in role.models

model_permitted(role) if input.model.name in role.models

# Listing all models names no model: the "list" operation grant is enough.
model_permitted(_) if {
	input.model.operation == "list"
	object.get(input.model, "name", "") == ""
}

# reason is the operator-facing code for the decision, most specific first.
reason := "allowed" if {
	allow
} else := "no_roles" if {
	count(subject_roles) == 0
} else := "role_not_permitted" if {
	# None of the caller's roles is defined here.
	count(granted) == 0
} else := "read_only" if {
	every role in granted {
		role.read_only
	}
} else := "model_unknown" if {
	not input.model
} else := "max_tokens_exceeded" if {
	# Some role grants the operation on this model, under a token cap.
	some role in granted
	not role.read_only
	operation_permitted(role)
	model_permitted(role)
} else := "model_not_permitted" if {
	# Some role grants the operation, just not on this model.
	some role in granted
	not role.read_only
	operation_permitted(role)
} else := "role_not_permitted"

# messages are safe to show the client: they name no roles or models.
messages := {
	"no_roles": "access denied: no roles are assigned to this caller",
	"role_not_permitted": "access denied: the caller's roles do not permit this operation",
	"read_only": "access denied: the caller has read-only access",
	"model_unknown": "access denied: the requested model could not be identified",
	"model_not_permitted": "access denied: the caller's roles do not permit this model",
	"max_tokens_exceeded": "access denied: max_tokens is above what the caller's roles allow",
}

# rate_limit_class is the caller's tier of rate limits: the first tier in
# data.modelguard.rbac.tiers (best first) that one of the caller's roles
# names in its rate_limit_class. Configuration rules with match.classes
# apply to the tier; moving a role to another tier is a data edit.
default rate_limit_class := "default"

rate_limit_class := tiers[0] if {
	role_tiers := {role.rate_limit_class | some role in granted}
	tiers := [tier | some tier in data.modelguard.rbac.tiers; tier in role_tiers]
	count(tiers) > 0
}

# decision is the object form of the result: modelguard denies with its
# status and message, and logs its reason; an allowed request is counted
# against the rate limits of its tier.
decision := {"allow": true, "reason": reason, "rate_limit_class": rate_limit_class} if {
	allow
} else := {
	"allow": false,
	"status": 403,
	"reason": reason,
	"message": messages[reason],
}
