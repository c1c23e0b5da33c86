# Tests for the example policy. Run them with `opa test examples/policy` or
# through modelguard's Go tests (policy/rego).
package modelguard.authz_test

import data.modelguard.authz

# A request whose model the gateway identified.
model_request(roles, method, path, name, operation) := {
	"gateway": "envoy",
	"subject": subject(roles),
	"request": request(method, path),
	"model": {"name": name, "operation": operation},
}

# A request whose model the gateway could not identify.
unknown_model_request(roles, method, path) := {
	"gateway": "envoy",
	"subject": subject(roles),
	"request": request(method, path),
}

chat(roles, model) := model_request(roles, "POST", "/v1/chat/completions", model, "chat")

subject(roles) := {
	"id": "alice",
	"roles": roles,
	"auth_method": "jwt",
	"key_id": "",
	"issuer": "https://idp.example.com",
	"claims": {"sub": "alice", "roles": roles},
}

request(method, path) := {
	"id": "req-1",
	"method": method,
	"path": path,
	"query": {},
	"host": "models.example.com",
	"scheme": "https",
	"headers": {"content-type": "application/json"},
	"source_address": "10.0.0.7:51234",
	"tls_principal": "",
}

anonymous := {
	"gateway": "kong",
	"subject": {"id": "", "roles": [], "auth_method": "none", "key_id": "", "issuer": "", "claims": {}},
	"request": request("POST", "/v1/chat/completions"),
	"model": {"name": "gpt-4o-mini", "operation": "chat"},
}

allowed(doc) if {
	authz.allow with input as doc
	d := authz.decision with input as doc
	d.allow == true
	d.reason == "allowed"
}

# The tier of a caller's limits: the best tier one of its roles names.
test_rate_limit_class_of_a_role if {
	d := authz.decision with input as chat(["chat-user"], "gpt-4o-mini")
	d.rate_limit_class == "standard"
}

test_rate_limit_class_best_of_several_roles if {
	d := authz.decision with input as chat(["trial", "chat-user"], "gpt-4o-mini")
	d.rate_limit_class == "standard"
}

test_rate_limit_class_default if {
	d := authz.decision with input as model_request(["ml-engineer"], "POST", "/v2/models/resnet50/infer", "resnet50", "infer")
	d.rate_limit_class == "default"
}

test_rate_limit_class_moves_with_data if {
	d := authz.decision with input as chat(["chat-user"], "gpt-4o-mini")
		with data.modelguard.rbac.roles["chat-user"].rate_limit_class as "trial"
	d.rate_limit_class == "trial"
}

denied(doc, reason) if {
	not authz.allow with input as doc
	d := authz.decision with input as doc
	d.allow == false
	d.status == 403
	d.reason == reason
	d.message != ""
}

# admin

test_admin_any_model_any_operation if {
	allowed(chat(["admin"], "gpt-4o"))
	allowed(model_request(["admin"], "POST", "/v2/models/resnet/infer", "resnet", "infer"))
	allowed(model_request(["admin"], "POST", "/v1/embeddings", "text-embedding-3-small", "embeddings"))
}

test_admin_unknown_model if {
	allowed(unknown_model_request(["admin"], "POST", "/v1/something/new"))
}

# reader

test_reader_get_listing if {
	allowed(model_request(["reader"], "GET", "/v1/models", "", "list"))
	allowed(model_request(["reader"], "GET", "/v1/models/gpt-4o", "gpt-4o", "list"))
	allowed(model_request(["reader"], "HEAD", "/v1/models", "", "list"))
}

test_reader_get_unknown_model if {
	allowed(unknown_model_request(["reader"], "GET", "/health"))
}

test_reader_post_denied if {
	denied(chat(["reader"], "gpt-4o-mini"), "read_only")
	denied(unknown_model_request(["reader"], "POST", "/v1/models"), "read_only")
}

test_reader_get_running_a_model_denied if {
	denied(model_request(["reader"], "GET", "/v1/models/resnet:predict", "resnet", "predict"), "read_only")
}

# chat-user

test_chat_user_permitted_models_and_operations if {
	allowed(chat(["chat-user"], "gpt-4o-mini"))
	allowed(chat(["chat-user"], "llama-3.1-8b-instruct"))
	allowed(model_request(["chat-user"], "POST", "/v1/completions", "gpt-4o-mini", "completion"))
	allowed(model_request(["chat-user"], "POST", "/v1/embeddings", "gpt-4o-mini", "embeddings"))
}

with_max_tokens(doc, n) := object.union(doc, {"body": {"max_tokens": n, "stream": false, "messages": 1, "prompt_chars": 5, "tools": []}})

test_chat_user_token_cap if {
	allowed(with_max_tokens(chat(["chat-user"], "gpt-4o-mini"), 1024))
	denied(with_max_tokens(chat(["chat-user"], "gpt-4o-mini"), 1025), "max_tokens_exceeded")
	# No max_tokens in the request: the role's cap does not apply.
	allowed(object.union(chat(["chat-user"], "gpt-4o-mini"), {"body": {"stream": true, "messages": 1, "prompt_chars": 5, "tools": []}}))
}

