package jwtauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/testkit"
)

// introspectionEndpoint is an in-process RFC 7662 endpoint: it requires
// client_secret_basic as modelguard / s3cret (or, behind TLS, a client
// certificate), and answers from tokens.
type introspectionEndpoint struct {
	*httptest.Server
	hits   atomic.Int64
	mu     sync.Mutex
	tokens map[string]map[string]any
	status int
}

func newIntrospectionEndpoint(t *testing.T, mtls bool) *introspectionEndpoint {
	ep := &introspectionEndpoint{tokens: map[string]map[string]any{}, status: 200}
	ep.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ep.hits.Add(1)
		if mtls {
			if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || r.FormValue("client_id") != "modelguard" {
				http.Error(w, "client certificate required", http.StatusUnauthorized)
				return
			}
		} else if id, sec, ok := r.BasicAuth(); !ok || id != "modelguard" || sec != "s3cret" {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodPost || r.Header.Get("content-type") != "application/x-www-form-urlencoded" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		ep.mu.Lock()
		defer ep.mu.Unlock()
		if ep.status != 200 {
			w.WriteHeader(ep.status)
			return
		}
		resp, ok := ep.tokens[r.FormValue("token")]
		if !ok {
			resp = map[string]any{"active": false}
		}
		json.NewEncoder(w).Encode(resp)
	}))
	if mtls {
		ep.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
		ep.StartTLS()
	} else {
		ep.Start()
	}
	t.Cleanup(ep.Close)
	return ep
}

func (ep *introspectionEndpoint) set(token string, resp map[string]any) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	ep.tokens[token] = resp
}

func introspectionSettings(url string) IntrospectionSettings {
	s := DefaultIntrospection()
	s.URL, s.ClientID, s.ClientSecretEnv, s.Audiences = url, "modelguard", "MG_TEST_INTROSPECTION_SECRET", []string{"models"}
	return s
}

func TestIntrospect(t *testing.T) {
	t.Setenv("MG_TEST_INTROSPECTION_SECRET", "s3cret")
	ep := newIntrospectionEndpoint(t, false)
	now := testNow
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := introspectionSettings(ep.URL)
	if errs := s.Validate(""); len(errs) > 0 {
		t.Fatal(errs)
	}
	in, err := NewIntrospector(s, "", Options{now: clock})
	if err != nil {
		t.Fatal(err)
	}
	exp := testNow.Add(30 * time.Second).Unix()
	ep.set("opaque-alice", map[string]any{"active": true, "sub": "alice", "scope": "chat-user read", "client_id": "app", "aud": []string{"models"}, "exp": exp})
	ep.set("opaque-other-aud", map[string]any{"active": true, "sub": "bob", "aud": "billing", "exp": exp})
	ep.set("opaque-no-sub", map[string]any{"active": true, "aud": "models", "exp": exp})
	ep.set("opaque-expired", map[string]any{"active": true, "sub": "carol", "aud": "models", "exp": testNow.Add(-time.Second).Unix()})
	ctx := context.Background()

	id, err := in.Introspect(ctx, "opaque-alice")
	if err != nil || id.Subject != "alice" || !slices.Equal(id.Roles, []string{"chat-user", "read"}) || id.Claims["client_id"] != "app" {
		t.Fatalf("active token: %+v, %v", id, err)
	}
	for tok, reason := range map[string]string{
		"opaque-unknown":   ReasonTokenInactive,
		"opaque-other-aud": ReasonBadAudience,
		"opaque-no-sub":    ReasonMissingSubject,
		"opaque-expired":   ReasonExpired,
	} {
		_, err := in.Introspect(ctx, tok)
		wantReason(t, err, reason)
	}

	// Cached: the endpoint is not asked again, even when it fails...
	hits := ep.hits.Load()
	ep.mu.Lock()
	ep.status = http.StatusInternalServerError
	ep.mu.Unlock()
	if _, err := in.Introspect(ctx, "opaque-alice"); err != nil || ep.hits.Load() != hits {
		t.Fatalf("cached result: %v, %d calls", err, ep.hits.Load()-hits)
	}
	// ...but never past the token's exp (30s, sooner than the 1m TTL):
	// then the endpoint is asked, and its failure denies.
	mu.Lock()
	now = now.Add(31 * time.Second)
	mu.Unlock()
	_, err = in.Introspect(ctx, "opaque-alice")
	wantReason(t, err, ReasonIntrospectionUnavailable)
	if !Unavailable(ReasonIntrospectionUnavailable) || Unavailable(ReasonTokenInactive) {
		t.Error("Unavailable")
	}

	// Unreachable endpoint: fail closed.
	ep.Close()
	_, err = in.Introspect(ctx, "opaque-bob")
	wantReason(t, err, ReasonIntrospectionUnavailable)
}

