package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Limits checked by validate.
const (
	minMessageBytes    = 64 << 10
	maxMessageBytes    = 256 << 20
	minCredentialBytes = 256
	maxCredentialBytes = 64 << 10
	maxLeeway          = 5 * time.Minute
	minPolicyTimeout   = time.Millisecond
	maxPolicyTimeout   = 10 * time.Second
)

// algorithm reports whether alg is an accepted JWS algorithm and, for HMAC,
// the shortest secret it takes (0 for public-key algorithms).
func algorithm(alg string) (minSecret int, ok bool) {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA":
		return 0, true
	case "HS256":
		return MinSecretBytes, true
	case "HS384":
		return 48, true
	case "HS512":
		return 64, true
	}
	return 0, false
}

const algorithmList = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, HS256, HS384, HS512"

// regoRef is a Rego reference into data: data.a.b or data["a-b"].c.
var regoRef = regexp.MustCompile(`^data(\.[A-Za-z_][A-Za-z0-9_]*|\["(?:[^"\\]|\\.)*"\])+$`)

// reservedHeader reports whether name must not be an identity header:
// setting it would replace the caller's credentials or break the framing of
// the upstream request.
func reservedHeader(name string) bool {
	switch name {
	case "authorization", "proxy-authorization", "cookie", "host",
		"connection", "content-length", "content-type", "keep-alive",
		"te", "trailer", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// validator collects every problem so that one start shows them all.
type validator struct {
	c    *Config
	errs []error
}

func (v *validator) fail(path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Path: path, Err: fmt.Errorf(format, args...)})
}

// validate checks the defaulted configuration; the errors are FieldErrors.
func (c *Config) validate() []error {
	v := &validator{c: c}
	v.server(&c.Server)
	v.authentication(&c.Authentication)
	v.authorization(&c.Authorization)
	v.models(c)
	v.identityHeaders(&c.IdentityHeaders, c.Authentication.APIKeys.Header)
	v.audit(&c.Audit)
	v.admission(c)
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "text")
	return v.errs
}

func (v *validator) server(s *Server) {
	v.address("server.grpc_address", s.GRPCAddress)
	if s.AdminAddress != "off" {
		v.address("server.admin_address", s.AdminAddress)
		if s.AdminAddress == s.GRPCAddress && !strings.HasSuffix(s.AdminAddress, ":0") {
			v.fail("server.admin_address", "same address as server.grpc_address")
		}
	}
	v.intRange("server.max_message_bytes", s.MaxMessageBytes, minMessageBytes, maxMessageBytes)
	v.positive("server.shutdown_grace", s.ShutdownGrace)

	t := s.TLS
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		v.fail("server.tls.key_file", "required with cert_file")
	case t.CertFile == "" && t.KeyFile != "":
		v.fail("server.tls.cert_file", "required with key_file")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		v.fail("server.tls.client_ca_file", "requires cert_file and key_file: client certificates are checked only over TLS")
	}
	v.file("server.tls.cert_file", t.CertFile)
	v.file("server.tls.key_file", t.KeyFile)
	v.file("server.tls.client_ca_file", t.ClientCAFile)
}

// maxAdmissionWait keeps a shed request's answer quick.
const maxAdmissionWait = time.Second

func (v *validator) admission(c *Config) {
	a := c.Admission
	// A message being read counts as a whole server.max_message_bytes (an
	// invalid one is reported on its own).
	v.intRange("admission.max_inflight_body_bytes", a.MaxInflightBodyBytes, min(max(c.Server.MaxMessageBytes, minMessageBytes), maxMessageBytes), 1<<40)
	v.intRange("admission.max_concurrent_checks", a.MaxConcurrentChecks, 0, 1<<20)
	if a.MaxWait < 0 || a.MaxWait > maxAdmissionWait {
		v.fail("admission.max_wait", "must be between 0s and %v, got %v", maxAdmissionWait, a.MaxWait)
	}
}

