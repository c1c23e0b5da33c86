package config

import (
	"errors"
	"fmt"
	"github.com/modelguard/modelguard/httpauthz/httpsettings"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/modelguard/modelguard/policy/admission"
	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/jwtauth"
	"github.com/modelguard/modelguard/policy/lockout"
	"github.com/modelguard/modelguard/policy/models"
	"github.com/modelguard/modelguard/policy/ratelimit"
	"github.com/modelguard/modelguard/policy/rego"
	"github.com/modelguard/modelguard/policy/tracing"
)

// fullConfig sets every key, with values that differ from the defaults.
const fullConfig = `server:
  grpc_address: 0.0.0.0:8000
  admin_address: "off"
  max_message_bytes: 1048576
  shutdown_grace: 2s
  tls:
    cert_file: tls/server.crt
    key_file: tls/server.key
    client_ca_file: tls/clients-ca.crt
authentication:
  allow_anonymous: true
  max_credential_bytes: 4096
  jwt:
    issuers:
      - issuer: https://idp.example
        audiences: [api, batch]
        algorithms: [RS256, ES256]
        jwks_url: https://idp.example/jwks
        jwks_refresh_interval: 10m
        jwks_unknown_kid_interval: 1m
        jwks_fetch_timeout: 2s
        leeway: 0s
        typ: at+jwt
        claims:
          subject: user.id
          roles: [scope]
      - issuer: partner
        audiences: [api]
        algorithms: [HS256]
        keys:
          - kid: p1
            secret_file: jwt/partner.secret
          - secret_env: MODELGUARD_TEST_SECRET
      - issuer: batch
        audiences: [api]
        algorithms: [EdDSA]
        keys:
          - pem_file: jwt/batch.pem
          - pem_env: MODELGUARD_TEST_PEM
    cache:
      enabled: false
      size: 500
  api_keys:
    file: keys.yaml
    header: X-Team-Key
    bearer: false
authorization:
  policy_dir: policies
  query: data.gateway.decision
  timeout: 250ms
identity_headers:
  subject: X-User
  roles: ""
  auth_method: x-method
  key_id: x-key
  decision_id: x-decision
audit:
  output: audit/decisions.jsonl
log:
  level: warn
  format: text
`

func setKeyEnv(t *testing.T) {
	t.Setenv("MODELGUARD_TEST_SECRET", strings.Repeat("e", 40))
	t.Setenv("MODELGUARD_TEST_PEM", "-----BEGIN PUBLIC KEY-----\n")
}

