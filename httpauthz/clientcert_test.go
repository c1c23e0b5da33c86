package httpauthz

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/modelguard/modelguard/httpauthz/httpsettings"
	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/certid"
	"github.com/modelguard/modelguard/test/testkit"
)

// escapedCert is a CA-issued certificate percent-encoded as
// $ssl_client_escaped_cert carries it (a space is %20, never "+").
func escapedCert(t *testing.T, tmpl x509.Certificate) string {
	t.Helper()
	c := testkit.NewCA(t, "test CA").Issue(t, tmpl)
	return url.PathEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})))
}

func TestNginxPrincipal(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://c/ns/a/sa/b")
	withURI := escapedCert(t, x509.Certificate{URIs: []*url.URL{spiffe}})
	subjectOnly := escapedCert(t, x509.Certificate{Subject: pkix.Name{CommonName: "batch"}})
	for _, tc := range []struct {
		name    string
		headers map[string]string
		want    string
		wantErr error
	}{
		{"verified", map[string]string{headerSSLVerify: "SUCCESS", headerSSLCert: withURI}, "spiffe://c/ns/a/sa/b", nil},
		{"verified, subject from nginx", map[string]string{headerSSLVerify: "SUCCESS", headerSSLCert: subjectOnly, headerSSLSubjectDN: "CN=batch"}, "CN=batch", nil},
		{"unverified", map[string]string{headerSSLVerify: "FAILED:self-signed certificate", headerSSLCert: withURI}, "", nil},
		{"no certificate", map[string]string{headerSSLVerify: "NONE"}, "", nil},
		{"plain text", map[string]string{headerSSLCert: withURI}, "", nil},
		{"lower-case success", map[string]string{headerSSLVerify: "success", headerSSLCert: withURI}, "", nil},
		{"bad escape", map[string]string{headerSSLVerify: "SUCCESS", headerSSLCert: "%zz"}, "", certid.ErrMalformed},
		{"not a certificate", map[string]string{headerSSLVerify: "SUCCESS", headerSSLCert: "garbage"}, "", certid.ErrMalformed},
	} {
		got, err := nginxPrincipal(certid.NewPrincipals(), tc.headers)
		if got != tc.want || !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
			t.Errorf("%s: %q, %v", tc.name, got, err)
		}
	}
}

// principalDecider asks for the principal as the core does when it may
// authenticate the caller, and keeps what it got.
type principalDecider struct{ got chan string }

func (p principalDecider) Decide(_ context.Context, req *policy.Request) *policy.Decision {
	if err := req.Complete(policy.PartTLSPrincipal); err != nil {
		p.got <- "error: " + err.Error()
	} else {
		p.got <- req.TLSPrincipal
	}
	return &policy.Decision{ID: "d", Status: http.StatusUnauthorized, Reason: "credentials_missing", Message: "no"}
}
func (principalDecider) Deny(id string, status int, reason, message string) *policy.Decision {
	return &policy.Decision{ID: id, Status: status, Reason: reason, Message: message}
}
func (principalDecider) MaxBodyBytes() int { return 0 }
func (principalDecider) RecordsBody() bool { return false }

// TestSubrequestClientCert: the certificate headers count only on the
// nginx endpoint with server.http.nginx_client_certs, even before the
// target is known to be readable.
func TestSubrequestClientCert(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://c/ns/a/sa/b")
	cert := escapedCert(t, x509.Certificate{URIs: []*url.URL{spiffe}})
	for _, tc := range []struct {
		name, path string
		on         bool
		target     bool
		want       string
	}{
		{"on, nginx", NginxPath, true, true, "spiffe://c/ns/a/sa/b"},
		{"on, nginx, no target headers", NginxPath, true, false, "spiffe://c/ns/a/sa/b"},
		{"off", NginxPath, false, true, ""},
		{"on, ingress-nginx", IngressNginxPath, true, true, ""},
		{"on, forward auth", ForwardAuthPath, true, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := principalDecider{got: make(chan string, 1)}
			srv := httptest.NewServer(NewHandler(d, httpsettings.Settings{Address: "127.0.0.1:0", WithoutBody: httpsettings.Refuse, NginxClientCerts: tc.on}, nil))
			defer srv.Close()
			req, _ := http.NewRequest("GET", srv.URL+tc.path, nil)
			req.Header.Set("X-SSL-Client-Verify", "SUCCESS")
			req.Header.Set("X-SSL-Client-Cert", cert)
			if tc.target {
				for k, v := range map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/v1/models", "X-Original-URL": "https://m/v1/models",
					"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/v1/models"} {
					req.Header.Set(k, v)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := <-d.got; got != tc.want {
				t.Errorf("principal %q, want %q", got, tc.want)
			}
		})
	}
}
