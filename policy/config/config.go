// Package config defines modelguard's configuration file: one YAML document
// shared by the Envoy ext_authz server and the Kong plugin. Parsing is strict:
// unknown keys, wrong types, missing files and weak secrets are refused at
// start with the file, line and reason.
//
// A default applies when a key is absent or null (`key:` or `key: ~`); an
// explicit value, even zero or "", is kept and validated. This is how an
// explicit leeway of 0s, or an identity header set to "" (disabled), is told
// apart from an unset one.
//
// Each subsystem owns its section: the settings type (with its YAML tags),
// the value of absent keys and the rules (jwtauth.IssuerSettings,
// apikey.Settings, rego.Settings, models.Settings, audit.Config,
// ratelimit.Settings, admission.Settings, tracing.Settings), returning
// field.Errors relative to the section. This package keeps the YAML shape,
// positions, the server, credential, identity header and log settings, and
// the rules across sections, and reports every error as
// "file:line: path: reason".
package config

import (
	"time"

	"github.com/modelguard/modelguard/httpauthz/httpsettings"
	"github.com/modelguard/modelguard/policy/admission"
	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/jwtauth"
	"github.com/modelguard/modelguard/policy/models"
	"github.com/modelguard/modelguard/policy/ratelimit"
	"github.com/modelguard/modelguard/policy/rego"
	"github.com/modelguard/modelguard/policy/tracing"
)

// Config is the whole configuration file.
type Config struct {
	// Server configures the ext_authz gRPC server and its admin HTTP listener.
	// The Kong plugin ignores it.
	Server Server `yaml:"server"`
	// Authentication configures how callers prove who they are.
	Authentication Authentication `yaml:"authentication"`
	// Authorization configures the Rego policy that decides (policy/rego
	// owns its settings, defaults and rules).
	Authorization rego.Settings `yaml:"authorization"`
	// RequestBody bounds every request body modelguard parses.
	RequestBody models.BodySettings `yaml:"request_body"`
	// Models lists the models callers may address, with how requests are
	// matched to each, its schema and its limits. A request to a model API
	// whose model is not listed is denied with UnknownModelStatus.
	Models []models.ModelSettings `yaml:"models"`
	// UnknownModelStatus is 403 (default) or 404.
	UnknownModelStatus int `yaml:"unknown_model_status"`
	// (policy/models owns these three keys' settings, defaults and rules;
	// see ModelSettings.)
	// IdentityHeaders names the headers set on allowed requests for the upstream.
	IdentityHeaders IdentityHeaders `yaml:"identity_headers"`
	// Audit configures the audit trail (policy/audit owns its settings,
	// defaults and rules).
	Audit audit.Config `yaml:"audit"`
	// RateLimits are request limits and token budgets (policy/ratelimit
	// owns their settings, defaults and rules).
	RateLimits ratelimit.Settings `yaml:"rate_limits"`
	// Admission sheds load (503 "overloaded") before it exhausts memory or
	// CPU (policy/admission owns its settings, defaults and rules).
	Admission admission.Settings `yaml:"admission"`
	// Tracing exports OpenTelemetry spans of decisions (policy/tracing owns
	// its settings, defaults and rules).
	Tracing tracing.Settings `yaml:"tracing"`
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
	// HTTP is the HTTP authorization listener (Envoy's HTTP ext_authz
	// service, nginx auth_request, Traefik and Caddy forward auth); off
	// by default (httpauthz/httpsettings owns its settings and rules).
	HTTP httpsettings.Settings `yaml:"http"`
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
	MaxCredentialBytes int `yaml:"max_credential_bytes"`
	// JWT configures JSON Web Token issuers (policy/jwtauth owns its
	// settings, defaults and rules).
	JWT jwtauth.Settings `yaml:"jwt"`
	// APIKeys configures API key authentication (policy/apikey owns its
	// settings, defaults and rules).
	APIKeys apikey.Settings `yaml:"api_keys"`
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

// ModelSettings returns the settings of the model catalog, which the file
// spreads over three top-level keys.
func (c *Config) ModelSettings() models.Settings {
	return models.Settings{Models: c.Models, Body: c.RequestBody, UnknownModelStatus: c.UnknownModelStatus}
}

// Log configures operator logs on stderr.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // json (default) or text
}
