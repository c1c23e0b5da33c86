// Package config defines modelguard's configuration file: one YAML document
// shared by the Envoy ext_authz server and the Kong plugin. Parsing is strict:
// unknown keys, wrong types, missing files and weak secrets are refused at
// start with the file, line and reason.
//
// A default applies when a key is absent or null (`key:` or `key: ~`); an
// explicit value, even zero or "", is kept and validated. This is how an
// explicit leeway of 0s, or an identity header set to "" (disabled), is told
// apart from an unset one.
package config

import "time"

// Config is the whole configuration file.
type Config struct {
	// Server configures the ext_authz gRPC server and its admin HTTP listener.
	// The Kong plugin ignores it.
	Server Server `yaml:"server"`
	// Authentication configures how callers prove who they are.
	Authentication Authentication `yaml:"authentication"`
	// Authorization configures the Rego policy that decides.
	Authorization Authorization `yaml:"authorization"`
	// RequestBody bounds every request body modelguard parses.
	RequestBody RequestBody `yaml:"request_body"`
	// Models lists the models callers may address, with how requests are
	// matched to each, its schema and its limits. A request to a model API
	// whose model is not listed is denied with UnknownModelStatus.
	Models []Model `yaml:"models"`
	// UnknownModelStatus is 403 (default) or 404.
	UnknownModelStatus int `yaml:"unknown_model_status"`
	// IdentityHeaders names the headers set on allowed requests for the upstream.
	IdentityHeaders IdentityHeaders `yaml:"identity_headers"`
	// Audit configures the audit trail.
	Audit Audit `yaml:"audit"`
	// Admission sheds load (503 "overloaded") before it exhausts memory or
	// CPU; the ext_authz server and the Kong plugin alike.
	Admission Admission `yaml:"admission"`
	// Log configures operator logs.
	Log Log `yaml:"log"`

	// Dir is the absolute directory against which relative paths in the
	// file are resolved (see Path). Set by the loader, not read from YAML.
	Dir string `yaml:"-"`
	// File names the configuration in messages: the path Load read, or the
	// name given to Parse ("" for an unnamed embedded configuration).
	File string `yaml:"-"`

	// src keeps the parsed YAML nodes so Locate can name a field's line.
	src *source
}

// Server configures the ext_authz gRPC server.
type Server struct {
	// GRPCAddress is the host:port of the ext_authz listener; default
	// 127.0.0.1:9191. An empty host listens on all interfaces.
	GRPCAddress string `yaml:"grpc_address"`
	// AdminAddress is the host:port of the admin HTTP listener (health,
	// metrics); default 127.0.0.1:9192; "off" disables it.
	AdminAddress string `yaml:"admin_address"`
	// MaxMessageBytes caps one gRPC message; default 8 MiB (8388608),
	// between 64 KiB and 256 MiB.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// ShutdownGrace bounds the drain of in-flight checks at stop; default 15s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	TLS           TLS           `yaml:"tls"`
}

// TLS configures TLS, and mTLS when ClientCAFile is set. CertFile and
// KeyFile go together; all three are paths relative to Config.Dir.
type TLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"` // set: clients must present a certificate signed by it
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// Authentication configures credentials.
type Authentication struct {
	// AllowAnonymous lets requests without any credential reach the policy
	// with auth method "none". Default false: they get 401.
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// MaxCredentialBytes caps a credential before any parsing. Default 8192,
	// between 256 and 65536.
	MaxCredentialBytes int     `yaml:"max_credential_bytes"`
	JWT                JWT     `yaml:"jwt"`
	APIKeys            APIKeys `yaml:"api_keys"`
}

// JWT configures JSON Web Token issuers.
type JWT struct {
	Issuers []Issuer `yaml:"issuers"`
}

// Issuer is one trusted token issuer.
type Issuer struct {
	// Issuer is the exact "iss" value. Tokens are routed to an issuer by it.
	Issuer string `yaml:"issuer"`
	// Audiences: the token's "aud" must contain at least one. Required.
	Audiences []string `yaml:"audiences"`
	// Algorithms allowed for this issuer, e.g. [RS256]. Required; one of
	// RS256/384/512, PS256/384/512, ES256/384/512, EdDSA (public keys from
	// the JWKS or PEM keys) or HS256/384/512 (static secret keys only: a
	// JWKS or PEM key is public, so HMAC with it would let anyone sign).
	// "none" is always refused.
	Algorithms []string `yaml:"algorithms"`
	// JWKSURL is fetched and refreshed; exclusive with Keys. Must be https
	// (http only for loopback hosts, for tests).
	JWKSURL string `yaml:"jwks_url"`
	// JWKSRefreshInterval, default 1h.
	JWKSRefreshInterval time.Duration `yaml:"jwks_refresh_interval"`
	// JWKSUnknownKIDInterval limits refreshes triggered by an unknown kid; default 5m.
	JWKSUnknownKIDInterval time.Duration `yaml:"jwks_unknown_kid_interval"`
	// JWKSFetchTimeout bounds one JWKS HTTP request; default 5s.
	JWKSFetchTimeout time.Duration `yaml:"jwks_fetch_timeout"`
	// Keys are static verification keys; exclusive with JWKSURL. Files are
	// read at load time to check them, and again by whoever builds verifiers.
	Keys []StaticKey `yaml:"keys"`
	// Leeway tolerated on exp, nbf and iat. Default 30s, at most 5m.
	Leeway time.Duration `yaml:"leeway"`
	// Typ, when set, must equal the token's "typ" header (case-insensitive), e.g. "at+jwt".
	Typ string `yaml:"typ"`
	// Claims maps token claims to the identity.
	Claims ClaimMapping `yaml:"claims"`
}

