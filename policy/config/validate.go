package config

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/models"
)

// Limits checked by validate.
const (
	minMessageBytes    = 64 << 10
	maxMessageBytes    = 256 << 20
	minCredentialBytes = 256
	maxCredentialBytes = 64 << 10
)

// reservedHeader reports whether name must not be an identity header:
// setting it would replace the caller's credentials or break the framing of
// the upstream request.
func reservedHeader(name string) bool {
	switch name {
	case "authorization", "proxy-authorization", "cookie", "host",
		"connection", "content-length", "content-type", "keep-alive",
		"te", "trailer", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// validator collects every problem so that one start shows them all.
type validator struct {
	c    *Config
	errs field.List
}

func (v *validator) fail(path, format string, args ...any) {
	v.errs.Addf(path, format, args...)
}

// validate checks the defaulted configuration; the errors are FieldErrors.
func (c *Config) validate() []error {
	v := &validator{c: c}
	v.server(&c.Server)
	v.authentication(&c.Authentication)
	v.errs = append(v.errs, field.Within("authorization", c.Authorization.Validate(c.Dir))...)
	v.models(c)
	v.identityHeaders(&c.IdentityHeaders, c.Authentication.APIKeys.Header)
	v.errs = append(v.errs, field.Within("audit", c.Audit.Validate(c.Dir))...)
	v.errs = append(v.errs, field.Within("rate_limits", c.RateLimits.Validate())...)
	v.errs = append(v.errs, field.Within("admission", c.Admission.Validate())...)
	v.errs = append(v.errs, field.Within("tracing", c.Tracing.Validate(c.Dir))...)
	v.errs = append(v.errs, field.Within("ip_lists", c.IPLists.Validate(c.Dir))...)
	v.errs = append(v.errs, field.Within("lockout", c.Lockout.Validate())...)
	v.errs = append(v.errs, field.Within("dlp", c.DLP.Validate())...)
	// A message being read counts as a whole server.max_message_bytes (an
	// invalid one is reported on its own).
	if m := c.Server.MaxMessageBytes; m >= minMessageBytes && m <= maxMessageBytes && c.Admission.MaxInflightBodyBytes < m {
		v.fail("admission.max_inflight_body_bytes", "smaller than server.max_message_bytes (%d): a check being read counts as a whole message", m)
	}
	v.errs.OneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.errs.OneOf("log.format", c.Log.Format, "json", "text")
	return v.errs
}

func (v *validator) server(s *Server) {
	v.errs.Address("server.grpc_address", s.GRPCAddress)
	if s.AdminAddress != "off" {
		v.errs.Address("server.admin_address", s.AdminAddress)
		if s.AdminAddress == s.GRPCAddress && !strings.HasSuffix(s.AdminAddress, ":0") {
			v.fail("server.admin_address", "same address as server.grpc_address")
		}
	}
	v.errs = append(v.errs, field.Within("server.http", s.HTTP.Validate())...)
	if h := s.HTTP.Address; s.HTTP.Enabled() && !strings.HasSuffix(h, ":0") && (h == s.GRPCAddress || h == s.AdminAddress) {
		v.fail("server.http.address", "same address as another listener")
	}
	if s.HTTP.Enabled() && s.TLS.Enabled() {
		v.fail("server.http.address", "the HTTP authorization listener is plaintext, and server.tls is set: keep it on loopback or a private network, without server.tls")
	}
	field.Range(&v.errs, "server.max_message_bytes", s.MaxMessageBytes, minMessageBytes, maxMessageBytes)
	v.positive("server.shutdown_grace", s.ShutdownGrace)

	t := s.TLS
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		v.fail("server.tls.key_file", "required with cert_file")
	case t.CertFile == "" && t.KeyFile != "":
		v.fail("server.tls.cert_file", "required with key_file")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		v.fail("server.tls.client_ca_file", "requires cert_file and key_file: client certificates are checked only over TLS")
	}
	v.file("server.tls.cert_file", t.CertFile)
	v.file("server.tls.key_file", t.KeyFile)
	v.file("server.tls.client_ca_file", t.ClientCAFile)
}

func (v *validator) authentication(a *Authentication) {
	field.Range(&v.errs, "authentication.max_credential_bytes", a.MaxCredentialBytes, minCredentialBytes, maxCredentialBytes)
	if len(a.JWT.Issuers) == 0 && a.APIKeys.File == "" && len(a.ClientCerts) == 0 && !a.Introspection.Enabled() && !a.AllowAnonymous {
		v.fail("authentication", "no authentication method: configure jwt.issuers, api_keys.file, introspection or client_certs, or set allow_anonymous: true")
	}
	v.errs = append(v.errs, field.Within("authentication.introspection", a.Introspection.Validate(v.c.Dir))...)
	v.errs = append(v.errs, field.Within("authentication.client_certs", a.ClientCerts.Validate())...)
	v.errs = append(v.errs, field.Within("authentication.jwt", a.JWT.Validate(v.c.Dir))...)

	v.errs = append(v.errs, field.Within("authentication.api_keys", a.APIKeys.Validate(v.c.Dir))...)
}

// models adds the rules across sections to the catalog's own.
func (v *validator) models(c *Config) {
	field.Range(&v.errs, "request_body.max_bytes", c.RequestBody.MaxBytes, 1, c.Server.MaxMessageBytes)
	v.errs = append(v.errs, c.ModelSettings().Validate()...)
	for i, m := range c.Models {
		if m.Limits.MaxBodyBytes > c.Server.MaxMessageBytes {
			v.fail("models["+strconv.Itoa(i)+"].limits.max_body_bytes", "larger than server.max_message_bytes (%d): such bodies could never arrive", c.Server.MaxMessageBytes)
		}
	}
	// A dry-run entry naming no model would silently enforce what the
	// operator meant to try out.
	for i, name := range c.Authorization.DryRun.Models {
		if name != "" && !slices.ContainsFunc(c.Models, func(m models.ModelSettings) bool { return m.Name == name }) {
			v.fail("authorization.dry_run.models["+strconv.Itoa(i)+"]", "%q is not a configured model", name)
		}
	}
}

func (v *validator) identityHeaders(h *IdentityHeaders, apiKeyHeader string) {
	seen := make(map[string]string)
	for _, f := range []struct{ key, name string }{
		{"subject", h.Subject}, {"roles", h.Roles}, {"auth_method", h.AuthMethod},
		{"key_id", h.KeyID}, {"decision_id", h.DecisionID},
	} {
		p := "identity_headers." + f.key
		switch first, dup := seen[f.name]; {
		case f.name == "": // disabled
		case !field.IsHeaderName(f.name):
			v.fail(p, "%q is not a valid HTTP header name", f.name)
		case reservedHeader(f.name):
			v.fail(p, "%s is reserved: setting it would change the request itself", f.name)
		case f.name == apiKeyHeader:
			v.fail(p, "same header as authentication.api_keys.header")
		case dup:
			v.fail(p, "same header as identity_headers.%s", first)
		default:
			seen[f.name] = f.key
		}
	}
}

// file checks that an optional file exists and can be read.
func (v *validator) file(p, name string) {
	if name == "" {
		return
	}
	if err := field.CheckFile(v.c.Path(name)); err != nil {
		v.fail(p, "%v", err)
	}
}

func (v *validator) positive(p string, d time.Duration) {
	if d <= 0 {
		v.fail(p, "must be positive, got %v", d)
	}
}

// SetHTTPAddress sets server.http.address (serve's -http-address flag) and
// checks the server section again with it.
func (c *Config) SetHTTPAddress(addr string) error {
	c.Server.HTTP.Address = addr
	v := &validator{c: c}
	v.server(&c.Server)
	return c.Error(errors.Join(v.errs...))
}