func TestParseFullConfig(t *testing.T) {
	setKeyEnv(t)
	dir := fixture(t)
	got, err := Parse([]byte(fullConfig), "config.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	no := false
	want := &Config{
		Server: Server{
			GRPCAddress:     "0.0.0.0:8000",
			AdminAddress:    "off",
			MaxMessageBytes: 1 << 20,
			ShutdownGrace:   2 * time.Second,
			TLS:             TLS{CertFile: "tls/server.crt", KeyFile: "tls/server.key", ClientCAFile: "tls/clients-ca.crt"},
			HTTP:            httpsettings.DefaultSettings(),
		},
		Authentication: Authentication{
			AllowAnonymous:     true,
			MaxCredentialBytes: 4096,
			JWT: jwtauth.Settings{Issuers: []jwtauth.IssuerSettings{{
				Issuer:                 "https://idp.example",
				Audiences:              []string{"api", "batch"},
				Algorithms:             []string{"RS256", "ES256"},
				JWKSURL:                "https://idp.example/jwks",
				JWKSRefreshInterval:    10 * time.Minute,
				JWKSUnknownKIDInterval: time.Minute,
				JWKSFetchTimeout:       2 * time.Second,
				Leeway:                 0,
				Typ:                    "at+jwt",
				Claims:                 jwtauth.ClaimMapping{Subject: "user.id", Roles: []string{"scope"}},
			}, {
				Issuer:                 "partner",
				Audiences:              []string{"api"},
				Algorithms:             []string{"HS256"},
				Keys:                   []jwtauth.StaticKey{{KID: "p1", SecretFile: "jwt/partner.secret"}, {SecretEnv: "MODELGUARD_TEST_SECRET"}},
				JWKSRefreshInterval:    time.Hour,
				JWKSUnknownKIDInterval: 5 * time.Minute,
				JWKSFetchTimeout:       5 * time.Second,
				Leeway:                 30 * time.Second,
				Claims:                 jwtauth.ClaimMapping{Subject: "sub", Roles: []string{"roles"}},
			}, {
				Issuer:                 "batch",
				Audiences:              []string{"api"},
				Algorithms:             []string{"EdDSA"},
				Keys:                   []jwtauth.StaticKey{{PEMFile: "jwt/batch.pem"}, {PEMEnv: "MODELGUARD_TEST_PEM"}},
				JWKSRefreshInterval:    time.Hour,
				JWKSUnknownKIDInterval: 5 * time.Minute,
				JWKSFetchTimeout:       5 * time.Second,
				Leeway:                 30 * time.Second,
				Claims:                 jwtauth.ClaimMapping{Subject: "sub", Roles: []string{"roles"}},
			}}, Cache: jwtauth.CacheSettings{Enabled: false, Size: 500}},
			APIKeys:       apikey.Settings{File: "keys.yaml", Header: "x-team-key", Bearer: &no},
			Introspection: jwtauth.DefaultIntrospection(),
		},
		Authorization:      authorization("policies", "data.gateway.decision", 250*time.Millisecond),
		RequestBody:        models.BodySettings{MaxBytes: 1 << 20, MaxDepth: 64},
		UnknownModelStatus: 403,
		IdentityHeaders:    IdentityHeaders{Subject: "x-user", Roles: "", AuthMethod: "x-method", KeyID: "x-key", DecisionID: "x-decision"},
		Audit: audit.Config{Output: "audit/decisions.jsonl", MaxFileBytes: 100 << 20, Durability: audit.DurabilityWrite, FlushInterval: 100 * time.Millisecond, QueueSize: 10000,
			OnFull: "deny", BlockTimeout: time.Second, HTTP: audit.HTTPConfig{Timeout: 10 * time.Second}, SpoolMaxBytes: 1 << 30},
		RateLimits: ratelimit.DefaultSettings(),
		Lockout:    lockout.DefaultSettings(),
		Admission:  admission.DefaultSettings(),
		Tracing:    tracing.DefaultSettings(),
		Log:        Log{Level: "warn", Format: "text"},
		Dir:        dir,
		File:       "config.yaml",
	}
	got.src = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse:\n got  %+v\n want %+v", got, want)
	}
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, doc(
		okPolicy,
		"server:",
		"  grpc_address:", // null is unset: the default applies
		"authentication:",
		"  api_keys: {file: keys.yaml}",
		"  jwt:",
		"    issuers:",
		"      - {issuer: a, audiences: [x], algorithms: [RS256], jwks_url: \"https://idp.example/jwks\"}",
	))
	yes := true
	want := Config{
		Server: Server{
			GRPCAddress:     "127.0.0.1:9191",
			AdminAddress:    "127.0.0.1:9192",
			MaxMessageBytes: 8 << 20,
			ShutdownGrace:   15 * time.Second,
			HTTP:            httpsettings.Settings{Address: "off", WithoutBody: "refuse"},
		},
		Authentication: Authentication{
			MaxCredentialBytes: 8192,
			JWT: jwtauth.Settings{Issuers: []jwtauth.IssuerSettings{{
				Issuer:                 "a",
				Audiences:              []string{"x"},
				Algorithms:             []string{"RS256"},
				JWKSURL:                "https://idp.example/jwks",
				JWKSRefreshInterval:    time.Hour,
				JWKSUnknownKIDInterval: 5 * time.Minute,
				JWKSFetchTimeout:       5 * time.Second,
				Leeway:                 30 * time.Second,
				Claims:                 jwtauth.ClaimMapping{Subject: "sub", Roles: []string{"roles"}},
			}}, Cache: jwtauth.DefaultCache()},
			APIKeys:       apikey.Settings{File: "keys.yaml", Header: "x-api-key", Bearer: &yes},
			Introspection: jwtauth.DefaultIntrospection(),
		},
		Authorization:      authorization("policies", "data.modelguard.authz.allow", 100*time.Millisecond),
		RequestBody:        models.BodySettings{MaxBytes: 1 << 20, MaxDepth: 64},
		UnknownModelStatus: 403,
		IdentityHeaders: IdentityHeaders{
			Subject:    "x-modelguard-subject",
			Roles:      "x-modelguard-roles",
			AuthMethod: "x-modelguard-auth-method",
			KeyID:      "x-modelguard-key-id",
			DecisionID: "x-modelguard-decision-id",
		},
		Audit: audit.Config{Output: "stdout", MaxFileBytes: 100 << 20, Durability: audit.DurabilityWrite, FlushInterval: 100 * time.Millisecond, QueueSize: 10000,
			OnFull: "deny", BlockTimeout: time.Second, HTTP: audit.HTTPConfig{Timeout: 10 * time.Second}, SpoolMaxBytes: 1 << 30},
		RateLimits: ratelimit.DefaultSettings(),
		Lockout:    lockout.DefaultSettings(),
		Admission:  admission.DefaultSettings(),
		Tracing:    tracing.DefaultSettings(),
		Log:        Log{Level: "info", Format: "json"},
	}
	got := *c
	got.src, got.Dir, got.File = nil, "", ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got  %+v\n want %+v", got, want)
	}
}