// StaticKey is one verification key from a file or environment variable.
// Exactly one source must be set. PEM sources hold a public key (PKIX or
// PKCS#1) or certificate; secret sources hold an HMAC secret of >= 32 bytes
// (one trailing newline is not part of it). Secrets are never written inline
// in the configuration. Read a key with Config.ReadKey.
type StaticKey struct {
	KID        string `yaml:"kid"`         // optional; when set, only tokens with this kid use the key (unique per issuer)
	PEMFile    string `yaml:"pem_file"`    // path relative to Config.Dir
	PEMEnv     string `yaml:"pem_env"`     // name of an environment variable holding the PEM
	SecretFile string `yaml:"secret_file"` // path relative to Config.Dir
	SecretEnv  string `yaml:"secret_env"`  // name of an environment variable holding the secret
}

// ClaimMapping says which claims give the subject and roles.
type ClaimMapping struct {
	// Subject claim name, default "sub". Dotted paths reach nested claims.
	Subject string `yaml:"subject"`
	// Roles lists claims whose values become roles: a string array, or a
	// space-separated string such as "scope". Dotted paths reach nested
	// claims (realm_access.roles). Default [roles].
	Roles []string `yaml:"roles"`
}

// APIKeys configures API key authentication.
type APIKeys struct {
	// File holds the key store (SHA-256 hashes), relative to Config.Dir.
	// Empty disables API keys.
	File string `yaml:"file"`
	// Header carrying the key, default x-api-key; lower-cased at load; not
	// "authorization" (that one is covered by Bearer).
	Header string `yaml:"header"`
	// Bearer accepts "Authorization: Bearer <key>" when the value is not a
	// JWT (OpenAI-compatible SDKs). Default true; pointer so "false" is seen.
	Bearer *bool `yaml:"bearer"`
}

// Authorization configures the Rego policy.
type Authorization struct {
	// PolicyDir holds .rego and data (.json/.yaml) files; watched for
	// changes. Required; relative to Config.Dir.
	PolicyDir string `yaml:"policy_dir"`
	// Query evaluated for each request, default data.modelguard.authz.allow;
	// a reference starting with "data.".
	// Its result is a boolean or an object {allow, status, reason, message, headers}.
	Query string `yaml:"query"`
	// Timeout for one evaluation, default 100ms, between 1ms and 10s.
	Timeout time.Duration `yaml:"timeout"`
}

// Admission bounds the work in flight. A request that finds no room within
// MaxWait is refused with 503 and the reason "overloaded".
type Admission struct {
	// MaxInflightBodyBytes bounds the request bytes held by checks in
	// flight; default 256 MiB. The ext_authz server counts a whole
	// server.max_message_bytes for a message it is still reading (its size
	// is not known before), then the message's size; so it must be at least
	// server.max_message_bytes.
	MaxInflightBodyBytes int `yaml:"max_inflight_body_bytes"`
	// MaxConcurrentChecks bounds the checks deciding at once (credential,
	// body checks, policy), so that CPU saturation queues briefly and then
	// sheds instead of running every check slowly into its timeout.
	// Default 0: four per CPU.
	MaxConcurrentChecks int `yaml:"max_concurrent_checks"`
	// MaxWait is how long a request waits for room; default 50ms, at most
	// 1s; 0 refuses at once.
	MaxWait time.Duration `yaml:"max_wait"`
}

// RequestBody bounds body parsing for every model.
type RequestBody struct {
	// MaxBytes caps a body as received and after decompression; over it the
	// request gets 413. Default 1048576 (1 MiB), at most server.max_message_bytes.
	MaxBytes int `yaml:"max_bytes"`
	// MaxDepth caps JSON nesting (objects and arrays); deeper gets 400.
	// Default 64, between 2 and 1000.
	MaxDepth int `yaml:"max_depth"`
}

