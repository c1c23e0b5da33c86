package jwtauth

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/secret"
)

// Settings configure a Verifier: the authentication.jwt section.
type Settings struct {
	Issuers []IssuerSettings `yaml:"issuers"`
	// Cache keeps verified tokens; see CacheSettings.
	Cache CacheSettings `yaml:"cache"`
}

// IssuerSettings is one trusted token issuer. DefaultIssuer gives the value
// every absent key takes.
type IssuerSettings struct {
	// Issuer is the exact "iss" value. Tokens are routed to an issuer by it.
	Issuer string `yaml:"issuer"`
	// Audiences: the token's "aud" must contain at least one. Required.
	Audiences []string `yaml:"audiences"`
	// Algorithms allowed for this issuer, e.g. [RS256]. Required unless
	// Discovery is on (see there); one of
	// RS256/384/512, PS256/384/512, ES256/384/512, EdDSA (public keys from
	// the JWKS or PEM keys) or HS256/384/512 (static secret keys only: a
	// JWKS or PEM key is public, so HMAC with it would let anyone sign).
	// "none" is always refused.
	Algorithms []string `yaml:"algorithms"`
	// JWKSURL is fetched and refreshed; exclusive with Keys. Must be https
	// (http only for loopback hosts, for tests).
	JWKSURL string `yaml:"jwks_url"`
	// Discovery finds the JWKS from the issuer's OpenID Connect discovery
	// document (<issuer>/.well-known/openid-configuration), whose issuer
	// must equal Issuer exactly; re-read every JWKSRefreshInterval, the
	// last good document and keys staying in force while the provider is
	// down. Exclusive with JWKSURL and Keys; Issuer must then be an https
	// URL. Without Algorithms, the document's
	// id_token_signing_alg_values_supported are accepted (public-key
	// algorithms only: never none or HMAC); a document advertising none
	// of them is refused, the last good one staying in force. Configured
	// Algorithms win, and suit access tokens, which providers may sign
	// differently from ID tokens.
	Discovery bool `yaml:"discovery"`
	// JWKSRefreshInterval, default 1h.
	JWKSRefreshInterval time.Duration `yaml:"jwks_refresh_interval"`
	// JWKSUnknownKIDInterval limits refreshes triggered by an unknown kid; default 5m.
	JWKSUnknownKIDInterval time.Duration `yaml:"jwks_unknown_kid_interval"`
	// JWKSFetchTimeout bounds one JWKS HTTP request; default 5s.
	JWKSFetchTimeout time.Duration `yaml:"jwks_fetch_timeout"`
	// Keys are static verification keys; exclusive with JWKSURL. They are
	// read by Validate to check them, and again by New.
	Keys []StaticKey `yaml:"keys"`
	// Leeway tolerated on exp, nbf and iat. Default 30s, at most 5m.
	Leeway time.Duration `yaml:"leeway"`
	// Typ, when set, must equal the token's "typ" header (case-insensitive), e.g. "at+jwt".
	Typ string `yaml:"typ"`
	// Claims maps token claims to the identity.
	Claims ClaimMapping `yaml:"claims"`
	// ReplayClaim, when set (jti, or the nonce claim the issuer uses),
	// makes tokens one-time: the claim is required, and a token whose
	// value was seen before within the token's lifetime is refused
	// (jwt_replayed), on every request, cached or not.
	ReplayClaim string `yaml:"replay_claim"`
}

// StaticKey is one verification key from a file or environment variable.
// Exactly one source must be set. PEM sources hold a public key (PKIX or
// PKCS#1) or certificate; secret sources hold an HMAC secret of >= 32 bytes
// (one trailing newline is not part of it). Secrets are never written inline
// in the configuration.
type StaticKey struct {
	KID        string `yaml:"kid"`         // optional; when set, only tokens with this kid use the key (unique per issuer)
	PEMFile    string `yaml:"pem_file"`    // path relative to the configuration's directory
	PEMEnv     string `yaml:"pem_env"`     // name of an environment variable holding the PEM
	SecretFile string `yaml:"secret_file"` // path relative to the configuration's directory
	SecretEnv  string `yaml:"secret_env"`  // name of an environment variable holding the secret
}

// ClaimMapping says which claims give the subject and roles.
type ClaimMapping struct {
	// Subject claim name, default "sub". Dotted paths reach nested claims.
	Subject string `yaml:"subject"`
	// Roles lists claims whose values become roles: a string array, or a
	// space-separated string such as "scope". Dotted paths reach nested
	// claims (realm_access.roles). Default [roles].
	Roles []string `yaml:"roles"`
}