func (v *validator) authentication(a *Authentication) {
	v.intRange("authentication.max_credential_bytes", a.MaxCredentialBytes, minCredentialBytes, maxCredentialBytes)
	if len(a.JWT.Issuers) == 0 && a.APIKeys.File == "" && !a.AllowAnonymous {
		v.fail("authentication", "no authentication method: configure jwt.issuers or api_keys.file, or set allow_anonymous: true")
	}
	seen := make(map[string]int)
	for i := range a.JWT.Issuers {
		v.issuer(fmt.Sprintf("authentication.jwt.issuers[%d]", i), i, &a.JWT.Issuers[i], seen)
	}

	k := a.APIKeys
	v.file("authentication.api_keys.file", k.File)
	switch {
	case !isToken(k.Header):
		v.fail("authentication.api_keys.header", "%q is not a valid HTTP header name", k.Header)
	case k.Header == "authorization":
		v.fail("authentication.api_keys.header", "must not be authorization: keys sent as \"Authorization: Bearer\" are accepted with bearer: true")
	}
}

func (v *validator) issuer(p string, i int, iss *Issuer, seen map[string]int) {
	switch first, dup := seen[iss.Issuer]; {
	case iss.Issuer == "":
		v.fail(p+".issuer", "required: the exact \"iss\" of the tokens")
	case dup:
		v.fail(p+".issuer", "duplicate issuer %q (also issuers[%d]): tokens are routed by issuer", iss.Issuer, first)
	default:
		seen[iss.Issuer] = i
	}

	if len(iss.Audiences) == 0 {
		v.fail(p+".audiences", "at least one audience is required")
	}
	for j, aud := range iss.Audiences {
		if aud == "" {
			v.fail(fmt.Sprintf("%s.audiences[%d]", p, j), "empty audience")
		}
	}

	// hmac and public: which kinds of algorithm the issuer allows; minSecret:
	// the secret length its strongest HMAC algorithm needs.
	var hmac, public string
	minSecret := 0
	if len(iss.Algorithms) == 0 {
		v.fail(p+".algorithms", "at least one algorithm is required, e.g. [RS256]")
	}
	for j, alg := range iss.Algorithms {
		ap := fmt.Sprintf("%s.algorithms[%d]", p, j)
		need, ok := algorithm(alg)
		switch {
		case strings.EqualFold(alg, "none"):
			v.fail(ap, "%q is never accepted: it means an unsigned token that anyone can forge", alg)
		case !ok:
			v.fail(ap, "unsupported algorithm %q; use one of %s", alg, algorithmList)
		case need > 0:
			hmac = alg
			minSecret = max(minSecret, need)
		default:
			public = alg
		}
	}
	if hmac != "" && public != "" {
		v.fail(p+".algorithms", "%s and %s cannot be mixed in one issuer: a public key must never verify an HMAC token", hmac, public)
		hmac, public = "", "" // no further advice from a mix
	}

	switch hasKeys := len(iss.Keys) > 0; {
	case iss.JWKSURL != "" && hasKeys:
		v.fail(p+".jwks_url", "jwks_url and keys are exclusive: set one")
	case iss.JWKSURL == "" && !hasKeys:
		v.fail(p, "one of jwks_url or keys is required")
	}
	if iss.JWKSURL != "" {
		v.jwksURL(p+".jwks_url", iss.JWKSURL)
		if hmac != "" {
			v.fail(p+".jwks_url", "%s needs static secret keys (keys with secret_file or secret_env), never a JWKS: its keys are public", hmac)
		}
	}
	v.positive(p+".jwks_refresh_interval", iss.JWKSRefreshInterval)
	v.positive(p+".jwks_unknown_kid_interval", iss.JWKSUnknownKIDInterval)
	v.positive(p+".jwks_fetch_timeout", iss.JWKSFetchTimeout)
	if iss.Leeway < 0 || iss.Leeway > maxLeeway {
		v.fail(p+".leeway", "must be between 0s and %v, got %v", maxLeeway, iss.Leeway)
	}

	kids := make(map[string]int)
	for j, k := range iss.Keys {
		kp := fmt.Sprintf("%s.keys[%d]", p, j)
		if k.KID != "" {
			if first, dup := kids[k.KID]; dup {
				v.fail(kp+".kid", "duplicate kid %q (also keys[%d])", k.KID, first)
			}
			kids[k.KID] = j
		}
		v.staticKey(kp, k, hmac, public, minSecret)
	}

	v.claimPath(p+".claims.subject", iss.Claims.Subject)
	for j, r := range iss.Claims.Roles {
		v.claimPath(fmt.Sprintf("%s.claims.roles[%d]", p, j), r)
	}
}

