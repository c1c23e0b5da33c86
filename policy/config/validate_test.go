package config

import (
	"strings"
	"testing"
)

// Lines that make an otherwise empty configuration valid.
const (
	okAuth   = "authentication: {api_keys: {file: keys.yaml}}"
	okPolicy = "authorization: {policy_dir: policies}"
)

// issuerDoc starts a configuration whose first issuer item is on line 5.
func issuerDoc(lines ...string) string {
	return doc(append([]string{
		okPolicy,          // 1
		"authentication:", // 2
		"  jwt:",          // 3
		"    issuers:",    // 4
	}, lines...)...)
}

// errorCase is a configuration that must be refused with these error line
// prefixes, in order, after setting env.
type errorCase struct {
	name string
	text string
	env  map[string]string
	want []string
}

func runErrorCases(t *testing.T, tests []errorCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			dir := fixture(t)
			c, err := Parse([]byte(tt.text), "config.yaml", dir)
			if c != nil {
				t.Errorf("Parse returned a configuration with the error")
			}
			checkLines(t, withoutDir(err, dir), tt.want...)
		})
	}
}

func TestValidationErrors(t *testing.T) {
	runErrorCases(t, []errorCase{
		// models
		{"unknown model status", doc(okAuth, okPolicy, "unknown_model_status: 400"),
			nil, []string{`config.yaml:3: unknown_model_status: must be 403 or 404, got 400`}},
		{"body cap over the message size", doc(okAuth, okPolicy, "server: {max_message_bytes: 65536}", "request_body: {max_bytes: 70000}"),
			nil, []string{`config.yaml:4: request_body.max_bytes: must be between 1 and 65536, got 70000`}},
		{"model without name", doc(okAuth, okPolicy, "models:", "  - operation: chat"),
			nil, []string{`config.yaml:4: models[0].name: required`}},
		{"model with unknown operation", doc(okAuth, okPolicy, "models:", "  - name: m", "    operation: translate"),
			nil, []string{`config.yaml:5: models[0].operation: "translate" is not one of chat, completion, embeddings, infer, predict, custom`}},
		{"custom model without paths and schema", doc(okAuth, okPolicy, "models:", "  - name: m", "    operation: custom"),
			nil, []string{`config.yaml:4: models[0].paths: required for operation custom`, `config.yaml:4: models[0].schema: required for operation custom`}},
		{"bad path template", doc(okAuth, okPolicy, "models:", "  - name: m", "    operation: infer", "    paths: [v2/infer]"),
			nil, []string{`config.yaml:6: models[0].paths[0]: "v2/infer" is not a path template`}},
		{"negative limit", doc(okAuth, okPolicy, "models:", "  - name: m", "    operation: chat", "    limits: {max_tokens: -1}"),
			nil, []string{`config.yaml:6: models[0].limits.max_tokens: must not be negative`}},
		{"duplicate model", doc(okAuth, okPolicy, "models:", "  - {name: m, operation: chat}", "  - {name: m, operation: chat}"),
			nil, []string{`config.yaml:5: models[1].name: model "m" is already listed at models[0]`}},
		// server
		{"address without port", doc(okAuth, okPolicy, "server:", "  grpc_address: localhost"),
			nil, []string{`config.yaml:4: server.grpc_address: invalid address "localhost": want host:port`}},
		{"address with a named port", doc(okAuth, okPolicy, "server:", "  grpc_address: 127.0.0.1:grpc"),
			nil, []string{`config.yaml:4: server.grpc_address: invalid address "127.0.0.1:grpc"`}},
		{"address port out of range", doc(okAuth, okPolicy, "server:", "  grpc_address: 127.0.0.1:65536"),
			nil, []string{`config.yaml:4: server.grpc_address: invalid address`}},
		{"explicit empty address", doc(okAuth, okPolicy, "server:", `  admin_address: ""`),
			nil, []string{`config.yaml:4: server.admin_address: invalid address ""`}},
		{"http listener address", doc(okAuth, okPolicy, "server:", "  http: {address: localhost}"),
			nil, []string{`config.yaml:4: server.http.address: invalid address "localhost"`}},
		{"http listener on the grpc address", doc(okAuth, okPolicy, "server:", "  grpc_address: :7000", "  http:", "    address: :7000"),
			nil, []string{`config.yaml:6: server.http.address: same address as another listener`}},
		{"http listener with tls", doc(okAuth, okPolicy, "server:", "  tls: {cert_file: tls/server.crt, key_file: tls/server.key}", "  http:", "    address: 127.0.0.1:9193"),
			nil, []string{`config.yaml:6: server.http.address: the HTTP authorization listener is plaintext`}},
		{"http model requests without body", doc(okAuth, okPolicy, "server:", "  http: {address: 127.0.0.1:9193, without_body: allow}"),
			nil, []string{`config.yaml:4: server.http.without_body: "allow" is not one of refuse, headers_only`}},
		{"admin address equals grpc address", doc(okAuth, okPolicy, "server:", "  grpc_address: :7000", "  admin_address: :7000"),
			nil, []string{`config.yaml:5: server.admin_address: same address as server.grpc_address`}},
		{"message size too small", doc(okAuth, okPolicy, "server:", "  max_message_bytes: 65535"),
			nil, []string{`config.yaml:4: server.max_message_bytes: must be between 65536 and 268435456, got 65535`}},
		{"message size too large", doc(okAuth, okPolicy, "server:", "  max_message_bytes: 268435457"),
			nil, []string{`config.yaml:4: server.max_message_bytes: must be between 65536 and 268435456, got 268435457`}},
		{"in-flight budget under one message", doc(okAuth, okPolicy, "server: {max_message_bytes: 1048576}", "admission:", "  max_inflight_body_bytes: 1048575"),
			nil, []string{`config.yaml:5: admission.max_inflight_body_bytes: smaller than server.max_message_bytes (1048576): a check being read counts as a whole message`}},
		{"negative concurrency cap", doc(okAuth, okPolicy, "admission:", "  max_concurrent_checks: -1"),
			nil, []string{`config.yaml:4: admission.max_concurrent_checks: must be between 0 and 1048576, got -1`}},
		{"admission wait too long", doc(okAuth, okPolicy, "admission:", "  max_wait: 2s"),
			nil, []string{`config.yaml:4: admission.max_wait: must be between 0s and 1s, got 2s`}},
		{"zero shutdown grace", doc(okAuth, okPolicy, "server:", "  shutdown_grace: 0s"),
			nil, []string{`config.yaml:4: server.shutdown_grace: must be positive, got 0s`}},
		{"negative shutdown grace", doc(okAuth, okPolicy, "server:", "  shutdown_grace: -1s"),
			nil, []string{`config.yaml:4: server.shutdown_grace: must be positive, got -1s`}},
		{"tls cert without key", doc(okAuth, okPolicy, "server:", "  tls:", "    cert_file: tls/server.crt"),
			nil, []string{`config.yaml:4: server.tls.key_file: required with cert_file`}},
		{"tls key without cert", doc(okAuth, okPolicy, "server:", "  tls:", "    key_file: tls/server.key"),
			nil, []string{`config.yaml:4: server.tls.cert_file: required with key_file`}},
		{"client CA without TLS", doc(okAuth, okPolicy, "server:", "  tls:", "    client_ca_file: tls/clients-ca.crt"),
			nil, []string{`config.yaml:5: server.tls.client_ca_file: requires cert_file and key_file`}},
		{"tls files missing", doc(okAuth, okPolicy, "server:", "  tls:", "    cert_file: tls/nope.crt", "    key_file: tls/nope.key", "    client_ca_file: tls/nope-ca.crt"),
			nil, []string{
				`config.yaml:5: server.tls.cert_file: open DIR/tls/nope.crt: no such file or directory`,
				`config.yaml:6: server.tls.key_file: open DIR/tls/nope.key: no such file`,
				`config.yaml:7: server.tls.client_ca_file: open DIR/tls/nope-ca.crt: no such file`,
			}},
		{"tls cert is a directory", doc(okAuth, okPolicy, "server:", "  tls:", "    cert_file: tls", "    key_file: tls/server.key"),
			nil, []string{`config.yaml:5: server.tls.cert_file: DIR/tls is a directory, want a file`}},

		// authentication
		{"no authentication method", doc(okPolicy),
			nil, []string{`config.yaml: authentication: no authentication method`}},
		{"empty authentication section", doc(okPolicy, "authentication:", "  jwt: {issuers: []}"),
			nil, []string{`config.yaml:2: authentication: no authentication method`}},
		{"credential cap too small", doc(okPolicy, "authentication:", "  allow_anonymous: true", "  max_credential_bytes: 255"),
			nil, []string{`config.yaml:4: authentication.max_credential_bytes: must be between 256 and 65536, got 255`}},
		{"credential cap too large", doc(okPolicy, "authentication:", "  allow_anonymous: true", "  max_credential_bytes: 65537"),
			nil, []string{`config.yaml:4: authentication.max_credential_bytes: must be between 256 and 65536, got 65537`}},
		{"api key file missing", doc(okPolicy, "authentication:", "  api_keys:", "    file: nope.yaml"),
			nil, []string{`config.yaml:4: authentication.api_keys.file: open DIR/nope.yaml: no such file`}},
		{"api key file is a directory", doc(okPolicy, "authentication:", "  api_keys:", "    file: policies"),
			nil, []string{`config.yaml:4: authentication.api_keys.file: DIR/policies is a directory`}},
		{"api key header is authorization", doc(okPolicy, "authentication:", "  api_keys:", "    file: keys.yaml", "    header: Authorization"),
			nil, []string{`config.yaml:5: authentication.api_keys.header: must not be authorization`}},
		{"api key header not a token", doc(okPolicy, "authentication:", "  api_keys:", "    file: keys.yaml", "    header: x api key"),
			nil, []string{`config.yaml:5: authentication.api_keys.header: "x api key" is not a valid HTTP header name`}},
		{"api key header empty", doc(okPolicy, "authentication:", "  api_keys:", "    file: keys.yaml", `    header: ""`),
			nil, []string{`config.yaml:5: authentication.api_keys.header: "" is not a valid HTTP header name`}},

		// JWT issuers
		{"issuer missing", issuerDoc(
			"      - audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: https://idp.example/jwks"),
			nil, []string{`config.yaml:5: authentication.jwt.issuers[0].issuer: required`}},
		{"issuer duplicate", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: https://idp.example/jwks",
			"      - issuer: a",
			"        audiences: [y]",
			"        algorithms: [RS256]",
			"        jwks_url: https://idp.example/jwks2"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[1].issuer: duplicate issuer "a" (also issuers[0])`}},
		{"audiences missing", issuerDoc(
			"      - issuer: a",
			"        algorithms: [RS256]",
			"        jwks_url: https://idp.example/jwks"),
			nil, []string{`config.yaml:5: authentication.jwt.issuers[0].audiences: at least one audience is required`}},
		{"audiences empty list", issuerDoc(
			"      - issuer: a",
			"        audiences: []",
			"        algorithms: [RS256]",
			"        jwks_url: https://idp.example/jwks"),
			nil, []string{`config.yaml:6: authentication.jwt.issuers[0].audiences: at least one audience is required`}},
		{"empty audience", issuerDoc(
			"      - issuer: a",
			"        audiences:",
			"          - x",
			`          - ""`,
			"        algorithms: [RS256]",
			"        jwks_url: https://idp.example/jwks"),
			nil, []string{`config.yaml:8: authentication.jwt.issuers[0].audiences[1]: empty audience`}},
		{"algorithms missing", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        jwks_url: https://idp.example/jwks"),
			nil, []string{`config.yaml:5: authentication.jwt.issuers[0].algorithms: at least one algorithm is required`}},
		{"alg none", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms:",
			"          - RS256",
			"          - NoNe",
			"        jwks_url: https://idp.example/jwks"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].algorithms[1]: "NoNe" is never accepted: it means an unsigned token`}},
		{"alg in wrong case", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms:",
			"          - rs256",
			"        jwks_url: https://idp.example/jwks"),
			nil, []string{`config.yaml:8: authentication.jwt.issuers[0].algorithms[0]: unsupported algorithm "rs256"; use one of RS256,`}},
		{"HMAC and public algorithms mixed", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [HS256, RS256]",
			"        keys: [{secret_file: jwt/partner.secret}]"),
			nil, []string{`config.yaml:7: authentication.jwt.issuers[0].algorithms: HS256 and RS256 cannot be mixed in one issuer`}},
		{"neither jwks_url nor keys", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]"),
			nil, []string{`config.yaml:5: authentication.jwt.issuers[0]: one of jwks_url, keys or discovery: true is required`}},
		{"empty keys list", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        keys: []"),
			nil, []string{`config.yaml:5: authentication.jwt.issuers[0]: one of jwks_url, keys or discovery: true is required`}},
		{"both jwks_url and keys", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: https://idp.example/jwks",
			"        keys: [{pem_file: jwt/batch.pem}]"),
			nil, []string{`config.yaml:8: authentication.jwt.issuers[0].jwks_url: jwks_url and keys are exclusive`}},
		{"jwks over plain http", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: http://idp.example/jwks"),
			nil, []string{`config.yaml:8: authentication.jwt.issuers[0].jwks_url: must use https`}},
		{"jwks over http to a name that only looks local", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: http://localhost.example.com/jwks"),
			nil, []string{`config.yaml:8: authentication.jwt.issuers[0].jwks_url: must use https`}},
		{"jwks relative URL", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: /jwks.json"),
			nil, []string{`config.yaml:8: authentication.jwt.issuers[0].jwks_url: must be an absolute https URL`}},
		{"jwks other scheme", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: file:///etc/jwks.json"),
			nil, []string{`config.yaml:8: authentication.jwt.issuers[0].jwks_url: must be an absolute https URL`}},
		{"jwks URL with credentials", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: https://user:pw@idp.example/jwks"),
			nil, []string{`config.yaml:8: authentication.jwt.issuers[0].jwks_url: must not carry credentials`}},
		{"jwks URL unparsable", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: \"https://idp example/%zz\""),
			nil, []string{`config.yaml:8: authentication.jwt.issuers[0].jwks_url: invalid URL`}},
		{"HMAC with a JWKS", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [HS256]",
			"        jwks_url: https://idp.example/jwks"),
			nil, []string{`config.yaml:8: authentication.jwt.issuers[0].jwks_url: HS256 needs static secret keys`}},
		{"HMAC with a PEM key", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [HS256]",
			"        keys:",
			"          - pem_file: jwt/batch.pem"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].keys[0].pem_file: HS256 needs secret_file or secret_env`}},
		{"public algorithm with a secret", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [ES256]",
			"        keys:",
			"          - secret_file: jwt/partner.secret"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].keys[0].secret_file: an HMAC secret cannot verify ES256`}},
		{"key without a source", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        keys:",
			"          - kid: k1"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].keys[0]: one of pem_file, pem_env, secret_file or secret_env is required`}},
		{"key with two sources", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        keys:",
			"          - pem_file: jwt/batch.pem",
			"            pem_env: BATCH_PEM"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].keys[0]: pem_file and pem_env are exclusive`}},
		{"pem file missing", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        keys:",
			"          - pem_file: jwt/nope.pem"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].keys[0].pem_file: open DIR/jwt/nope.pem: no such file`}},
		{"pem file empty", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        keys:",
			"          - pem_file: jwt/empty.pem"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].keys[0].pem_file: DIR/jwt/empty.pem is empty`}},
		{"pem env unset", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        keys:",
			"          - pem_env: MODELGUARD_TEST_UNSET_PEM"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].keys[0].pem_env: environment variable MODELGUARD_TEST_UNSET_PEM is not set`}},
		{"pem env empty", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        keys:",
			"          - pem_env: MODELGUARD_TEST_PEM"),
			map[string]string{"MODELGUARD_TEST_PEM": " \n"},
			[]string{`config.yaml:9: authentication.jwt.issuers[0].keys[0].pem_env: environment variable MODELGUARD_TEST_PEM is empty`}},
		{"secret env weak", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [HS256]",
			"        keys:",
			"          - secret_env: MODELGUARD_TEST_SECRET"),
			map[string]string{"MODELGUARD_TEST_SECRET": "hunter2\n"},
			[]string{`config.yaml:9: authentication.jwt.issuers[0].keys[0].secret_env: weak secret: 7 bytes, need at least 32`}},
		{"secret file weak", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [HS256]",
			"        keys:",
			"          - secret_file: jwt/short.secret"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].keys[0].secret_file: weak secret: 31 bytes, need at least 32`}},
		{"secret file missing", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [HS256]",
			"        keys:",
			"          - secret_file: jwt/nope.secret"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].keys[0].secret_file: open DIR/jwt/nope.secret: no such file`}},
		{"secret too short for HS512", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [HS256, HS512]",
			"        keys:",
			"          - secret_file: jwt/partner.secret"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].keys[0].secret_file: weak secret: 32 bytes, need at least 64`}},
		{"only one newline trimmed", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [HS512]",
			"        keys:",
			"          - secret_file: jwt/hs384.secret"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].keys[0].secret_file: weak secret: 48 bytes, need at least 64`}},
		{"duplicate kid", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        keys:",
			"          - {kid: k1, pem_file: jwt/batch.pem}",
			"          - {kid: k1, pem_file: jwt/batch.pem}"),
			nil, []string{`config.yaml:10: authentication.jwt.issuers[0].keys[1].kid: duplicate kid "k1" (also keys[0])`}},
		{"leeway too large", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: https://idp.example/jwks",
			"        leeway: 5m1s"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].leeway: must be between 0s and 5m0s, got 5m1s`}},
		{"jwt cache size 0", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: https://idp.example/jwks",
			"    cache:",
			"      size: 0"),
			nil, []string{`config.yaml:10: authentication.jwt.cache.size: must be between 1 and 1000000, got 0`}},
		{"leeway negative", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: https://idp.example/jwks",
			"        leeway: -1s"),
			nil, []string{`config.yaml:9: authentication.jwt.issuers[0].leeway: must be between 0s and 5m0s, got -1s`}},
		{"jwks durations not positive", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: https://idp.example/jwks",
			"        jwks_refresh_interval: 0s",
			"        jwks_unknown_kid_interval: -5m",
			"        jwks_fetch_timeout: 0ms"),
			nil, []string{
				`config.yaml:9: authentication.jwt.issuers[0].jwks_refresh_interval: must be positive, got 0s`,
				`config.yaml:10: authentication.jwt.issuers[0].jwks_unknown_kid_interval: must be positive, got -5m0s`,
				`config.yaml:11: authentication.jwt.issuers[0].jwks_fetch_timeout: must be positive, got 0s`,
			}},
		{"bad claim names", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        jwks_url: https://idp.example/jwks",
			"        claims:",
			`          subject: ""`,
			"          roles: [roles, realm_access..roles]"),
			nil, []string{
				`config.yaml:10: authentication.jwt.issuers[0].claims.subject: invalid claim name ""`,
				`config.yaml:11: authentication.jwt.issuers[0].claims.roles[1]: invalid claim name "realm_access..roles"`,
			}},

		// authorization
		{"policy dir missing", doc(okAuth, "authorization:", "  timeout: 1s"),
			nil, []string{`config.yaml:2: authorization.policy_dir: required`}},
		{"no authorization section", doc(okAuth),
			nil, []string{`config.yaml: authorization.policy_dir: required`}},
		{"policy dir does not exist", doc(okAuth, "authorization:", "  policy_dir: nope"),
			nil, []string{`config.yaml:3: authorization.policy_dir: stat DIR/nope: no such file`}},
		{"policy dir is a file", doc(okAuth, "authorization:", "  policy_dir: keys.yaml"),
			nil, []string{`config.yaml:3: authorization.policy_dir: DIR/keys.yaml is not a directory`}},
		{"query not under data", doc(okAuth, "authorization:", "  policy_dir: policies", "  query: input.allow"),
			nil, []string{`config.yaml:4: authorization.query: "input.allow" is not a Rego reference starting with data.`}},
		{"query is only data", doc(okAuth, "authorization:", "  policy_dir: policies", "  query: data"),
			nil, []string{`config.yaml:4: authorization.query: "data" is not a Rego reference`}},
		{"query with a space", doc(okAuth, "authorization:", "  policy_dir: policies", "  query: data.a b"),
			nil, []string{`config.yaml:4: authorization.query: "data.a b" is not a Rego reference`}},
		{"query with an empty segment", doc(okAuth, "authorization:", "  policy_dir: policies", "  query: data..allow"),
			nil, []string{`config.yaml:4: authorization.query: "data..allow" is not a Rego reference`}},
		{"timeout too short", doc(okAuth, "authorization:", "  policy_dir: policies", "  timeout: 999us"),
			nil, []string{`config.yaml:4: authorization.timeout: must be between 1ms and 10s, got 999µs`}},
		{"timeout too long", doc(okAuth, "authorization:", "  policy_dir: policies", "  timeout: 10001ms"),
			nil, []string{`config.yaml:4: authorization.timeout: must be between 1ms and 10s, got 10.001s`}},
		{"policy dir and bundle", doc(okAuth, "authorization:", "  policy_dir: policies", "  bundle:", "    url: https://bundles.example.com"),
			nil, []string{`config.yaml:5: authorization.bundle.url: set either policy_dir or bundle, not both`}},
		{"bundle polling in fractions of a second", doc(okAuth, "authorization:", "  bundle:", "    url: https://bundles.example.com", "    polling: {min_delay: 1500ms, max_delay: 2s}"),
			nil, []string{`config.yaml:5: authorization.bundle.polling.min_delay: must be a whole number of seconds, got 1.5s`}},
		{"bundle signing key missing", doc(okAuth, "authorization:", "  bundle:", "    url: https://bundles.example.com", "    signing: {public_key_file: nope.pem}"),
			nil, []string{`config.yaml:5: authorization.bundle.signing.public_key_file: open DIR/nope.pem: no such file`}},
		{"shadow with both sources", doc(okAuth, "authorization:", "  policy_dir: policies", "  shadow: {policy_dir: policies, bundle: {url: https://b.example.com}}"),
			nil, []string{`config.yaml:4: authorization.shadow.bundle.url: set either policy_dir or bundle, not both`}},
		{"dry-run of an unknown model", doc(okAuth, "authorization:", "  policy_dir: policies", "  dry_run: {models: [nope]}"),
			nil, []string{`config.yaml:4: authorization.dry_run.models[0]: "nope" is not a configured model`}},

		// identity headers
		{"identity header not a token", doc(okAuth, okPolicy, "identity_headers:", "  subject: x subject"),
			nil, []string{`config.yaml:4: identity_headers.subject: "x subject" is not a valid HTTP header name`}},
		{"identity header pseudo-header", doc(okAuth, okPolicy, "identity_headers:", "  subject: :path"),
			nil, []string{`config.yaml:4: identity_headers.subject: ":path" is not a valid HTTP header name`}},
		{"identity header reserved", doc(okAuth, okPolicy, "identity_headers:", "  roles: Authorization"),
			nil, []string{`config.yaml:4: identity_headers.roles: authorization is reserved`}},
		{"identity headers collide", doc(okAuth, okPolicy, "identity_headers:", "  subject: x-user", "  key_id: X-User"),
			nil, []string{`config.yaml:5: identity_headers.key_id: same header as identity_headers.subject`}},
		{"identity header is the API key header", doc(okAuth, okPolicy, "identity_headers:", "  key_id: x-api-key"),
			nil, []string{`config.yaml:4: identity_headers.key_id: same header as authentication.api_keys.header`}},

		// audit and log
		{"audit directory missing", doc(okAuth, okPolicy, "audit:", "  output: nope/audit.jsonl"),
			nil, []string{`config.yaml:4: audit.output: directory DIR/nope does not exist`}},
		{"audit output is a directory", doc(okAuth, okPolicy, "audit:", "  output: audit"),
			nil, []string{`config.yaml:4: audit.output: DIR/audit is a directory, want a file`}},
		{"audit output empty", doc(okAuth, okPolicy, "audit:", `  output: ""`),
			nil, []string{`config.yaml:4: audit.output: want "stdout", "off" or a file path`}},
		{"log level unknown", doc(okAuth, okPolicy, "log:", "  level: verbose"),
			nil, []string{`config.yaml:4: log.level: "verbose" is not one of debug, info, warn, error`}},
		{"log format unknown", doc(okAuth, okPolicy, "log: {format: xml}"),
			nil, []string{`config.yaml:3: log.format: "xml" is not one of json, text`}},

		// several problems at once, each located
		{"all problems reported", doc(okPolicy, "server:", "  grpc_address: nope", "log:", "  level: loud"),
			nil, []string{
				`config.yaml:3: server.grpc_address: invalid address`,
				`config.yaml: authentication: no authentication method`,
				`config.yaml:5: log.level: "loud" is not one of`,
			}},
	})
}

