# Tests for policy.rego, run by `make test` (modelguard's Go tests run them
# through OPA's tester) or by `opa test .` in this directory.
package envoy.authz_test

import data.envoy.authz

key := {"kty": "oct", "k": base64url.encode_no_pad(data.jwt.constraints.secret)}

token(claims) := io.jwt.encode_sign(
	{"typ": "JWT", "alg": "HS256"},
	object.union({"iss": "https://login.example.com/", "aud": "models", "exp": 4102444800}, claims),
	key,
)

user := token({"sub": "alice", "role": "user", "tenant": "acme"})

viewer := token({"sub": "victor", "role": "viewer", "tenant": "acme"})

# req is the input opa-envoy-plugin (or modelguard with input: opa-envoy)
# builds for a request.
req(method, path, headers, body) := {
	"attributes": {"request": {"http": {"method": method, "path": path, "headers": headers}}},
	"parsed_path": split(trim_left(path, "/"), "/"),
	"parsed_body": body,
	"modelguard": {"body": {"stream": object.get(body, "stream", false)}},
}

auth(t) := {"authorization": sprintf("Bearer %s", [t]), "x-tenant": "acme"}

chat(model, max_tokens) := {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}

test_user_chats_with_its_model if {
	d := authz.allow with input as req("POST", "/v1/chat/completions", auth(user), chat("gpt-4o-mini", 256))
	d.allowed
	d.headers["x-user"] == "alice"
	d.request_headers_to_remove == ["authorization"]
}

test_missing_token_is_401 if {
	d := authz.allow with input as req("POST", "/v1/chat/completions", {"x-tenant": "acme"}, chat("gpt-4o-mini", 256))
	not d.allowed
	d.http_status == 401
	d.headers["www-authenticate"]
}

test_forged_token_is_401 if {
	forged := io.jwt.encode_sign({"typ": "JWT", "alg": "HS256"}, {"sub": "mallory", "role": "admin", "tenant": "acme", "iss": "https://login.example.com/", "aud": "models"}, {"kty": "oct", "k": base64url.encode_no_pad("another-secret-of-enough-length-1234")})
	d := authz.allow with input as req("GET", "/v1/models", auth(forged), {})
	d.http_status == 401
}

test_other_tenant_is_403 if {
	d := authz.allow with input as req("GET", "/v1/models", {"authorization": sprintf("Bearer %s", [viewer]), "x-tenant": "globex"}, {})
	not d.allowed
	d.http_status == 403
}

test_viewer_cannot_chat if {
	d := authz.allow with input as req("POST", "/v1/chat/completions", auth(viewer), chat("gpt-4o-mini", 256))
	d.http_status == 403
}

test_viewer_lists_models if {
	d := authz.allow with input as req("GET", "/v1/models/gpt-4o-mini", auth(viewer), {})
	d.allowed
}

test_user_model_outside_role if {
	d := authz.allow with input as req("POST", "/v1/chat/completions", auth(user), chat("gpt-4o", 256))
	d.http_status == 403
}

test_user_max_tokens_over_cap if {
	d := authz.allow with input as req("POST", "/v1/chat/completions", auth(user), chat("gpt-4o-mini", 2048))
	d.http_status == 403
}

test_user_may_not_stream if {
	d := authz.allow with input as req("POST", "/v1/chat/completions", auth(user), object.union(chat("gpt-4o-mini", 256), {"stream": true}))
	d.http_status == 403
}
