package test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/modelguard/modelguard/test/kongharness"
	"github.com/modelguard/modelguard/test/nginxserver"
	"github.com/modelguard/modelguard/test/testkit"
	"github.com/modelguard/modelguard/test/testkit/demo"
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
// whose principal is a SAN, three with one named by its subject (seen for
// the first time: the plugin remembers principals, a certificate seen
// again costs two); a failing read is never an allow.
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
		{"subject, seen before", &certs.subject, nil, 200, "nightly-eval", allowed(2)},
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
		// A certificate the plugin has not seen: it remembers principals.
		fresh := certs.ca.Issue(t, x509.Certificate{Subject: pkix.Name{CommonName: "nightly-eval", Organization: []string{"Acme"}}})
		r := k.doVia(fronts.kong.URL, client(fronts.kong, &fresh), "POST", "/v1/chat/completions", nil, []byte(chatBody("gpt-4o-mini")))
		if r.status != 500 || r.upstream != nil || r.ex.res.Access.Err == nil {
			t.Errorf("get_var %s failing: %d %s", v, r.status, r.body)
		}
	}
}

// TestNginxClientCertificates runs real nginx doing real mTLS with
// nginx/modelguard.conf (a TLS listener added, with ssl_verify_client
// optional_no_ca, so that an unverified certificate gets through nginx)
// in front of a real "modelguard serve" with
// server.http.nginx_client_certs: the certificate nginx verified is the
// caller as behind Envoy and Kong, its subject as nginx prints it; an
// unverified one is none, and certificate headers a client sends, over
// TLS or plain text, are never one.
func TestNginxClientCertificates(t *testing.T) {
	nginxserver.Binary(t)
	bin := buildBinary(t)
	certs := newClientCerts(t)
	dir := demo.Dir(t)
	keys := map[string]string{}
	writeNginxKeys(t, dir, keys)
	cfg := testkit.WriteFile(t, dir, "config.yaml", `server:
  grpc_address: 127.0.0.1:0
  admin_address: 127.0.0.1:0
  http: {address: 127.0.0.1:0, without_body: headers_only, nginx_client_certs: true}
authentication:
  api_keys: {file: keys.yaml}
`+certsAuth+demo.Policy)
	srv := startServe(t, bin, cfg)
	upstream := httptest.NewServer(http.HandlerFunc(echoUpstream))
	t.Cleanup(upstream.Close)

	serverCert, serverKey := testkit.WriteSelfSignedCert(t, dir, "localhost")
	caFile := testkit.WriteFile(t, dir, "client-ca.pem", certs.ca.PEM())
	plain, secure := nginxserver.FreePort(t), nginxserver.FreePort(t)
	conf := nginxConfig(t, srv.http, strings.TrimPrefix(upstream.URL, "http://"), plain)
	conf = strings.Replace(conf, "listen "+plain+";", "listen "+plain+";\n    listen "+secure+" ssl;\n    ssl_certificate "+serverCert+
		";\n    ssl_certificate_key "+serverKey+";\n    ssl_client_certificate "+caFile+";\n    ssl_verify_client optional_no_ca;", 1)
	ng := nginxserver.Start(t, conf, secure)
	defer func() {
		if t.Failed() {
			t.Logf("nginx error log:\n%s", ng.ErrorLog())
		}
	}()
	roots := x509.NewCertPool()
	pemBytes, err := os.ReadFile(serverCert)
	if err != nil {
		t.Fatal(err)
	}
	roots.AppendCertsFromPEM(pemBytes)
	via := func(cert *tls.Certificate) *nginxFront {
		cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return &nginxFront{url: "https://" + secure, client: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}}
	}
	forged := map[string]string{"X-SSL-Client-Verify": "SUCCESS", "X-SSL-Client-S-DN": certSubject,
		"X-SSL-Client-Cert": url.PathEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs.spiffe.Certificate[0]})))}
	for _, tc := range []struct {
		name    string
		front   *nginxFront
		headers map[string]string
		status  int
		subject string
	}{
		{"spiffe id", via(&certs.spiffe), nil, 200, "chat-frontend"},
		{"dns san", via(&certs.dns), nil, 200, "batch-scorer"},
		{"subject, as nginx prints it", via(&certs.subject), nil, 200, "nightly-eval"},
		{"unmapped", via(&certs.unmapped), nil, 401, ""},
		{"unverified (optional_no_ca)", via(&certs.foreign), nil, 401, ""},
		{"an api key wins over the certificate", via(&certs.spiffe), map[string]string{"X-Api-Key": keys["alice-key"]}, 200, "alice"},
		{"no certificate, forged headers", via(nil), forged, 401, ""},
		{"plain text, forged headers", &nginxFront{url: "http://" + plain}, forged, 401, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.front.do(t, "GET", "/v1/models", tc.headers, "")
			subject, _ := a.upstreamHeader("X-Modelguard-Subject")
			if a.status != tc.status || subject != tc.subject {
				t.Fatalf("%d %s, subject %q; want %d %q", a.status, a.body, subject, tc.status, tc.subject)
			}
			if method, _ := a.upstreamHeader("X-Modelguard-Auth-Method"); tc.status == 200 && tc.headers == nil && method != "client_cert" {
				t.Errorf("auth method %q", method)
			}
		})
	}
}