// An explicit zero or "" is not replaced by the default.
func TestExplicitValuesKept(t *testing.T) {
	c := mustParse(t, doc(
		okPolicy,
		"authentication:",
		"  api_keys: {file: keys.yaml, bearer: false}",
		"  jwt:",
		"    issuers:",
		"      - {issuer: a, audiences: [x], algorithms: [RS256], jwks_url: \"https://idp.example/jwks\", leeway: 0s, claims: {roles: []}}",
		"identity_headers:",
		`  subject: ""`,
		`  key_id: ''`,
		"  roles: ~", // null: default
	))
	iss := c.Authentication.JWT.Issuers[0]
	if iss.Leeway != 0 {
		t.Errorf("leeway = %v, want explicit 0", iss.Leeway)
	}
	if len(iss.Claims.Roles) != 0 {
		t.Errorf("roles claims = %q, want explicit []", iss.Claims.Roles)
	}
	if *c.Authentication.APIKeys.Bearer {
		t.Error("bearer = true, want explicit false")
	}
	h := c.IdentityHeaders
	if h.Subject != "" || h.KeyID != "" {
		t.Errorf("subject, key_id headers = %q, %q; want disabled", h.Subject, h.KeyID)
	}
	if h.Roles != "x-modelguard-roles" || h.AuthMethod != "x-modelguard-auth-method" {
		t.Errorf("roles, auth_method headers = %q, %q; want defaults", h.Roles, h.AuthMethod)
	}
}

