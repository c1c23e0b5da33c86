package certid

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
)

// ErrMalformed is a certificate the gateway handed over that does not
// parse: no identity.
var ErrMalformed = errors.New("client certificate does not parse")

// oidSubjectAltName is the subjectAltName extension (RFC 5280 4.2.1.6).
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// FromPEM derives the principal of a client certificate the gateway has
// verified, in PEM (nginx's $ssl_client_raw_cert), as Envoy derives
// source.principal: its first URI SAN (a SPIFFE ID), else its first DNS
// SAN, else its subject. subject is called only in that last case: it
// returns the subject as the gateway's TLS library prints it (nginx's
// $ssl_client_s_dn, OpenSSL's RFC 2253 form, which is also the form
// Envoy's BoringSSL prints), so that one principal names one
// certificate in both gateways. A certificate that does not parse is an
// error wrapping ErrMalformed; subject's errors are returned as they are.
func FromPEM(certPEM string, subject func() (string, error)) (string, error) {
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil || block.Type != "CERTIFICATE" {
		return "", fmt.Errorf("%w: no PEM certificate", ErrMalformed)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if p := sanPrincipal(c); p != "" {
		return p, nil
	}
	return subject()
}

// sanPrincipal is the first URI SAN, else the first DNS SAN, as the
// certificate spells them. crypto/x509 hands URIs over parsed (a scheme
// in upper case comes back lower-cased), while Envoy takes the bytes as
// they are: so the extension is read here, once ParseCertificate has
// checked it.
func sanPrincipal(c *x509.Certificate) string {
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var names []asn1.RawValue
		if _, err := asn1.Unmarshal(ext.Value, &names); err != nil {
			return ""
		}
		dns := ""
		for _, n := range names {
			if n.Class != asn1.ClassContextSpecific {
				continue
			}
			switch n.Tag {
			case 6: // uniformResourceIdentifier
				return string(n.Bytes)
			case 2: // dNSName
				if dns == "" {
					dns = string(n.Bytes)
				}
			}
		}
		return dns
	}
	return ""
}

// maxPrincipals bounds Principals: 1024 certificates of ~1 KiB of PEM.
const maxPrincipals = 1024

// Principals remembers the principals FromPEM derived, by certificate:
// a client sends the same certificate with every request, and a lookup
// costs a map access where a parse costs ~16 µs and 49 allocations. It
// holds at most 1024 certificates and starts over when full; errors are
// not remembered. Safe for concurrent use.
type Principals struct {
	max int
	mu  sync.Mutex
	m   map[string]string // PEM to principal
}

// NewPrincipals returns an empty Principals.
func NewPrincipals() *Principals {
	return &Principals{max: maxPrincipals, m: make(map[string]string)}
}

// FromPEM is the package's FromPEM, remembered.
func (p *Principals) FromPEM(certPEM string, subject func() (string, error)) (string, error) {
	p.mu.Lock()
	principal, ok := p.m[certPEM]
	p.mu.Unlock()
	if ok {
		return principal, nil
	}
	principal, err := FromPEM(certPEM, subject)
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	if len(p.m) >= p.max {
		clear(p.m)
	}
	p.m[certPEM] = principal
	p.mu.Unlock()
	return principal, nil
}
