package httpauthz

import (
	"fmt"
	"net/url"

	"github.com/modelguard/modelguard/policy/certid"
)

// The headers nginx/modelguard.conf sets on the subrequest from nginx's
// ssl variables; proxy_set_header replaces a client's header of the same
// name, and drops it when the variable is empty (plain text, no
// certificate).
const (
	headerSSLVerify    = "x-ssl-client-verify" // $ssl_client_verify
	headerSSLCert      = "x-ssl-client-cert"   // $ssl_client_escaped_cert
	headerSSLSubjectDN = "x-ssl-client-s-dn"   // $ssl_client_s_dn
)

// nginxPrincipal is the principal of the client certificate nginx
// verified, from the subrequest's headers: none unless $ssl_client_verify
// is exactly SUCCESS (optional_no_ca lets unverified certificates through
// as FAILED:reason). certid.FromPEM derives it as Envoy derives
// source.principal, the subject being nginx's RFC 2253 form.
func nginxPrincipal(principals *certid.Principals, headers map[string]string) (string, error) {
	if headers[headerSSLVerify] != "SUCCESS" {
		return "", nil
	}
	pem, err := url.PathUnescape(headers[headerSSLCert])
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", certid.ErrMalformed, headerSSLCert, err)
	}
	return principals.FromPEM(pem, func() (string, error) { return headers[headerSSLSubjectDN], nil })
}