func TestIntrospectWrongSecret(t *testing.T) {
	t.Setenv("MG_TEST_INTROSPECTION_SECRET", "not-it")
	ep := newIntrospectionEndpoint(t, false)
	ep.set("opaque-alice", map[string]any{"active": true, "sub": "alice", "aud": "models"})
	in, err := NewIntrospector(introspectionSettings(ep.URL), "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = in.Introspect(context.Background(), "opaque-alice")
	wantReason(t, err, ReasonIntrospectionUnavailable)
}

// TestIntrospectMTLS: with a client certificate, the endpoint
// authenticates modelguard by it (RFC 8705), with client_id in the form.
func TestIntrospectMTLS(t *testing.T) {
	ep := newIntrospectionEndpoint(t, true)
	ep.set("opaque-alice", map[string]any{"active": true, "sub": "alice", "aud": "models"})
	dir := t.TempDir()
	cert, key := testkit.WriteSelfSignedCert(t, dir, "client")
	s := introspectionSettings(ep.URL)
	s.ClientSecretEnv, s.TLSCertFile, s.TLSKeyFile = "", cert, key
	if errs := s.Validate(dir); len(errs) > 0 {
		t.Fatal(errs)
	}
	in, err := NewIntrospector(s, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Trust the test server's certificate (the system roots do not).
	roots := x509.NewCertPool()
	roots.AddCert(ep.Certificate())
	in.client.Transport.(*http.Transport).TLSClientConfig.RootCAs = roots
	if id, err := in.Introspect(context.Background(), "opaque-alice"); err != nil || id.Subject != "alice" {
		t.Fatalf("mTLS: %+v %v", id, err)
	}
}

func TestIntrospectionSettings(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*IntrospectionSettings)
		want string
	}{
		{func(s *IntrospectionSettings) { s.URL = "http://idp.example/introspect" }, "url: must use https"},
		{func(s *IntrospectionSettings) { s.ClientID = "" }, "client_id: required"},
		{func(s *IntrospectionSettings) { s.ClientSecretEnv = "" }, "client authentication: set"},
		{func(s *IntrospectionSettings) { s.TLSCertFile = "c.pem" }, "client authentication: set"},
		{func(s *IntrospectionSettings) { s.CacheTTL = 2 * time.Hour }, "cache_ttl: must be between"},
	} {
		s := introspectionSettings("https://idp.example/introspect")
		t.Setenv("MG_TEST_INTROSPECTION_SECRET", "s3cret")
		tc.mod(&s)
		var got []string
		for _, e := range s.Validate("") {
			got = append(got, e.Error())
		}
		if j := strings.Join(got, "\n"); !strings.Contains(j, tc.want) {
			t.Errorf("%q, want %q", j, tc.want)
		}
	}
}

// BenchmarkIntrospectCached is the cost of an opaque token whose active
// result is cached: no call to the endpoint.
func BenchmarkIntrospectCached(b *testing.B) {
	b.Setenv("MG_TEST_INTROSPECTION_SECRET", "s3cret")
	ep := &introspectionEndpoint{tokens: map[string]map[string]any{}, status: 200}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ep.hits.Add(1)
		w.Write([]byte(`{"active":true,"sub":"alice","scope":"chat-user","aud":"models"}`))
	}))
	defer srv.Close()
	in, err := NewIntrospector(introspectionSettings(srv.URL), "", Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := in.Introspect(ctx, "opaque-alice-0001"); err != nil {
			b.Fatal(err)
		}
	}
	if ep.hits.Load() != 1 {
		b.Fatalf("%d endpoint calls", ep.hits.Load())
	}
}