// staticKey checks that k has one source, that it suits the issuer's
// algorithms (hmac or public names one of them, if any), and that it can be
// read and, for a secret, is long enough.
func (v *validator) staticKey(p string, k StaticKey, hmac, public string, minSecret int) {
	src := k.sources()
	switch len(src) {
	case 0:
		v.fail(p, "one of pem_file, pem_env, secret_file or secret_env is required")
		return
	case 1:
	default:
		v.fail(p, "%s are exclusive: set exactly one source", strings.Join(src, " and "))
		return
	}
	sp := p + "." + src[0]
	switch {
	case k.IsSecret() && public != "":
		v.fail(sp, "an HMAC secret cannot verify %s: use pem_file or pem_env", public)
		return
	case !k.IsSecret() && hmac != "":
		v.fail(sp, "%s needs secret_file or secret_env: a PEM key is public, and HMAC with it would let anyone sign", hmac)
		return
	}
	data, err := v.c.ReadKey(k)
	if err != nil {
		v.fail(sp, "%v", err)
		return
	}
	if need := max(minSecret, MinSecretBytes); k.IsSecret() && len(data) < need {
		v.fail(sp, "weak secret: %d bytes, need at least %d", len(data), need)
	}
}

func (v *validator) jwksURL(p, raw string) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		v.fail(p, "invalid URL: %v", err)
	case u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		v.fail(p, "must be an absolute https URL, got %q", raw)
	case u.User != nil:
		v.fail(p, "must not carry credentials (user:password@): secrets are never written in the configuration")
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		v.fail(p, "must use https: keys fetched over plain http can be replaced in transit (http is allowed for loopback hosts only)")
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// claimPath checks a claim name, possibly dotted (realm_access.roles).
func (v *validator) claimPath(p, claim string) {
	if claim == "" || slices.Contains(strings.Split(claim, "."), "") {
		v.fail(p, "invalid claim name %q: want a name or a dotted path such as realm_access.roles", claim)
	}
}

func (v *validator) authorization(a *Authorization) {
	if a.PolicyDir == "" {
		v.fail("authorization.policy_dir", "required: the directory holding the .rego policies")
	} else if st, err := os.Stat(v.c.Path(a.PolicyDir)); err != nil {
		v.fail("authorization.policy_dir", "%v", err)
	} else if !st.IsDir() {
		v.fail("authorization.policy_dir", "%s is not a directory", v.c.Path(a.PolicyDir))
	}
	if !regoRef.MatchString(a.Query) {
		v.fail("authorization.query", "%q is not a Rego reference starting with data., such as data.modelguard.authz.allow", a.Query)
	}
	if a.Timeout < minPolicyTimeout || a.Timeout > maxPolicyTimeout {
		v.fail("authorization.timeout", "must be between %v and %v, got %v", minPolicyTimeout, maxPolicyTimeout, a.Timeout)
	}
}

// pathTemplate matches a path template: literal segments and the
// placeholders {model} and {version}, as in /v2/models/{model}/infer or
// /v1/models/{model}:predict.
var pathTemplate = regexp.MustCompile(`^(/([A-Za-z0-9._~:@!$&'()*+,;=-]|\{model\}|\{version\})*)+$`)

