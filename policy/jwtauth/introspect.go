package jwtauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/secret"
)

// IntrospectionSettings configure OAuth 2.0 token introspection (RFC
// 7662) for opaque bearer tokens: authentication.introspection. No URL:
// off.
type IntrospectionSettings struct {
	// URL is the introspection endpoint (https; http for loopback hosts,
	// for tests).
	URL string `yaml:"url"`
	// ClientID authenticates modelguard to the endpoint, with a secret
	// (client_secret_basic) or a TLS client certificate (RFC 8705).
	ClientID string `yaml:"client_id"`
	// ClientSecretFile / ClientSecretEnv hold the secret; exclusive.
	ClientSecretFile string `yaml:"client_secret_file"`
	ClientSecretEnv  string `yaml:"client_secret_env"`
	// TLSCertFile and TLSKeyFile are the client certificate (mTLS).
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// Issuer, when set, must equal the response's "iss".
	Issuer string `yaml:"issuer"`
	// Audiences, when set: the response's "aud" must contain one.
	Audiences []string `yaml:"audiences"`
	// Timeout bounds one call; default 2s.
	Timeout time.Duration `yaml:"timeout"`
	// CacheTTL bounds how long an active result is reused (never past
	// the token's exp); default 1m, 0s to 1h (0s: no cache).
	CacheTTL time.Duration `yaml:"cache_ttl"`
	// CacheSize bounds the results kept; default 10000.
	CacheSize int `yaml:"cache_size"`
	// Claims maps the response to the caller, as for JWTs; default
	// subject sub, roles [scope].
	Claims ClaimMapping `yaml:"claims"`
}

// DefaultIntrospection returns the value every absent key takes.
func DefaultIntrospection() IntrospectionSettings {
	return IntrospectionSettings{Timeout: 2 * time.Second, CacheTTL: time.Minute, CacheSize: 10_000,
		Claims: ClaimMapping{Subject: "sub", Roles: []string{"scope"}}}
}

// Enabled reports whether introspection is configured.
func (s IntrospectionSettings) Enabled() bool { return s.URL != "" }

// Validate checks s (files relative to baseDir). The errors are
// *field.Error relative to the section.
func (s IntrospectionSettings) Validate(baseDir string) []error {
	if !s.Enabled() {
		return nil
	}
	var errs field.List
	if err := field.CheckHTTPSURL(s.URL, "use client_secret_file or client_secret_env", "tokens sent over plain http can be read in transit"); err != nil {
		errs = append(errs, &field.Error{Path: "url", Err: err})
	}
	if s.ClientID == "" {
		errs.Addf("client_id", "required with url")
	}
	secretSet := s.ClientSecretFile != "" || s.ClientSecretEnv != ""
	mtls := s.TLSCertFile != "" || s.TLSKeyFile != ""
	switch {
	case s.ClientSecretFile != "" && s.ClientSecretEnv != "":
		errs.Addf("client_secret_file", "client_secret_file and client_secret_env are exclusive")
	case secretSet == mtls:
		errs.Addf("", "client authentication: set client_secret_file/client_secret_env, or tls_cert_file and tls_key_file")
	case mtls && (s.TLSCertFile == "" || s.TLSKeyFile == ""):
		errs.Addf("tls_cert_file", "tls_cert_file and tls_key_file go together")
	case secretSet:
		if _, err := secret.Read(resolvePath(baseDir, s.ClientSecretFile), s.ClientSecretEnv, true); err != nil {
			errs.Addf("client_secret_file", "%v", err)
		}
	}
	field.Range(&errs, "timeout", s.Timeout, time.Millisecond, time.Minute)
	field.Range(&errs, "cache_ttl", s.CacheTTL, 0, time.Hour)
	field.Range(&errs, "cache_size", s.CacheSize, 1, 1_000_000)
	checkClaim(&errs, "claims.subject", s.Claims.Subject)
	for j, r := range s.Claims.Roles {
		checkClaim(&errs, fmt.Sprintf("claims.roles[%d]", j), r)
	}
	return errs
}

func resolvePath(baseDir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(baseDir, p)
}

// Reasons of introspection failures.
const (
	ReasonTokenInactive            = "token_inactive"
	ReasonIntrospectionUnavailable = "token_introspection_unavailable" // the endpoint cannot answer: 503
)

// Unavailable reports whether a failure reason means a dependency could
// not answer (503), not that the caller's credential is bad (401).
func Unavailable(reason string) bool {
	return reason == ReasonReplayUnavailable || reason == ReasonIntrospectionUnavailable
}

// Introspector checks opaque tokens at an RFC 7662 endpoint, caching
// active results. It is safe for concurrent use.
type Introspector struct {
	s       IntrospectionSettings
	client  *http.Client
	auth    string // Authorization header value, or "" with mTLS
	mapping mapping
	cache   *lru.Cache[[sha256.Size]byte, introspected] // nil: no cache
	now     func() time.Time
}

