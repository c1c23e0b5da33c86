package config

import (
	"reflect"
	"strconv"
	"strings"
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

// Defaults, documented on the fields they apply to.
const (
	defaultGRPCAddress        = "127.0.0.1:9191"
	defaultAdminAddress       = "127.0.0.1:9192"
	defaultMaxMessageBytes    = 8 << 20
	defaultShutdownGrace      = 15 * time.Second
	defaultMaxCredentialBytes = 8192
	defaultLogLevel           = "info"
	defaultLogFormat          = "json"
)

// applyDefaults fills every field whose key is absent or null. Explicit
// values, even zero or "", are kept for validation to judge.
func (c *Config) applyDefaults() {
	orDefault(c, "server.grpc_address", &c.Server.GRPCAddress, defaultGRPCAddress)
	orDefault(c, "server.admin_address", &c.Server.AdminAddress, defaultAdminAddress)
	orDefault(c, "server.max_message_bytes", &c.Server.MaxMessageBytes, defaultMaxMessageBytes)
	orDefault(c, "server.shutdown_grace", &c.Server.ShutdownGrace, defaultShutdownGrace)
	fillDefaults(c, "server.http", &c.Server.HTTP, httpsettings.DefaultSettings())

	a := &c.Authentication
	orDefault(c, "authentication.max_credential_bytes", &a.MaxCredentialBytes, defaultMaxCredentialBytes)
	for i := range a.JWT.Issuers {
		fillDefaults(c, "authentication.jwt.issuers["+strconv.Itoa(i)+"]", &a.JWT.Issuers[i], jwtauth.DefaultIssuer())
	}
	fillDefaults(c, "authentication.jwt.cache", &a.JWT.Cache, jwtauth.DefaultCache())
	fillDefaults(c, "authentication.api_keys", &a.APIKeys, apikey.DefaultSettings())
	a.APIKeys.Header = strings.ToLower(a.APIKeys.Header)

	fillDefaults(c, "authorization", &c.Authorization, rego.DefaultSettingsFor(c.Authorization.Input))

	m := models.DefaultSettings()
	// A body can never be larger than the gRPC message carrying it.
	m.Body.MaxBytes = min(m.Body.MaxBytes, c.Server.MaxMessageBytes)
	fillDefaults(c, "request_body", &c.RequestBody, m.Body)
	orDefault(c, "unknown_model_status", &c.UnknownModelStatus, m.UnknownModelStatus)

	h := &c.IdentityHeaders
	for _, f := range []struct {
		key   string
		field *string
		def   string
	}{
		{"subject", &h.Subject, "x-modelguard-subject"},
		{"roles", &h.Roles, "x-modelguard-roles"},
		{"auth_method", &h.AuthMethod, "x-modelguard-auth-method"},
		{"key_id", &h.KeyID, "x-modelguard-key-id"},
		{"decision_id", &h.DecisionID, "x-modelguard-decision-id"},
	} {
		orDefault(c, "identity_headers."+f.key, f.field, f.def)
		*f.field = strings.ToLower(*f.field)
	}

	fillDefaults(c, "audit", &c.Audit, audit.DefaultConfig())
	fillDefaults(c, "admission", &c.Admission, admission.DefaultSettings())
	fillDefaults(c, "tracing", &c.Tracing, tracing.DefaultSettings())
	orDefault(c, "log.level", &c.Log.Level, defaultLogLevel)
	orDefault(c, "log.format", &c.Log.Format, defaultLogFormat)
	fillDefaults(c, "rate_limits", &c.RateLimits, ratelimit.DefaultSettings())
}

// fillDefaults sets every field of the struct *dst whose key under path the
// document leaves absent or null to its value in def: the subsystem that
// owns a settings type says what its defaults are, the document says which
// apply.
func fillDefaults[T any](c *Config, path string, dst *T, def T) {
	fill(c, path, reflect.ValueOf(dst).Elem(), reflect.ValueOf(def))
}

func fill(c *Config, path string, dst, def reflect.Value) {
	for i := range dst.NumField() {
		f := dst.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // as yamlFields
		}
		p := join(path, name)
		switch {
		case f.Type.Kind() == reflect.Struct:
			fill(c, p, dst.Field(i), def.Field(i))
		case !c.set(p):
			dst.Field(i).Set(def.Field(i))
		}
	}
}

// orDefault sets *field to def unless the document gives path a value.
func orDefault[T any](c *Config, path string, field *T, def T) {
	if !c.set(path) {
		*field = def
	}
}
