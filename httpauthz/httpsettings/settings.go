// Package httpsettings is the server.http section of the configuration
// file: the HTTP authorization listener served by package httpauthz. It is
// a package of its own so that policy/config can own the file's shape
// without importing the adapter (which imports the core).
package httpsettings

import "github.com/modelguard/modelguard/policy/field"

// What the subrequest endpoints do with a model request, which arrives
// without its body (Settings.WithoutBody).
const (
	// Refuse denies it: 403 body_unavailable.
	Refuse = "refuse"
	// HeadersOnly decides it on its headers, without the body checks
	// (policy.Request.HeadersOnly); its audit record says so.
	HeadersOnly = "headers_only"
)

// Off is the Address of a disabled listener.
const Off = "off"

// Settings configure the HTTP authorization listener. DefaultSettings
// gives the value every absent key takes.
type Settings struct {
	// Address is the host:port of the listener, or "off" (the default).
	// Gateways send it X-Original-* and X-Forwarded-* headers that it
	// trusts on the subrequest endpoints: clients must not reach it.
	Address string `yaml:"address"`
	// WithoutBody is what the subrequest endpoints (nginx auth_request,
	// Traefik forwardAuth, Caddy forward_auth), which never receive the
	// request body, do with a model request: "refuse" (default) or
	// "headers_only".
	WithoutBody string `yaml:"without_body"`
	// NginxClientCerts makes the nginx endpoint take the client
	// certificate nginx verified from the X-SSL-Client-Verify,
	// X-SSL-Client-Cert and X-SSL-Client-S-DN headers of the subrequest
	// ($ssl_client_verify, $ssl_client_escaped_cert, $ssl_client_s_dn):
	// only nginx's proxy_set_header of all three in the subrequest's
	// location (nginx/modelguard.conf) keeps a client from sending them.
	// Default false: the headers are ignored.
	NginxClientCerts bool `yaml:"nginx_client_certs"`
}

// DefaultSettings returns the settings of an absent server.http section.
func DefaultSettings() Settings {
	return Settings{Address: Off, WithoutBody: Refuse}
}

// Enabled reports whether the listener is on.
func (s Settings) Enabled() bool { return s.Address != Off }

// Validate checks the section on its own; errors are relative to it.
func (s Settings) Validate() []error {
	var errs field.List
	if s.Enabled() {
		errs.Address("address", s.Address)
	}
	errs.OneOf("without_body", s.WithoutBody, Refuse, HeadersOnly)
	return errs
}