// Model is one model callers may use.
type Model struct {
	// Name is the model's name as requests carry it: the body's "model"
	// field (OpenAI-style APIs) or the {model} segment of the path.
	Name string `yaml:"name"`
	// Operation is chat, completion, embeddings, infer, predict or custom.
	Operation string `yaml:"operation"`
	// Paths are path templates matched against the request path; {model}
	// captures the model name, {version} any version. Default per
	// operation: chat /v1/chat/completions, completion /v1/completions,
	// embeddings /v1/embeddings, infer /v2/models/{model}/infer and
	// /v2/models/{model}/versions/{version}/infer, predict
	// /v1/models/{model}:predict and /v1/models/{model}/versions/{version}:predict.
	// Required for custom. A template without {model} takes the name from
	// the body's "model" field.
	Paths []string `yaml:"paths"`
	// Schema is a built-in schema id (openai.chat_completions,
	// openai.completions, openai.embeddings, oip.infer, kserve.v1.predict)
	// or a JSON Schema file (draft 2020-12 unless it says otherwise).
	// Default per operation; required for custom.
	Schema string `yaml:"schema"`
	// Limits beyond the schema.
	Limits ModelLimits `yaml:"limits"`
}

// ModelLimits are per-model caps; 0 means no cap (MaxBodyBytes: the
// request_body default).
type ModelLimits struct {
	MaxBodyBytes   int `yaml:"max_body_bytes"`   // 413 above
	MaxPromptChars int `yaml:"max_prompt_chars"` // characters of prompt text (messages, prompt, input); 400 above
	MaxTokens      int `yaml:"max_tokens"`       // cap on max_tokens / max_completion_tokens; 400 above
	MaxMessages    int `yaml:"max_messages"`     // chat messages; 400 above
}

// IdentityHeaders names the upstream headers describing the caller. Names
// are lower-cased at load. A header set explicitly to "" is disabled (not
// set); an absent or null key gets its default. Client-sent copies of the
// enabled headers are always removed.
type IdentityHeaders struct {
	Subject    string `yaml:"subject"`     // default x-modelguard-subject
	Roles      string `yaml:"roles"`       // default x-modelguard-roles (comma-separated)
	AuthMethod string `yaml:"auth_method"` // default x-modelguard-auth-method
	KeyID      string `yaml:"key_id"`      // default x-modelguard-key-id
	DecisionID string `yaml:"decision_id"` // default x-modelguard-decision-id
}

// Audit configures the audit trail (policy/audit): one hash-chained record
// per decision and per operator event.
type Audit struct {
	// Output is "stdout" (default), "off", or a file path (appended; relative
	// to Config.Dir; its directory must exist).
	Output string `yaml:"output"`
	// MaxFileBytes rotates a file output before it would exceed this size;
	// default 104857600 (100 MiB), at least 4096.
	MaxFileBytes int `yaml:"max_file_bytes"`
	// MaxFiles is how many rotated files are kept; default 0: all of them
	// (an audit trail is not deleted unless asked).
	MaxFiles int `yaml:"max_files"`
	// FlushInterval is the group commit period: records are fsynced together
	// at most this long after the first of them. Default 100ms, 1ms to 10s.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// QueueSize bounds the records waiting for the writer; default 10000,
	// 1 to 1048576.
	QueueSize int `yaml:"queue_size"`
	// OnFull says what a request gets while the trail cannot take records
	// (queue full, sink failing): "deny" (default) a 503 at once, or
	// "block" up to BlockTimeout, then a 503.
	OnFull string `yaml:"on_full"`
	// BlockTimeout bounds the wait with on_full: block, and the wait of an
	// admitted decision's record for room in the queue. Default 1s, 1ms to 60s.
	BlockTimeout time.Duration `yaml:"block_timeout"`
	// BodySHA256 adds the SHA-256 of each request body to its record.
	BodySHA256 bool `yaml:"body_sha256"`
	// KeyFile or KeyEnv (exclusive) hold an HMAC key (>= 32 bytes; one
	// trailing newline is not part of it) that keys the hash chain.
	KeyFile string `yaml:"key_file"`
	KeyEnv  string `yaml:"key_env"`
	// HTTP delivers records to an endpoint as well (or instead, with output
	// "off"), through SpoolDir.
	HTTP AuditHTTP `yaml:"http"`
	// SpoolDir holds records until the HTTP endpoint acknowledges them;
	// required with http.url, created if missing (its parent must exist).
	SpoolDir string `yaml:"spool_dir"`
	// SpoolMaxBytes caps the spool: beyond it requests are denied as with a
	// full queue. Default 1073741824 (1 GiB), at least 1048576.
	SpoolMaxBytes int `yaml:"spool_max_bytes"`
}

// AuditHTTP configures delivery of audit records to an HTTP endpoint.
type AuditHTTP struct {
	// URL receives POSTs of gzip-compressed JSON lines; https (http only for
	// loopback hosts). Empty: no HTTP delivery.
	URL string `yaml:"url"`
	// Timeout bounds one POST; default 10s, 100ms to 5m.
	Timeout time.Duration `yaml:"timeout"`
	// TokenFile or TokenEnv (exclusive, optional) hold a token sent as
	// "Authorization: Bearer <token>".
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
}

// Log configures operator logs on stderr.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // json (default) or text
}