func TestStructureErrors(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string
	}{
		{"empty", "", []string{"config.yaml: empty configuration"}},
		{"only comments", "# nothing yet\n", []string{"config.yaml: empty configuration"}},
		{"only a document marker", "---\n", []string{"config.yaml: empty configuration"}},
		{"null document", "~\n", []string{"config.yaml: empty configuration"}},
		{"not a mapping", "- server\n", []string{"config.yaml:1: the configuration must be a mapping of keys to values, got a list"}},
		{"two documents", doc(okAuth, okPolicy, "---", "log: {level: info}"),
			[]string{"config.yaml:3: a second YAML document"}},
		{"syntax error", doc(okAuth, "server:", "\tgrpc_address: x"),
			[]string{"config.yaml:3: found character that cannot start any token"}},
		{"syntax error on the first line", doc("log: level: info", okAuth), // yaml.v3 gives no line for line 1
			[]string{"config.yaml:1: mapping values are not allowed in this context"}},
		{"syntax error in a second document", doc(okAuth, okPolicy, "---", "a: [", ""),
			[]string{"config.yaml:4: did not find expected node content"}},
		// yaml.v3 names the line before the mistake for these (the
		// collection's start, counted from 0).
		{"unclosed flow sequence", doc(okAuth, okPolicy, "log:", "  level: [info", "  format: json"),
			[]string{"config.yaml:4: did not find expected ',' or ']'"}},
		{"key indented short", doc(okAuth, okPolicy, "log:", "  level: info", " format: json"),
			[]string{"config.yaml:5: did not find expected key"}},
		{"unknown top-level key", doc(okAuth, okPolicy, "serve:", "  grpc_address: x"),
			[]string{"config.yaml:3: serve: unknown key; valid keys here: server, authentication, authorization, request_body, models, unknown_model_status, identity_headers, audit, rate_limits, ip_lists, lockout, dlp, admission, tracing, log"}},
		{"Go field name is not a key", doc(okAuth, okPolicy, "Dir: /etc"),
			[]string{"config.yaml:3: Dir: unknown key; valid keys here: server,"}},
		{"unknown key at depth", doc(okPolicy, "authentication:", "  jwt:", "    issuers:",
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [RS256]",
			"        keys:",
			"          - pem_file: jwt/batch.pem",
			"          - pem_fiel: jwt/batch.pem"),
			[]string{"config.yaml:10: authentication.jwt.issuers[0].keys[1].pem_fiel: unknown key; valid keys here: kid, pem_file, pem_env, secret_file, secret_env"}},
		{"inline secret refused", doc(okPolicy, "authentication:", "  jwt:", "    issuers:",
			"      - issuer: a",
			"        audiences: [x]",
			"        algorithms: [HS256]",
			"        keys:",
			"          - secret: hunter2hunter2hunter2hunter2hunter2"),
			[]string{"config.yaml:9: authentication.jwt.issuers[0].keys[0].secret: unknown key"}},
		{"non-string key", doc(okAuth, okPolicy, "log:", "  [a]: b"),
			[]string{"config.yaml:4: log: keys must be names, got a list"}},
		{"duplicate key", doc(okAuth, okPolicy, "server:", "  grpc_address: 127.0.0.1:1", "  grpc_address: 127.0.0.1:2"),
			[]string{"config.yaml:5: server.grpc_address: duplicate key (first at line 4)"}},
		{"duplicate section", doc(okAuth, okPolicy, "authorization:", "  query: data.a"),
			[]string{"config.yaml:3: authorization: duplicate key (first at line 2)"}},
		{"duplicate merge key", doc(okAuth, okPolicy, "log:", "  <<: {level: info}", "  <<: {format: text}"),
			[]string{"config.yaml:5: log.<<: duplicate key (first at line 4)"}},
		{"string for integer", doc(okAuth, okPolicy, "server:", "  max_message_bytes: 8MiB"),
			[]string{`config.yaml:4: server.max_message_bytes: expected an integer, got the string "8MiB"`}},
		{"float for integer", doc(okAuth, okPolicy, "server:", "  max_message_bytes: 1e6"),
			[]string{`config.yaml:4: server.max_message_bytes: expected an integer, got the number 1e6`}},
		{"timestamp for integer", doc(okAuth, okPolicy, "server:", "  max_message_bytes: 2026-01-01"),
			[]string{`config.yaml:4: server.max_message_bytes: expected an integer, got !!timestamp "2026-01-01"`}},
		{"integer too large", doc(okAuth, okPolicy, "server:", "  max_message_bytes: 18446744073709551615"),
			[]string{"config.yaml:4: cannot unmarshal !!int `1844674...` into int"}},
		{"duration without unit", doc(okAuth, okPolicy, "server:", "  shutdown_grace: 30"),
			[]string{"config.yaml:4: server.shutdown_grace: expected a duration with a unit such as 30s or 5m, got the integer 30"}},
		{"duration in words", doc(okAuth, okPolicy, "server:", "  shutdown_grace: 5 minutes"),
			[]string{`config.yaml:4: server.shutdown_grace: invalid duration "5 minutes": write a number with a unit`}},
		{"string for boolean", doc(okPolicy, "authentication:", "  allow_anonymous: yes"),
			[]string{`config.yaml:3: authentication.allow_anonymous: expected true or false, got the string "yes"`}},
		{"integer for boolean pointer", doc(okPolicy, "authentication:", "  api_keys: {file: keys.yaml, bearer: 1}"),
			[]string{`config.yaml:3: authentication.api_keys.bearer: expected true or false, got the integer 1`}},
		{"scalar for list", doc(okPolicy, "authentication:", "  jwt:", "    issuers:",
			"      - issuer: a",
			"        audiences: x"),
			[]string{`config.yaml:6: authentication.jwt.issuers[0].audiences: expected a list, got the string "x"`}},
		{"scalar for mapping", doc(okAuth, okPolicy, "server: 127.0.0.1:9191"),
			[]string{`config.yaml:3: server: expected a mapping of keys to values, got the string "127.0.0.1:9191"`}},
		{"list for mapping", doc(okAuth, okPolicy, "log:", "  - level: info"),
			[]string{`config.yaml:3: log: expected a mapping of keys to values, got a list`}},
		{"scalar list item for mapping", doc(okPolicy, "authentication:", "  jwt:", "    issuers:", "      - https://idp.example"),
			[]string{`config.yaml:5: authentication.jwt.issuers[0]: expected a mapping of keys to values, got the string "https://idp.example"`}},
		{"mapping for string", doc(okAuth, okPolicy, "audit:", "  output:", "    path: x"),
			[]string{`config.yaml:4: audit.output: expected a string, got a mapping`}},
		{"bad merge value", doc(okAuth, okPolicy, "log:", "  <<: [{level: info}, text]"),
			[]string{`config.yaml:4: log.<<: a merge needs a mapping or a list of mappings, got a list`}},
		{"unknown key in a merged mapping", doc(okAuth, okPolicy, "log: &l {level: info, colour: true}", "audit:", "  <<: *l"),
			[]string{
				"config.yaml:3: log.colour: unknown key; valid keys here: level, format",
				"config.yaml:3: audit.level: unknown key; valid keys here: output, max_file_bytes, max_files, durability, flush_interval, queue_size, on_full, block_timeout, body_sha256, key_file, key_env, http, spool_dir, spool_max_bytes",
				"config.yaml:3: audit.colour: unknown key; valid keys here: output, max_file_bytes, max_files, durability, flush_interval, queue_size, on_full, block_timeout, body_sha256, key_file, key_env, http, spool_dir, spool_max_bytes",
			}},
		{"shape errors all reported", doc(okAuth, okPolicy, "server:", "  grpc_adress: x", "  shutdown_grace: 1", "log: {levels: debug}"),
			[]string{
				"config.yaml:4: server.grpc_adress: unknown key",
				"config.yaml:5: server.shutdown_grace: expected a duration",
				"config.yaml:6: log.levels: unknown key",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse(t, tt.text)
			if c != nil {
				t.Error("Parse returned a configuration with the error")
			}
			checkLines(t, err, tt.want...)
		})
	}
}