// Defaults and limits of IssuerSettings.
const (
	DefaultLeeway                 = 30 * time.Second
	MaxLeeway                     = 5 * time.Minute
	DefaultJWKSRefreshInterval    = time.Hour
	DefaultJWKSUnknownKIDInterval = 5 * time.Minute
	DefaultJWKSFetchTimeout       = 5 * time.Second
)

// DefaultIssuer returns the issuer settings an issuer gets for every key it
// does not set.
func DefaultIssuer() IssuerSettings {
	return IssuerSettings{
		Leeway:                 DefaultLeeway,
		JWKSRefreshInterval:    DefaultJWKSRefreshInterval,
		JWKSUnknownKIDInterval: DefaultJWKSUnknownKIDInterval,
		JWKSFetchTimeout:       DefaultJWKSFetchTimeout,
		Claims:                 ClaimMapping{Subject: "sub", Roles: []string{"roles"}},
	}
}

// isSecret reports whether k is an HMAC secret rather than a PEM key.
func (k StaticKey) isSecret() bool { return k.SecretFile != "" || k.SecretEnv != "" }

// sources lists the key names of k's non-empty sources.
func (k StaticKey) sources() []string {
	var set []string
	for _, s := range []struct{ key, value string }{
		{"pem_file", k.PEMFile}, {"pem_env", k.PEMEnv},
		{"secret_file", k.SecretFile}, {"secret_env", k.SecretEnv},
	} {
		if s.value != "" {
			set = append(set, s.key)
		}
	}
	return set
}

// read returns k's material from its single source (files resolve against
// baseDir): PEM text, or the HMAC secret without one trailing newline.
func (k StaticKey) read(baseDir string) ([]byte, error) {
	if len(k.sources()) != 1 {
		return nil, errors.New("a static key needs exactly one of pem_file, pem_env, secret_file or secret_env")
	}
	file := k.PEMFile + k.SecretFile // at most one is set
	if file != "" && !filepath.IsAbs(file) {
		file = filepath.Join(baseDir, file)
	}
	return secret.Read(file, k.PEMEnv+k.SecretEnv, k.isSecret())
}

// Validate checks s and reads its static keys (files relative to baseDir)
// to check that they can be read and that secrets are long enough; New
// parses them. The errors are *field.Error with paths relative to the
// section, such as "issuers[0].leeway", every problem at once.
func (s Settings) Validate(baseDir string) []error {
	var errs field.List
	seen := make(map[string]int)
	for i := range s.Issuers {
		p := "issuers[" + strconv.Itoa(i) + "]"
		iss := &s.Issuers[i]
		switch first, dup := seen[iss.Issuer]; {
		case iss.Issuer == "":
			errs.Addf(p+".issuer", "required: the exact \"iss\" of the tokens")
		case dup:
			errs.Addf(p+".issuer", "duplicate issuer %q (also issuers[%d]): tokens are routed by issuer", iss.Issuer, first)
		default:
			seen[iss.Issuer] = i
		}
		errs = append(errs, field.Within(p, iss.validate(baseDir))...)
	}
	errs = append(errs, field.Within("cache", s.Cache.validate())...)
	return errs
}