func (v *validator) models(c *Config) {
	v.intRange("request_body.max_bytes", c.RequestBody.MaxBytes, 1, c.Server.MaxMessageBytes)
	v.intRange("request_body.max_depth", c.RequestBody.MaxDepth, 2, 1000)
	if c.UnknownModelStatus != 403 && c.UnknownModelStatus != 404 {
		v.fail("unknown_model_status", "must be 403 or 404, got %d", c.UnknownModelStatus)
	}
	seen := map[string]int{}
	for i, m := range c.Models {
		p := "models[" + strconv.Itoa(i) + "]"
		if m.Name == "" {
			v.fail(p+".name", "required")
		}
		v.oneOf(p+".operation", m.Operation, "chat", "completion", "embeddings", "infer", "predict", "custom")
		if m.Operation == "custom" && len(m.Paths) == 0 {
			v.fail(p+".paths", "required for operation custom")
		}
		if m.Operation == "custom" && m.Schema == "" {
			v.fail(p+".schema", "required for operation custom: a JSON Schema file")
		}
		for j, t := range m.Paths {
			if !pathTemplate.MatchString(t) || strings.Count(t, "{model}") > 1 {
				v.fail(p+".paths["+strconv.Itoa(j)+"]", "%q is not a path template such as /v2/models/{model}/infer", t)
			}
		}
		for _, f := range []struct {
			key string
			n   int
		}{{"max_body_bytes", m.Limits.MaxBodyBytes}, {"max_prompt_chars", m.Limits.MaxPromptChars}, {"max_tokens", m.Limits.MaxTokens}, {"max_messages", m.Limits.MaxMessages}} {
			if f.n < 0 {
				v.fail(p+".limits."+f.key, "must not be negative")
			}
		}
		if m.Limits.MaxBodyBytes > c.Server.MaxMessageBytes {
			v.fail(p+".limits.max_body_bytes", "larger than server.max_message_bytes (%d): such bodies could never arrive", c.Server.MaxMessageBytes)
		}
		key := m.Operation + "\x00" + m.Name + "\x00" + strings.Join(m.Paths, "\x00")
		if first, dup := seen[key]; dup && m.Name != "" {
			v.fail(p+".name", "model %q is already listed at models[%d]", m.Name, first)
		}
		seen[key] = i
	}
}

func (v *validator) identityHeaders(h *IdentityHeaders, apiKeyHeader string) {
	seen := make(map[string]string)
	for _, f := range []struct{ key, name string }{
		{"subject", h.Subject}, {"roles", h.Roles}, {"auth_method", h.AuthMethod},
		{"key_id", h.KeyID}, {"decision_id", h.DecisionID},
	} {
		p := "identity_headers." + f.key
		switch first, dup := seen[f.name]; {
		case f.name == "": // disabled
		case !isToken(f.name):
			v.fail(p, "%q is not a valid HTTP header name", f.name)
		case reservedHeader(f.name):
			v.fail(p, "%s is reserved: setting it would change the request itself", f.name)
		case f.name == apiKeyHeader:
			v.fail(p, "same header as authentication.api_keys.header")
		case dup:
			v.fail(p, "same header as identity_headers.%s", first)
		default:
			seen[f.name] = f.key
		}
	}
}

// address checks a host:port listen address; port 0 picks a free port.
func (v *validator) address(p, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		v.fail(p, "invalid address %q: want host:port such as 127.0.0.1:9191", addr)
	}
}

// file checks that an optional file exists and can be read.
func (v *validator) file(p, name string) {
	if name == "" {
		return
	}
	path := v.c.Path(name)
	f, err := os.Open(path)
	if err != nil {
		v.fail(p, "%v", err)
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		v.fail(p, "%v", err)
	} else if st.IsDir() {
		v.fail(p, "%s is a directory, want a file", path)
	}
}

func (v *validator) intRange(p string, n, lo, hi int) {
	if n < lo || n > hi {
		v.fail(p, "must be between %d and %d, got %d", lo, hi, n)
	}
}

func (v *validator) positive(p string, d time.Duration) {
	if d <= 0 {
		v.fail(p, "must be positive, got %v", d)
	}
}

func (v *validator) oneOf(p, value string, allowed ...string) {
	if !slices.Contains(allowed, value) {
		v.fail(p, "%q is not one of %s", value, strings.Join(allowed, ", "))
	}
}

// isToken reports whether s is a non-empty lower-case HTTP token (RFC 9110
// 5.6.2), the form header names take in Envoy and HTTP/2.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