test_token_cap_is_per_role if {
	# admin has no cap: a caller with both roles is allowed through admin.
	allowed(with_max_tokens(chat(["chat-user", "admin"], "gpt-4o-mini"), 100000))
	# The cap does not turn a model outside the role into a token problem.
	denied(with_max_tokens(chat(["chat-user"], "gpt-4o"), 5000), "model_not_permitted")
}

test_chat_user_lists_models if {
	allowed(model_request(["chat-user"], "GET", "/v1/models", "", "list"))
	allowed(model_request(["chat-user"], "GET", "/v1/models/gpt-4o-mini", "gpt-4o-mini", "list"))
}

test_chat_user_other_model_denied if {
	denied(chat(["chat-user"], "gpt-4o"), "model_not_permitted")
	denied(model_request(["chat-user"], "GET", "/v1/models/gpt-4o", "gpt-4o", "list"), "model_not_permitted")
}

test_chat_user_model_names_are_exact if {
	denied(chat(["chat-user"], "GPT-4o-mini"), "model_not_permitted")
	denied(chat(["chat-user"], "gpt-4o-mini "), "model_not_permitted")
	denied(chat(["chat-user"], "*"), "model_not_permitted")
}

test_chat_user_empty_model_name_denied if {
	# Only a listing may name no model.
	denied(chat(["chat-user"], ""), "model_not_permitted")
}

test_chat_user_other_operation_denied if {
	denied(model_request(["chat-user"], "POST", "/v2/models/gpt-4o-mini/infer", "gpt-4o-mini", "infer"), "role_not_permitted")
}

test_chat_user_unknown_model_denied if {
	denied(unknown_model_request(["chat-user"], "POST", "/v1/chat/completions"), "model_unknown")
	denied(unknown_model_request(["chat-user"], "GET", "/v1/files"), "model_unknown")
}

# ml-engineer

test_ml_engineer_infer_and_predict_any_model if {
	allowed(model_request(["ml-engineer"], "POST", "/v2/models/resnet/infer", "resnet", "infer"))
	allowed(model_request(["ml-engineer"], "POST", "/v1/models/bert:predict", "bert", "predict"))
}

test_ml_engineer_chat_denied if {
	denied(chat(["ml-engineer"], "gpt-4o-mini"), "role_not_permitted")
}

test_ml_engineer_unknown_model_denied if {
	denied(unknown_model_request(["ml-engineer"], "POST", "/v2/models/x/infer"), "model_unknown")
}

# several roles: any one of them may permit the request

test_roles_combine if {
	allowed(chat(["reader", "chat-user"], "gpt-4o-mini"))
	allowed(model_request(["chat-user", "ml-engineer"], "POST", "/v2/models/resnet/infer", "resnet", "infer"))
	denied(chat(["reader", "chat-user"], "gpt-4o"), "model_not_permitted")
}

# callers without usable roles

test_no_roles_denied if {
	denied(chat([], "gpt-4o-mini"), "no_roles")
}

test_missing_roles_denied if {
	doc := object.remove(chat([], "gpt-4o-mini"), ["subject"])
	denied(doc, "no_roles")
}

test_anonymous_denied if {
	denied(anonymous, "no_roles")
}

test_unknown_role_denied if {
	denied(chat(["intern"], "gpt-4o-mini"), "role_not_permitted")
	denied(chat(["Admin"], "gpt-4o-mini"), "role_not_permitted")
}

test_empty_input_denied if {
	denied({}, "no_roles")
}

# the data drives the decisions

test_roles_come_from_data if {
	roles := {"auditor": {"models": ["gpt-4o"], "operations": ["list"]}}
	doc := model_request(["auditor"], "GET", "/v1/models/gpt-4o", "gpt-4o", "list")
	authz.allow with input as doc with data.modelguard.rbac.roles as roles
	not authz.allow with input as chat(["admin"], "gpt-4o") with data.modelguard.rbac.roles as roles
}

test_read_only_false_is_not_read_only if {
	roles := {"ops": {"read_only": false, "models": ["*"], "operations": ["chat"]}}
	authz.allow with input as chat(["ops"], "gpt-4o") with data.modelguard.rbac.roles as roles
}

test_read_only_overrides_grants if {
	roles := {"auditor": {"read_only": true, "models": ["*"], "operations": ["*"]}}
	post := chat(["auditor"], "gpt-4o")
	not authz.allow with input as post with data.modelguard.rbac.roles as roles
	authz.reason == "read_only" with input as post with data.modelguard.rbac.roles as roles
	listing := model_request(["auditor"], "GET", "/v1/models", "", "list")
	authz.allow with input as listing with data.modelguard.rbac.roles as roles

	# A read-only role's grants do not count for writes.
	both := object.union(roles, {"ml-engineer": {"models": ["*"], "operations": ["infer"]}})
	mixed := chat(["auditor", "ml-engineer"], "gpt-4o")
	authz.reason == "role_not_permitted" with input as mixed with data.modelguard.rbac.roles as both
}
