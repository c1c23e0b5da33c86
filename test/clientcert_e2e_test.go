package test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"

	"github.com/modelguard/modelguard/test/kongharness"
	"github.com/modelguard/modelguard/test/testkit"
)

// Client certificates the tests present, and the client_certs section
// mapping them (appended to the default authentication section).
const (
	certSPIFFE  = "spiffe://cluster.local/ns/apps/sa/chat-frontend"
	certDNS     = "scorer.batch.internal"
	certSubject = "CN=nightly-eval,O=Acme"
	certsAuth   = `  client_certs:
    - {principal: "` + certSPIFFE + `", subject: chat-frontend, roles: [chat-user]}
    - {principal: "` + certDNS + `", subject: batch-scorer, roles: [chat-user]}
    - {principal: "` + certSubject + `", subject: nightly-eval, roles: [chat-user]}
`
)

// clientCerts are certificates from one CA, each with one way of naming
// its principal (Envoy's source.principal: URI SAN, else DNS SAN, else
// subject), one whose principal no mapping names, and one from a CA the
// gateways do not trust.
type clientCerts struct {
	ca                                      *testkit.CA
	spiffe, dns, subject, unmapped, foreign tls.Certificate
}

func newClientCerts(t *testing.T) *clientCerts {
	t.Helper()
	ca := testkit.NewCA(t, "modelguard test client CA")
	spiffe, _ := url.Parse(certSPIFFE)
	cn := func(name string) pkix.Name { return pkix.Name{CommonName: name, Organization: []string{"Acme"}} }
	return &clientCerts{ca: ca,
		spiffe:   ca.Issue(t, x509.Certificate{Subject: cn("chat-frontend"), URIs: []*url.URL{spiffe}, DNSNames: []string{"chat.apps.internal"}}),
		dns:      ca.Issue(t, x509.Certificate{Subject: cn("scorer"), DNSNames: []string{certDNS}}),
		subject:  ca.Issue(t, x509.Certificate{Subject: cn("nightly-eval")}),
		unmapped: ca.Issue(t, x509.Certificate{Subject: cn("stranger")}),
		foreign:  testkit.NewCA(t, "another CA").Issue(t, x509.Certificate{Subject: cn("nightly-eval")}),
	}
}

// mtlsFronts serve the Envoy and the Kong harness of one env over TLS,
// asking for client certificates as the gateways are configured to:
// Envoy with a validation context whose CA is ca and
// require_client_certificate false (a certificate is optional; one that
// does not verify fails the handshake), Kong (nginx) with
// ssl_verify_client optional, or optional_no_ca, and
// ssl_client_certificate.
type mtlsFronts struct {
	envoy, kong *httptest.Server
}

func newMTLSFronts(t *testing.T, e *env, k *kongEnv, ca *testkit.CA, optionalNoCA bool) *mtlsFronts {
	t.Helper()
	envoy := httptest.NewUnstartedServer(e.front.Config.Handler)
	envoy.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool()}
	envoy.StartTLS()
	t.Cleanup(envoy.Close)
	k.front.SetClientVerify(&kongharness.ClientVerify{Roots: ca.Pool(), OptionalNoCA: optionalNoCA})
	kong := httptest.NewUnstartedServer(k.front)
	kong.TLS = &tls.Config{ClientAuth: tls.RequestClientCert} // nginx asks, and verifies itself
	kong.StartTLS()
	t.Cleanup(kong.Close)
	return &mtlsFronts{envoy: envoy, kong: kong}
}

// client is a client of srv presenting cert (none when nil).
func client(srv *httptest.Server, cert *tls.Certificate) *http.Client {
	tr := srv.Client().Transport.(*http.Transport).Clone() // srv's client is shared
	if cert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: tr}
}

// TestKongClientCertificates: behind Kong, the client certificate nginx
// verified is an identity as behind Envoy; one nginx could not verify
// (ssl_verify_client optional_no_ca lets it through as FAILED) is none, and
// a client header that claims a certificate is never one. Reading the
// certificate costs one get_var without a verified one, two with one
// whose principal is a SAN, three with one named by its subject; a
// failing read is never an allow.
func TestKongClientCertificates(t *testing.T) {
	certs := newClientCerts(t)
	e := newEnv(t, envOptions{auth: certsAuth})
	k := newKongEnv(t, e, kongBinary(t))
	fronts := newMTLSFronts(t, e, k, certs.ca, true)
	base := []string{"kong.request.get_headers", "kong.nginx.get_var"}
	allowed := func(n int) []string {
		calls := slices.Clone(base)
		for range n - 1 {
			calls = append(calls, "kong.nginx.get_var")
		}
		return append(calls, "kong.nginx.get_var", "kong.request.get_raw_body", "kong.service.request.set_headers", "kong.ctx.shared.set")
	}
	for _, tc := range []struct {
		name    string
		cert    *tls.Certificate
		headers map[string]string
		status  int
		subject string
		calls   []string
	}{
		{"spiffe id", &certs.spiffe, nil, 200, "chat-frontend", allowed(2)},
		{"dns san", &certs.dns, nil, 200, "batch-scorer", allowed(2)},
		{"subject", &certs.subject, nil, 200, "nightly-eval", allowed(3)},
		{"unmapped", &certs.unmapped, nil, 401, "", append(slices.Clone(base), "kong.nginx.get_var", "kong.nginx.get_var", "kong.response.exit")},
		{"unverified (optional_no_ca)", &certs.foreign, nil, 401, "", append(slices.Clone(base), "kong.response.exit")},
		{"no certificate", nil, nil, 401, "", append(slices.Clone(base), "kong.response.exit")},
		{"no certificate, forged certificate headers", nil, map[string]string{"ssl-client-verify": "SUCCESS", "x-ssl-client-verify": "SUCCESS",
			"x-client-cert": certSPIFFE, "ssl_client_s_dn": certSubject}, 401, "", append(slices.Clone(base), "kong.response.exit")},
		{"an api key wins over the certificate", &certs.spiffe, map[string]string{"x-api-key": e.keys["alice-key"]}, 200, "alice",
			[]string{"kong.request.get_headers", "kong.nginx.get_var", "kong.request.get_raw_body", "kong.service.request.set_headers", "kong.ctx.shared.set"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := k.doVia(fronts.kong.URL, client(fronts.kong, tc.cert), "POST", "/v1/chat/completions", tc.headers, []byte(chatBody("gpt-4o-mini")))
			subject, _ := r.upstreamHeader("x-modelguard-subject")
			calls := r.ex.x.Calls["access"]
			if r.status != tc.status || subject != tc.subject || !slices.Equal(calls, tc.calls) {
				t.Errorf("%d, subject %q (want %d %q)\ncalls %v\nwant  %v", r.status, subject, tc.status, tc.subject, calls, tc.calls)
			}
		})
	}

	// A get_var that fails: Kong drops the plugin's connection and answers
	// 500 (the plugin, told of the error, denies too).
	for _, v := range []string{"ssl_client_verify", "ssl_client_raw_cert", "ssl_client_s_dn"} {
		k.front.SetPrepare(func(r *kongharness.Request) { r.FailVar = v })
		r := k.doVia(fronts.kong.URL, client(fronts.kong, &certs.subject), "POST", "/v1/chat/completions", nil, []byte(chatBody("gpt-4o-mini")))
		if r.status != 500 || r.upstream != nil || r.ex.res.Access.Err == nil {
			t.Errorf("get_var %s failing: %d %s", v, r.status, r.body)
		}
	}
}