func TestAnchorsAndMerges(t *testing.T) {
	c := mustParse(t, issuerDoc(
		"      - issuer: a", // 5
		"        audiences: &aud [x, y]",
		"        algorithms: [RS256]",
		"        jwks_url: https://a.example/jwks",
		"        <<: &common", // 9
		"          leeway: 10s",
		"          jwks_fetch_timeout: 1s",
		"      - issuer: b", // 12
		"        audiences: *aud",
		"        algorithms: [RS256]",
		"        jwks_url: https://b.example/jwks",
		"        <<: *common",
		"        leeway: 20s", // written keys win over merged ones
		"      - <<: [{issuer: c, leeway: 1s}, {issuer: ignored, leeway: 2s, typ: JWT}]", // 18
		"        audiences: [z]",
		"        algorithms: [ES256]",
		"        jwks_url: https://c.example/jwks",
		"  api_keys: {file: keys.yaml}",
	))
	iss := c.Authentication.JWT.Issuers
	if got := iss[1].Audiences; !reflect.DeepEqual(got, []string{"x", "y"}) {
		t.Errorf("aliased audiences = %q", got)
	}
	if iss[0].Leeway != 10*time.Second || iss[1].Leeway != 20*time.Second {
		t.Errorf("leeways = %v, %v; want 10s (merged), 20s (written)", iss[0].Leeway, iss[1].Leeway)
	}
	if iss[1].JWKSFetchTimeout != time.Second {
		t.Errorf("merged fetch timeout = %v, want 1s", iss[1].JWKSFetchTimeout)
	}
	if iss[2].Issuer != "c" || iss[2].Leeway != time.Second || iss[2].Typ != "JWT" {
		t.Errorf("issuer from a merge list = %q, leeway %v, typ %q; want c, 1s, JWT", iss[2].Issuer, iss[2].Leeway, iss[2].Typ)
	}
	for path, want := range map[string]string{
		"authentication.jwt.issuers[1].jwks_fetch_timeout": "config.yaml:11", // where the merged value is written
		"authentication.jwt.issuers[1].leeway":             "config.yaml:17",
		"authentication.jwt.issuers[1].audiences":          "config.yaml:13", // where the alias is used
		"authentication.jwt.issuers[2].issuer":             "config.yaml:18",
	} {
		if got := c.Locate(path); got != want {
			t.Errorf("Locate(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestLocate(t *testing.T) {
	setKeyEnv(t)
	c := mustParse(t, fullConfig)
	for _, tt := range []struct{ path, want string }{
		{"server", "config.yaml:1"},
		{"server.tls.client_ca_file", "config.yaml:9"},
		{"authentication.jwt.issuers", "config.yaml:14"},
		{"authentication.jwt.issuers[0]", "config.yaml:15"},
		{"authentication.jwt.issuers[0].audiences[1]", "config.yaml:16"},
		{"authentication.jwt.issuers[0].claims.roles[0]", "config.yaml:26"},
		{"authentication.jwt.issuers[1].keys[0].secret_file", "config.yaml:32"},
		{"authentication.jwt.issuers[1].keys[1].secret_env", "config.yaml:33"},
		{"authentication.jwt.issuers[2].keys[1].pem_env", "config.yaml:39"},
		// Not in the file: the nearest parent that is.
		{"authentication.jwt.issuers[2].keys[1].kid", "config.yaml:39"},
		{"authentication.jwt.issuers[2].keys[7].pem_file", "config.yaml:37"},
		{"authentication.jwt.issuers[1].leeway", "config.yaml:27"},
		{"authentication.jwt.issuers[9]", "config.yaml:14"},
		{"authentication.jwt.cache.size", "config.yaml:42"},
		{"identity_headers.roles", "config.yaml:53"}, // explicit "" is in the file
		{"nothing.here", "config.yaml"},
		{"", "config.yaml"},
	} {
		if got := c.Locate(tt.path); got != tt.want {
			t.Errorf("Locate(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}

	// A Config built in code has no source: only its name.
	if got := (&Config{File: "x.yaml"}).Locate("server"); got != "x.yaml" {
		t.Errorf("Locate without source = %q, want x.yaml", got)
	}
	if got := (&Config{}).Locate("server"); got != "config" {
		t.Errorf("Locate without name = %q, want config", got)
	}
}

func TestError(t *testing.T) {
	setKeyEnv(t)
	c := mustParse(t, fullConfig)
	errBadKey := errors.New("not a PEM public key")
	keyErr := &FieldError{Path: "authentication.jwt.issuers[2].keys[0].pem_file", Err: errBadKey}
	plain := errors.New("listen: address in use")

	tests := []struct {
		name string
		err  error
		want string
	}{
		{"field error", keyErr, "config.yaml:38: authentication.jwt.issuers[2].keys[0].pem_file: not a PEM public key"},
		{"wrapped field error", fmt.Errorf("jwt: issuer batch: %w", keyErr), "config.yaml:38: authentication.jwt.issuers[2].keys[0].pem_file: not a PEM public key"},
		{"field not in the file", &FieldError{Path: "server.tls.min_version", Err: plain}, "config.yaml:6: server.tls.min_version: listen: address in use"},
		{"joined errors", errors.Join(keyErr, plain, &FieldError{Path: "log.level", Err: errBadKey}),
			"config.yaml:38: authentication.jwt.issuers[2].keys[0].pem_file: not a PEM public key\nlisten: address in use\nconfig.yaml:60: log.level: not a PEM public key"},
		{"wrapped joined errors", fmt.Errorf("jwt: %w", errors.Join(keyErr, &FieldError{Path: "log.level", Err: errBadKey})),
			"config.yaml:38: authentication.jwt.issuers[2].keys[0].pem_file: not a PEM public key\nconfig.yaml:60: log.level: not a PEM public key"},
		{"plain error", plain, "listen: address in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := c.Error(tt.err)
			if got.Error() != tt.want {
				t.Errorf("Error() = %q\nwant       %q", got, tt.want)
			}
			if !errors.Is(got, tt.err) && !errors.Is(got, keyErr) && !errors.Is(got, plain) {
				t.Error("the located error does not wrap the original")
			}
			if c.Error(got).Error() != got.Error() {
				t.Errorf("locating twice changed the message to %q", c.Error(got))
			}
		})
	}

	if got := c.Error(plain); got != plain {
		t.Errorf("plain error changed: %v", got)
	}
	joined := errors.Join(plain, fs.ErrNotExist)
	if got := c.Error(joined); got != joined {
		t.Errorf("joined plain errors changed: %v", got)
	}
	located := c.Error(keyErr)
	if wrapped := fmt.Errorf("start: %w", located); c.Error(wrapped) != wrapped {
		t.Errorf("a wrapped located error changed: %v", c.Error(wrapped))
	}
	if c.Error(nil) != nil {
		t.Error("Error(nil) != nil")
	}
	var fe *FieldError
	if located := c.Error(fmt.Errorf("x: %w", keyErr)); !errors.As(located, &fe) || fe != keyErr || !errors.Is(located, errBadKey) {
		t.Error("errors.As/Is do not reach the FieldError through the located error")
	}

	// Parse's own errors are FieldErrors too.
	_, err := parse(t, doc(okAuth, okPolicy, "log: {level: loud}"))
	if !errors.As(err, &fe) || fe.Path != "log.level" {
		t.Errorf("Parse error %v: want a *FieldError for log.level", err)
	}
}

func TestPath(t *testing.T) {
	c := &Config{Dir: "/etc/modelguard"}
	for _, tt := range []struct{ in, want string }{
		{"keys.yaml", "/etc/modelguard/keys.yaml"},
		{"policies/", "/etc/modelguard/policies"},
		{"../shared/ca.crt", "/etc/shared/ca.crt"},
		{"/var/lib/keys.yaml", "/var/lib/keys.yaml"},
		{"/var/lib//x/../keys.yaml", "/var/lib/keys.yaml"},
		{"", ""},
	} {
		if got := c.Path(tt.in); got != tt.want {
			t.Errorf("Path(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := fixture(t)
	path := filepath.Join(dir, "modelguard.yaml")
	if err := os.WriteFile(path, []byte(doc(okAuth, okPolicy)), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Dir != dir || c.File != path {
		t.Errorf("Dir, File = %q, %q; want %q, %q", c.Dir, c.File, dir, path)
	}
	if got := c.Path(c.Authentication.APIKeys.File); got != filepath.Join(dir, "keys.yaml") {
		t.Errorf("api key file resolves to %q", got)
	}

	// Errors name the file as given.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(doc(okAuth, okPolicy, "log: {level: loud}")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	checkLines(t, err, bad+`:3: log.level: "loud" is not one of`)

	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want ErrNotExist", err)
	}
}

// Relative paths resolve against the dir given to Parse, not the working
// directory, and a relative dir is made absolute.
func TestRelativePaths(t *testing.T) {
	base := fixture(t)
	text := []byte(doc(okAuth, okPolicy))

	if _, err := Parse(text, "embedded", base); err != nil {
		t.Fatalf("with the fixture dir: %v", err)
	}
	// The same text from another directory does not find keys.yaml there.
	_, err := Parse(text, "embedded", t.TempDir())
	checkLines(t, err,
		"embedded:1: authentication.api_keys.file: open ",
		"embedded:2: authorization.policy_dir: stat ")

	t.Chdir(filepath.Dir(base))
	c, err := Parse(text, "", filepath.Base(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.Dir != base {
		t.Errorf("Dir = %q, want absolute %q", c.Dir, base)
	}
	if got := c.Locate("authorization"); got != "config:2" {
		t.Errorf("unnamed configuration located as %q, want config:2", got)
	}
}

// Nested merges of the same mappings must not cost exponential time: each
// level below merges the previous one twice, 2^40 merges if expanded.
func TestMergeBomb(t *testing.T) {
	m := "&a0 {level: info}"
	for i := 1; i <= 40; i++ {
		m = fmt.Sprintf("&a%d {<<: [%s, *a%d]}", i, m, i-1)
	}
	_, err := parse(t, doc(okAuth, okPolicy, "log: {<<: ["+m+", *a40]}"))
	// yaml.v3 refuses the aliasing once the shape check has passed.
	checkLines(t, err, "config.yaml: document contains excessive aliasing")
}

// authorization is the authorization section with a policy directory and
// the defaults of everything else.
func authorization(dir, query string, timeout time.Duration) rego.Settings {
	s := rego.DefaultSettings()
	s.PolicyDir, s.Query, s.Timeout = dir, query, timeout
	return s
}
