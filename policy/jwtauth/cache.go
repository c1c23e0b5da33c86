package jwtauth

import (
	"crypto/sha256"
	"time"

	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/modelguard/modelguard/policy/field"
)

// CacheSettings configure the verified-token cache: authentication.jwt.cache.
// It spares repeat callers the signature check (an RS256 verification is
// most of a JWT's cost), as Envoy's jwt_authn filter does.
//
// An entry is the identity of a token that passed every check, keyed on the
// SHA-256 of the token (the token itself is not kept). It is used only
// while the time checks still hold exactly as they did (before exp plus
// leeway, not before nbf or iat minus leeway: an expired token is refused
// at once), and only while its issuer's key set is the one that verified
// it: a JWKS refresh (rotation, revocation) makes every entry of that
// issuer unusable. A token that fails is never cached, and the least
// recently used entry goes when the cache is full.
type CacheSettings struct {
	// Enabled turns the cache on. Default true.
	Enabled bool `yaml:"enabled"`
	// Size is the most tokens kept. Default 10000, at most 1000000.
	Size int `yaml:"size"`
}

// Defaults and limits of CacheSettings.
const (
	DefaultCacheSize = 10000
	MaxCacheSize     = 1_000_000
)

// DefaultCache returns the cache settings a configuration gets for every
// key it does not set.
func DefaultCache() CacheSettings {
	return CacheSettings{Enabled: true, Size: DefaultCacheSize}
}

func (c CacheSettings) validate() []error {
	var errs field.List
	if c.Enabled {
		field.Range(&errs, "size", c.Size, 1, MaxCacheSize)
	}
	return errs
}

// tokenCache maps the hash of verified tokens to their identity.
type tokenCache struct {
	lru    *lru.Cache[[sha256.Size]byte, *cachedToken]
	report func(hit bool)
	now    func() time.Time
}

// cachedToken is a verified token's identity and the conditions under which
// verifying it again would succeed again.
type cachedToken struct {
	id     *Identity
	is     *issuer
	keys   *keySet   // the issuer's key set that verified it
	from   time.Time // not before: max(nbf, iat) - leeway, zero if neither
	before time.Time // exp + leeway
}

func newTokenCache(c CacheSettings, now func() time.Time, report func(hit bool)) (*tokenCache, error) {
	if !c.Enabled {
		return nil, nil
	}
	l, err := lru.New[[sha256.Size]byte, *cachedToken](c.Size)
	if err != nil {
		return nil, err
	}
	if report == nil {
		report = func(bool) {}
	}
	return &tokenCache{lru: l, report: report, now: now}, nil
}

// get returns the identity cached for the token hashed to h, if the entry
// may still be used now.
func (c *tokenCache) get(h [sha256.Size]byte) *Identity {
	if e, ok := c.lru.Get(h); ok {
		if e.is.currentKeys() != e.keys {
			c.lru.Remove(h) // verified under keys no longer in force
		} else if now := c.now(); now.Before(e.before) && !now.Before(e.from) {
			c.report(true)
			return e.id
		}
	}
	c.report(false)
	return nil
}

// put caches id for the token hashed to h, verified by is under keys with
// claims. The time bounds repeat golang-jwt's checks (validator.go): valid
// while now < exp+leeway, now >= nbf-leeway and now >= iat-leeway.
func (c *tokenCache) put(h [sha256.Size]byte, is *issuer, keys *keySet, claims jwt.MapClaims, id *Identity) {
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return // exp is required; verification refused such a token already
	}
	e := &cachedToken{id: id, is: is, keys: keys, before: exp.Add(is.leeway)}
	for _, get := range []func() (*jwt.NumericDate, error){claims.GetNotBefore, claims.GetIssuedAt} {
		t, err := get()
		if err != nil {
			return
		}
		if t != nil && t.Add(-is.leeway).After(e.from) {
			e.from = t.Add(-is.leeway)
		}
	}
	c.lru.Add(h, e)
}
