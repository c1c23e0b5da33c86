package config

import (
	"strconv"
	"strings"
	"time"
)

// Defaults, documented on the fields they apply to.
const (
	defaultGRPCAddress        = "127.0.0.1:9191"
	defaultAdminAddress       = "127.0.0.1:9192"
	defaultMaxMessageBytes    = 8 << 20
	defaultShutdownGrace      = 15 * time.Second
	defaultMaxCredentialBytes = 8192
	defaultLeeway             = 30 * time.Second
	defaultJWKSRefresh        = time.Hour
	defaultJWKSUnknownKID     = 5 * time.Minute
	defaultJWKSFetchTimeout   = 5 * time.Second
	defaultSubjectClaim       = "sub"
	defaultRolesClaim         = "roles"
	defaultAPIKeyHeader       = "x-api-key"
	defaultQuery              = "data.modelguard.authz.allow"
	defaultPolicyTimeout      = 100 * time.Millisecond
	defaultAuditOutput        = "stdout"
	defaultLogLevel           = "info"
	defaultLogFormat          = "json"
	defaultBodyMaxBytes       = 1 << 20
	defaultBodyMaxDepth       = 64
	defaultMaxInflightBody    = 256 << 20
	defaultAdmissionWait      = 50 * time.Millisecond
)

// applyDefaults fills every field whose key is absent or null. Explicit
// values, even zero or "", are kept for validation to judge.
func (c *Config) applyDefaults() {
	orDefault(c, "server.grpc_address", &c.Server.GRPCAddress, defaultGRPCAddress)
	orDefault(c, "server.admin_address", &c.Server.AdminAddress, defaultAdminAddress)
	orDefault(c, "server.max_message_bytes", &c.Server.MaxMessageBytes, defaultMaxMessageBytes)
	orDefault(c, "server.shutdown_grace", &c.Server.ShutdownGrace, defaultShutdownGrace)

	a := &c.Authentication
	orDefault(c, "authentication.max_credential_bytes", &a.MaxCredentialBytes, defaultMaxCredentialBytes)
	for i := range a.JWT.Issuers {
		iss := &a.JWT.Issuers[i]
		p := "authentication.jwt.issuers[" + strconv.Itoa(i) + "]."
		orDefault(c, p+"leeway", &iss.Leeway, defaultLeeway)
		orDefault(c, p+"jwks_refresh_interval", &iss.JWKSRefreshInterval, defaultJWKSRefresh)
		orDefault(c, p+"jwks_unknown_kid_interval", &iss.JWKSUnknownKIDInterval, defaultJWKSUnknownKID)
		orDefault(c, p+"jwks_fetch_timeout", &iss.JWKSFetchTimeout, defaultJWKSFetchTimeout)
		orDefault(c, p+"claims.subject", &iss.Claims.Subject, defaultSubjectClaim)
		orDefault(c, p+"claims.roles", &iss.Claims.Roles, []string{defaultRolesClaim})
	}
	orDefault(c, "authentication.api_keys.header", &a.APIKeys.Header, defaultAPIKeyHeader)
	a.APIKeys.Header = strings.ToLower(a.APIKeys.Header)
	if a.APIKeys.Bearer == nil {
		bearer := true
		a.APIKeys.Bearer = &bearer
	}

	orDefault(c, "authorization.query", &c.Authorization.Query, defaultQuery)
	orDefault(c, "authorization.timeout", &c.Authorization.Timeout, defaultPolicyTimeout)

	// A body can never be larger than the gRPC message carrying it.
	orDefault(c, "request_body.max_bytes", &c.RequestBody.MaxBytes, min(defaultBodyMaxBytes, c.Server.MaxMessageBytes))
	orDefault(c, "request_body.max_depth", &c.RequestBody.MaxDepth, defaultBodyMaxDepth)
	orDefault(c, "unknown_model_status", &c.UnknownModelStatus, 403)

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

	c.auditDefaults()
	orDefault(c, "admission.max_inflight_body_bytes", &c.Admission.MaxInflightBodyBytes, defaultMaxInflightBody)
	orDefault(c, "admission.max_wait", &c.Admission.MaxWait, defaultAdmissionWait)
	orDefault(c, "log.level", &c.Log.Level, defaultLogLevel)
	orDefault(c, "log.format", &c.Log.Format, defaultLogFormat)
}

// orDefault sets *field to def unless the document gives path a value.
func orDefault[T any](c *Config, path string, field *T, def T) {
	if !c.set(path) {
		*field = def
	}
}