type introspected struct {
	id    *Identity
	until time.Time
}

// NewIntrospector builds an Introspector for validated settings.
func NewIntrospector(s IntrospectionSettings, baseDir string, opts Options) (*Introspector, error) {
	in := &Introspector{s: s, mapping: newMapping(s.Claims), now: opts.now}
	if in.now == nil {
		in.now = time.Now
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if s.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(resolvePath(baseDir, s.TLSCertFile), resolvePath(baseDir, s.TLSKeyFile))
		if err != nil {
			return nil, &field.Error{Path: "tls_cert_file", Err: err}
		}
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	} else {
		sec, err := secret.Read(resolvePath(baseDir, s.ClientSecretFile), s.ClientSecretEnv, true)
		if err != nil {
			return nil, &field.Error{Path: "client_secret_file", Err: err}
		}
		// RFC 6749 2.3.1: both parts form-encoded, then Basic.
		in.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(s.ClientID)+":"+url.QueryEscape(string(sec))))
	}
	in.client = &http.Client{Transport: tr, Timeout: s.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if s.CacheTTL > 0 {
		c, err := lru.New[[sha256.Size]byte, introspected](s.CacheSize)
		if err != nil {
			return nil, &field.Error{Path: "cache_size", Err: err}
		}
		in.cache = c
	}
	return in, nil
}

// maxIntrospectionBytes caps a response.
const maxIntrospectionBytes = 64 << 10

// Introspect returns the caller an opaque token stands for. Errors are
// *Error: ReasonTokenInactive (and the claim reasons) for the caller,
// ReasonIntrospectionUnavailable when the endpoint cannot answer.
func (in *Introspector) Introspect(ctx context.Context, token string) (*Identity, error) {
	h := sha256.Sum256([]byte(token))
	now := in.now()
	if in.cache != nil {
		if e, ok := in.cache.Get(h); ok && now.Before(e.until) {
			return e.id, nil
		}
	}
	claims, err := in.call(ctx, token)
	if err != nil {
		return nil, fail(ReasonIntrospectionUnavailable, err)
	}
	if active, _ := claims["active"].(bool); !active {
		return nil, fail(ReasonTokenInactive, errors.New("the endpoint says the token is not active"))
	}
	until := now.Add(in.s.CacheTTL)
	if exp, ok := claims["exp"].(json.Number); ok {
		sec, err := exp.Int64()
		if err != nil {
			return nil, fail(ReasonInvalidClaimType, fmt.Errorf("exp %q: %w", exp, err))
		}
		e := time.Unix(sec, 0)
		if !now.Before(e) {
			return nil, fail(ReasonExpired, fmt.Errorf("expired at %v", e))
		}
		if e.Before(until) {
			until = e
		}
	}
	if in.s.Issuer != "" && claims["iss"] != in.s.Issuer {
		return nil, fail(ReasonBadIssuer, fmt.Errorf("iss %v", claims["iss"]))
	}
	if len(in.s.Audiences) > 0 && !audienceMatches(claims["aud"], in.s.Audiences) {
		return nil, fail(ReasonBadAudience, fmt.Errorf("aud %v", claims["aud"]))
	}
	id, err := in.mapping.identity(claims, in.s.Issuer)
	if err != nil {
		return nil, err
	}
	if in.cache != nil {
		in.cache.Add(h, introspected{id: id, until: until})
	}
	return id, nil
}

func audienceMatches(aud any, want []string) bool {
	switch a := aud.(type) {
	case string:
		return slices.Contains(want, a)
	case []any:
		return slices.ContainsFunc(a, func(v any) bool { s, ok := v.(string); return ok && slices.Contains(want, s) })
	}
	return false
}

// call posts the token (RFC 7662 2.1) and decodes the response.
func (in *Introspector) call(ctx context.Context, token string) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, in.s.Timeout)
	defer cancel()
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	if in.auth == "" {
		form.Set("client_id", in.s.ClientID) // mTLS: the certificate authenticates, the id names the client
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.s.URL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("content-type", "application/x-www-form-urlencoded")
	req.Header.Set("accept", "application/json")
	if in.auth != "" {
		req.Header.Set("authorization", in.auth)
	}
	resp, err := in.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("introspection: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("introspection: HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIntrospectionBytes+1))
	if err != nil {
		return nil, fmt.Errorf("introspection: %w", err)
	}
	if len(body) > maxIntrospectionBytes {
		return nil, fmt.Errorf("introspection response exceeds %d bytes", maxIntrospectionBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, fmt.Errorf("introspection response is not a JSON object: %v", err)
	}
	return claims, nil
}
