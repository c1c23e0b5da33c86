package jwtauth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/testkit"
)

// provider is an in-process OpenID provider: a discovery document and two
// JWKS paths, each editable, and a switch that takes it down.
type provider struct {
	*httptest.Server
	mu     sync.Mutex
	doc    string
	jwks   map[string]string // path -> JWK Set
	down   atomic.Bool
	docHit atomic.Int64
}

func newProvider(t *testing.T) *provider {
	p := &provider{jwks: map[string]string{}}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if strings.HasSuffix(r.URL.Path, wellKnown) { // under any issuer path
			p.docHit.Add(1)
			w.Write([]byte(p.doc))
			return
		}
		if set, ok := p.jwks[r.URL.Path]; ok {
			w.Write([]byte(set))
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *provider) set(doc string, jwks map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.doc = doc
	for k, v := range jwks {
		p.jwks[k] = v
	}
}

// document is a discovery document for issuer naming jwksPath.
func (p *provider) document(issuer, jwksPath string) string {
	return `{"issuer":"` + issuer + `","jwks_uri":"` + p.URL + jwksPath + `","id_token_signing_alg_values_supported":["RS256"]}`
}

func discoveryConfig(issuer string, refresh time.Duration) Settings {
	return Settings{Issuers: []IssuerSettings{{
		Issuer: issuer, Audiences: []string{"api"}, Algorithms: []string{"RS256"}, Discovery: true,
		JWKSRefreshInterval: refresh, JWKSUnknownKIDInterval: time.Hour, JWKSFetchTimeout: 5 * time.Second,
	}}}
}

func jwksOf(keys ...string) string { return `{"keys":[` + strings.Join(keys, ",") + `]}` }

func TestDiscovery(t *testing.T) {
	k := keys(t)
	r1 := testkit.JWK(t, &k.rsa.PublicKey, "r1", nil)
	r2 := testkit.JWK(t, &k.rsa2.PublicKey, "r2", nil)
	p := newProvider(t)
	iss := p.URL
	tok := func(key any, kid string) string {
		return sign(t, "RS256", key, map[string]any{"kid": kid}, claimsFor(iss, nil))
	}
	p.set(p.document(iss, "/keys/a"), map[string]string{"/keys/a": jwksOf(r1), "/keys/b": jwksOf(r2)})

	var log refreshLog
	v := newVerifier(t, discoveryConfig(iss, 20*time.Millisecond), "", Options{OnJWKSRefresh: log.record})
	if err := verifyErr(v, tok(k.rsa, "r1")); err != nil {
		t.Fatalf("key found through discovery: %v", err)
	}

	// The provider goes down: the last good document and keys stay.
	p.down.Store(true)
	hits := p.docHit.Load()
	testkit.Eventually(t, "failed refreshes reported", func() bool { _, failed := log.counts(); return failed >= 2 })
	if err := verifyErr(v, tok(k.rsa, "r1")); err != nil {
		t.Fatalf("provider down: %v", err)
	}
	if p.docHit.Load() != hits {
		t.Fatal("document served while down")
	}

	// A document for another issuer is refused: still the old keys.
	p.set(p.document("https://evil.example", "/keys/b"), nil)
	p.down.Store(false)
	testkit.Eventually(t, "the foreign document read", func() bool { return p.docHit.Load() > hits+2 })
	if err := verifyErr(v, tok(k.rsa, "r1")); err != nil {
		t.Fatalf("after a foreign document: %v", err)
	}
	if err := verifyErr(v, tok(k.rsa2, "r2")); err == nil {
		t.Fatal("the foreign document's keys were taken")
	}

	// The provider moves its JWKS: the new set comes into force.
	p.set(p.document(iss, "/keys/b"), nil)
	testkit.Eventually(t, "the moved JWKS in force", func() bool { return verifyErr(v, tok(k.rsa2, "r2")) == nil })
	wantReason(t, verifyErr(v, tok(k.rsa, "r1")), ReasonUnknownKey)
}

// TestDiscoveryStartDown: a provider that is down (or names another
// issuer) at start leaves the issuer without keys, its tokens refused,
// until a good document arrives.
func TestDiscoveryStartDown(t *testing.T) {
	k := keys(t)
	p := newProvider(t)
	iss := p.URL + "/realms/x"
	p.set(`{"issuer":"`+p.URL+`","jwks_uri":"`+p.URL+`/keys/a"}`, map[string]string{"/keys/a": jwksOf(testkit.JWK(t, &k.rsa.PublicKey, "r1", nil))})
	v := newVerifier(t, discoveryConfig(iss, 20*time.Millisecond), "", Options{})
	tok := sign(t, "RS256", k.rsa, map[string]any{"kid": "r1"}, claimsFor(iss, nil))
	wantReason(t, verifyErr(v, tok), ReasonJWKSUnavailable)
	// Now the document names this issuer.
	p.set(`{"issuer":"`+iss+`","jwks_uri":"`+p.URL+`/keys/a"}`, nil)
	testkit.Eventually(t, "keys after a good document", func() bool { return verifyErr(v, tok) == nil })
}

func TestDiscoverySettings(t *testing.T) {
	for _, tc := range []struct {
		is   IssuerSettings
		want string
	}{
		{IssuerSettings{Issuer: "http://idp.example", Discovery: true}, "issuers[0].issuer: with discovery: must use https"},
		{IssuerSettings{Issuer: "https://idp.example", Discovery: true, JWKSURL: "https://idp.example/jwks"}, "issuers[0].discovery: discovery, jwks_url and keys are exclusive"},
		{IssuerSettings{Issuer: "https://idp.example"}, "one of jwks_url, keys or discovery: true is required"},
		{IssuerSettings{Issuer: "https://idp.example", JWKSURL: "https://idp.example/jwks", Algorithms: []string{}}, "issuers[0].algorithms: at least one algorithm is required"},
		{IssuerSettings{Issuer: "https://idp.example", Discovery: true, Algorithms: []string{"HS256"}}, "issuers[0].discovery: HS256 needs static secret keys"},
	} {
		tc.is.Audiences = []string{"api"}
		if tc.is.Algorithms == nil {
			tc.is.Algorithms = []string{"RS256"}
		}
		errs := withDefaults(Settings{Issuers: []IssuerSettings{tc.is}}).Validate("")
		var got []string
		for _, e := range errs {
			got = append(got, e.Error())
		}
		if j := strings.Join(got, "\n"); !strings.Contains(j, tc.want) {
			t.Errorf("%+v: %s, want %q", tc.is, j, tc.want)
		}
	}
	ok := withDefaults(discoveryConfig("https://idp.example", time.Hour))
	if errs := ok.Validate(""); len(errs) != 0 {
		t.Errorf("valid discovery issuer refused: %v", errs)
	}
	ok.Issuers[0].Algorithms = nil // the document's, then
	if errs := ok.Validate(""); len(errs) != 0 {
		t.Errorf("discovery issuer without algorithms refused: %v", errs)
	}
}

// docWithAlgs is a discovery document advertising algs (JSON array text).
func (p *provider) docWithAlgs(issuer, jwksPath, algs string) string {
	return `{"issuer":"` + issuer + `","jwks_uri":"` + p.URL + jwksPath + `","id_token_signing_alg_values_supported":` + algs + `}`
}

// TestDiscoveredAlgorithms: without configured algorithms, the document's
// public-key algorithms are the ones accepted; none and HMAC never are, a
// document advertising no usable one is refused (the last good one stays),
// and configured algorithms win over the document.
func TestDiscoveredAlgorithms(t *testing.T) {
	k := keys(t)
	p := newProvider(t)
	iss := p.URL
	p.set(p.docWithAlgs(iss, "/keys/a", `["RS256","HS256","none"]`), map[string]string{"/keys/a": jwksOf(
		testkit.JWK(t, &k.rsa.PublicKey, "r1", nil), testkit.JWK(t, &k.ec256.PublicKey, "e1", nil))})
	rs := sign(t, "RS256", k.rsa, map[string]any{"kid": "r1"}, claimsFor(iss, nil))
	es := sign(t, "ES256", k.ec256, map[string]any{"kid": "e1"}, claimsFor(iss, nil))
	hs := sign(t, "HS256", k.secret, map[string]any{"kid": "r1"}, claimsFor(iss, nil))

	cfg := discoveryConfig(iss, 20*time.Millisecond)
	cfg.Issuers[0].Algorithms = nil
	var log refreshLog
	v := newVerifier(t, cfg, "", Options{OnJWKSRefresh: log.record})
	if err := verifyErr(v, rs); err != nil {
		t.Fatalf("RS256, advertised: %v", err)
	}
	wantReason(t, verifyErr(v, es), ReasonAlgNotAllowed) // key published, alg not advertised
	wantReason(t, verifyErr(v, hs), ReasonAlgNotAllowed) // advertised, never taken

	// The provider now advertises ES256 only.
	p.set(p.docWithAlgs(iss, "/keys/a", `["ES256"]`), nil)
	testkit.Eventually(t, "ES256 in force", func() bool { return verifyErr(v, es) == nil })
	wantReason(t, verifyErr(v, rs), ReasonAlgNotAllowed)

	// A document with no usable algorithm (or none listed) is refused:
	// ES256 stays in force.
	for _, algs := range []string{`["HS256","none"]`, `[]`} {
		_, before := log.counts()
		p.set(p.docWithAlgs(iss, "/keys/a", algs), nil)
		testkit.Eventually(t, "the unusable document refused", func() bool { _, failed := log.counts(); return failed >= before+2 })
		if err := verifyErr(v, es); err != nil {
			t.Fatalf("after a document advertising %s: %v", algs, err)
		}
		wantReason(t, verifyErr(v, rs), ReasonAlgNotAllowed)
	}

	// Configured algorithms win over the document.
	p.set(p.docWithAlgs(iss, "/keys/a", `["ES256"]`), nil)
	vc := newVerifier(t, discoveryConfig(iss, time.Hour), "", Options{})
	if err := verifyErr(vc, rs); err != nil {
		t.Fatalf("configured RS256: %v", err)
	}
	wantReason(t, verifyErr(vc, es), ReasonAlgNotAllowed)
}

// TestDiscoveredAlgorithmsStartUnusable: a first document without a
// usable algorithm leaves the issuer without keys.
func TestDiscoveredAlgorithmsStartUnusable(t *testing.T) {
	k := keys(t)
	p := newProvider(t)
	iss := p.URL
	p.set(p.docWithAlgs(iss, "/keys/a", `["HS256"]`), map[string]string{"/keys/a": jwksOf(testkit.JWK(t, &k.rsa.PublicKey, "r1", nil))})
	cfg := discoveryConfig(iss, time.Hour)
	cfg.Issuers[0].Algorithms = nil
	v := newVerifier(t, cfg, "", Options{})
	wantReason(t, verifyErr(v, sign(t, "RS256", k.rsa, map[string]any{"kid": "r1"}, claimsFor(iss, nil))), ReasonJWKSUnavailable)
}