// validate checks one issuer; paths are relative to it.
func (iss *IssuerSettings) validate(baseDir string) []error {
	var errs field.List
	if len(iss.Audiences) == 0 {
		errs.Addf("audiences", "at least one audience is required")
	}
	for j, aud := range iss.Audiences {
		if aud == "" {
			errs.Addf(fmt.Sprintf("audiences[%d]", j), "empty audience")
		}
	}

	// hmac and public: which kinds of algorithm the issuer allows; minSecret:
	// the secret length its strongest HMAC algorithm needs.
	var hmac, public string
	minSecret := 0
	if len(iss.Algorithms) == 0 && !iss.Discovery {
		errs.Addf("algorithms", "at least one algorithm is required, e.g. [RS256] (optional only with discovery: true)")
	}
	for j, alg := range iss.Algorithms {
		ap := fmt.Sprintf("algorithms[%d]", j)
		a, ok := lookupAlg(alg)
		switch {
		case strings.EqualFold(alg, "none"):
			errs.Addf(ap, "%q is never accepted: it means an unsigned token that anyone can forge", alg)
		case !ok:
			errs.Addf(ap, "unsupported algorithm %q; use one of %s", alg, supportedAlgs)
		case a.family == famHMAC:
			hmac = alg
			minSecret = max(minSecret, a.minSecret)
		default:
			public = alg
		}
	}
	if hmac != "" && public != "" {
		errs.Addf("algorithms", "%s and %s cannot be mixed in one issuer: a public key must never verify an HMAC token", hmac, public)
		hmac, public = "", "" // no further advice from a mix
	}

	switch hasKeys := len(iss.Keys) > 0; {
	case iss.Discovery && (iss.JWKSURL != "" || hasKeys):
		errs.Addf("discovery", "discovery, jwks_url and keys are exclusive: set one")
	case iss.JWKSURL != "" && hasKeys:
		errs.Addf("jwks_url", "jwks_url and keys are exclusive: set one")
	case iss.JWKSURL == "" && !hasKeys && !iss.Discovery:
		errs.Addf("", "one of jwks_url, keys or discovery: true is required")
	}
	if iss.Discovery {
		if err := field.CheckHTTPSURL(iss.Issuer, "secrets are never written in the configuration",
			"a discovery document fetched over plain http can be replaced in transit"); err != nil {
			errs = append(errs, &field.Error{Path: "issuer", Err: fmt.Errorf("with discovery: %w", err)})
		}
		if hmac != "" {
			errs.Addf("discovery", "%s needs static secret keys, never a discovered JWKS: its keys are public", hmac)
		}
	}
	if iss.JWKSURL != "" {
		if err := field.CheckHTTPSURL(iss.JWKSURL, "secrets are never written in the configuration",
			"keys fetched over plain http can be replaced in transit"); err != nil {
			errs = append(errs, &field.Error{Path: "jwks_url", Err: err})
		}
		if hmac != "" {
			errs.Addf("jwks_url", "%s needs static secret keys (keys with secret_file or secret_env), never a JWKS: its keys are public", hmac)
		}
	}
	for _, d := range []struct {
		key string
		d   time.Duration
	}{
		{"jwks_refresh_interval", iss.JWKSRefreshInterval},
		{"jwks_unknown_kid_interval", iss.JWKSUnknownKIDInterval},
		{"jwks_fetch_timeout", iss.JWKSFetchTimeout},
	} {
		if d.d <= 0 {
			errs.Addf(d.key, "must be positive, got %v", d.d)
		}
	}
	field.Range(&errs, "leeway", iss.Leeway, 0, MaxLeeway)

	kids := make(map[string]int)
	for j, k := range iss.Keys {
		kp := fmt.Sprintf("keys[%d]", j)
		if k.KID != "" {
			if first, dup := kids[k.KID]; dup {
				errs.Addf(kp+".kid", "duplicate kid %q (also keys[%d])", k.KID, first)
			}
			kids[k.KID] = j
		}
		if err := k.validate(baseDir, hmac, public, minSecret); err != nil {
			errs = append(errs, field.Under(kp, err))
		}
	}

	if iss.ReplayClaim != "" {
		checkClaim(&errs, "replay_claim", iss.ReplayClaim)
	}
	checkClaim(&errs, "claims.subject", iss.Claims.Subject)
	for j, r := range iss.Claims.Roles {
		checkClaim(&errs, fmt.Sprintf("claims.roles[%d]", j), r)
	}
	return errs
}

// validate checks that k has one source, that it suits the issuer's
// algorithms (hmac or public names one of them, if any), and that it can be
// read and, for a secret, is long enough.
func (k StaticKey) validate(baseDir, hmac, public string, minSecret int) *field.Error {
	src := k.sources()
	switch len(src) {
	case 0:
		return field.Errorf("", "one of pem_file, pem_env, secret_file or secret_env is required")
	case 1:
	default:
		return field.Errorf("", "%s are exclusive: set exactly one source", strings.Join(src, " and "))
	}
	switch {
	case k.isSecret() && public != "":
		return field.Errorf(src[0], "an HMAC secret cannot verify %s: use pem_file or pem_env", public)
	case !k.isSecret() && hmac != "":
		return field.Errorf(src[0], "%s needs secret_file or secret_env: a PEM key is public, and HMAC with it would let anyone sign", hmac)
	}
	data, err := k.read(baseDir)
	if err != nil {
		return &field.Error{Path: src[0], Err: err}
	}
	if need := max(minSecret, minSecretBytes); k.isSecret() && len(data) < need {
		return field.Errorf(src[0], "weak secret: %d bytes, need at least %d", len(data), need)
	}
	return nil
}

// checkClaim checks a claim name, possibly dotted (realm_access.roles).
func checkClaim(errs *field.List, p, claim string) {
	if claim == "" || slices.Contains(strings.Split(claim, "."), "") {
		errs.Addf(p, "invalid claim name %q: want a name or a dotted path such as realm_access.roles", claim)
	}
}