func TestValidConfigurations(t *testing.T) {
	tests := []struct {
		name string
		text string
		env  map[string]string
	}{
		{"anonymous only", doc(okPolicy, "authentication: {allow_anonymous: true}"), nil},
		{"api keys only", doc(okAuth, okPolicy), nil},
		{"admin off", doc(okAuth, okPolicy, "server: {admin_address: \"off\"}"), nil},
		{"both listeners on port 0", doc(okAuth, okPolicy, "server: {grpc_address: \"127.0.0.1:0\", admin_address: \"127.0.0.1:0\"}"), nil},
		{"all interfaces", doc(okAuth, okPolicy, "server: {grpc_address: \":9191\", admin_address: \"[::]:9192\"}"), nil},
		{"limits at their bounds", doc(okPolicy,
			"server: {max_message_bytes: 65536}",
			"authentication: {allow_anonymous: true, max_credential_bytes: 65536}",
		), nil},
		{"upper limits", doc(okPolicy,
			"server: {max_message_bytes: 268435456}",
			"authentication: {allow_anonymous: true, max_credential_bytes: 256}",
		), nil},
		{"mTLS", doc(okAuth, okPolicy, "server:", "  tls: {cert_file: tls/server.crt, key_file: tls/server.key, client_ca_file: tls/clients-ca.crt}"), nil},
		{"jwks over http on loopback", issuerDoc(
			"      - {issuer: a, audiences: [x], algorithms: [RS256], jwks_url: \"http://127.0.0.1:8080/jwks\"}",
			"      - {issuer: b, audiences: [x], algorithms: [EdDSA], jwks_url: \"http://localhost/jwks\"}",
			"      - {issuer: c, audiences: [x], algorithms: [PS512], jwks_url: \"http://[::1]:1/jwks\"}",
		), nil},
		{"secrets exactly long enough", issuerDoc(
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [HS256]",
			"        keys:",
			"          - secret_file: jwt/partner.secret",
			"          - secret_file: jwt/crlf.secret",
			"          - secret_env: MODELGUARD_TEST_SECRET",
			"      - issuer: b",
			"        audiences: [x]",
			"        algorithms: [HS512, HS384]",
			"        keys: [{secret_file: jwt/hs512.secret}]",
		), map[string]string{"MODELGUARD_TEST_SECRET": strings.Repeat("x", 32) + "\n"}},
		{"pem from the environment", issuerDoc(
			"      - {issuer: a, audiences: [x], algorithms: [ES384], keys: [{kid: k, pem_env: MODELGUARD_TEST_PEM}]}",
		), map[string]string{"MODELGUARD_TEST_PEM": "-----BEGIN PUBLIC KEY-----\n"}},
		{"quoted reference query", doc(okAuth, okPolicy[:len(okPolicy)-1]+`, query: 'data["model-guard"].authz.allow'}`), nil},
		{"audit to a file", doc(okAuth, okPolicy, "audit: {output: audit/decisions.jsonl}"), nil},
		{"audit off", doc(okAuth, okPolicy, "audit: {output: \"off\"}"), nil},
		{"text debug logs", doc(okAuth, okPolicy, "log: {level: debug, format: text}"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			mustParse(t, tt.text)
		})
	}
}

// TestSetHTTPAddress: serve's -http-address is held to the rules of
// server.http.address in the file.
func TestSetHTTPAddress(t *testing.T) {
	for _, tc := range []struct {
		name, text, addr, wantErr string
	}{
		{"valid", doc(okAuth, okPolicy), "127.0.0.1:9193", ""},
		{"invalid", doc(okAuth, okPolicy), "localhost", `server.http.address: invalid address "localhost"`},
		{"with tls", doc(okAuth, okPolicy, "server:", "  tls: {cert_file: tls/server.crt, key_file: tls/server.key}"), "127.0.0.1:9193",
			"server.http.address: the HTTP authorization listener is plaintext"},
		{"on the admin address", doc(okAuth, okPolicy), "127.0.0.1:9192", "server.http.address: same address as another listener"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, tc.text)
			err := c.SetHTTPAddress(tc.addr)
			if tc.wantErr == "" {
				if err != nil || c.Server.HTTP.Address != tc.addr {
					t.Fatalf("got %v, address %q", err, c.Server.HTTP.Address)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}
