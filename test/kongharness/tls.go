package kongharness

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"time"
)

// ClientTLS is what nginx's ssl module knows of a request's TLS
// connection, as the variables a plugin reads with kong.nginx.get_var.
type ClientTLS struct {
	// Verify is $ssl_client_verify: "SUCCESS", "NONE" (no certificate) or
	// "FAILED:<reason>".
	Verify string
	// RawCert is $ssl_client_raw_cert: the client's certificate in PEM,
	// "" without one.
	RawCert string
	// SubjectDN is $ssl_client_s_dn: the certificate's subject in
	// OpenSSL's RFC 2253 form, "" without one.
	SubjectDN string
}

// ClientVerify is nginx's ssl_verify_client with ssl_client_certificate:
// the CAs client certificates must chain to, and whether an unverified
// certificate is let through (optional_no_ca) or refused with a 400
// (optional).
type ClientVerify struct {
	Roots        *x509.CertPool
	OptionalNoCA bool
}

// errVerify is a certificate verification failure nginx refuses under
// ssl_verify_client optional (a 400 before any plugin runs).
var errVerify = errors.New("client certificate verification failed")

// nginxTLS is what nginx makes of the handshake state: OpenSSL verifies
// the peer's chain against the roots for client authentication.
// optional_no_ca lets through the failures ngx_ssl_verify_error_is_optional
// names (an issuer not among the roots, self-signed), never others such
// as an expired certificate. The subject is Go's RFC 2253 rendering,
// which is OpenSSL's for printable ASCII values of the attributes Go
// names (CN, O, OU, C, L, ST): tests use those.
func (v ClientVerify) nginxTLS(state *tls.ConnectionState, now time.Time) (ClientTLS, error) {
	if len(state.PeerCertificates) == 0 {
		return ClientTLS{Verify: "NONE"}, nil
	}
	leaf := state.PeerCertificates[0]
	ct := ClientTLS{Verify: "SUCCESS", SubjectDN: leaf.Subject.String(),
		RawCert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}))}
	inter := x509.NewCertPool()
	for _, c := range state.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: v.Roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	var unknown x509.UnknownAuthorityError
	switch {
	case err == nil:
	case errors.As(err, &unknown) && v.OptionalNoCA:
		ct.Verify = "FAILED:unable to get local issuer certificate"
		if leaf.CheckSignatureFrom(leaf) == nil {
			ct.Verify = "FAILED:self-signed certificate"
		}
	default:
		return ClientTLS{}, errVerify
	}
	return ct, nil
}

// sslVariable answers kong.nginx.get_var for the ssl module's variables
// this harness knows; found is false for other names and, on a
// plain-text connection, for these too (Lua nil).
func (r *Request) sslVariable(name string) (value string, found bool) {
	var get func(ClientTLS) string
	switch name {
	case "ssl_client_verify":
		get = func(c ClientTLS) string { return c.Verify }
	case "ssl_client_raw_cert":
		get = func(c ClientTLS) string { return c.RawCert }
	case "ssl_client_s_dn":
		get = func(c ClientTLS) string { return c.SubjectDN }
	default:
		return "", false
	}
	if r.TLS == nil {
		return "", false
	}
	return get(*r.TLS), true
}
