package jwtauth

import (
	"errors"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

var (
	errUnknownKID = errors.New("no key with this kid")
	errNoKeyFits  = errors.New("no key for this algorithm")
	// errAlgNotInSet: the key set does not serve the algorithm (a
	// discovered issuer whose document stopped advertising it).
	errAlgNotInSet = errors.New("algorithm not allowed")
)

// verifyKey is one key of an issuer, checked once when loaded.
type verifyKey struct {
	kid string
	key any    // *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey or []byte, boxed once
	alg string // JWK "alg"; "" = any algorithm the key type fits
	// reject, when set, makes the key unusable (wrong "use", unsupported
	// type, too small); kept so a token naming it gets a clear reason.
	reject error
}

// fits says why k cannot verify a token of algorithm a, or nil.
func (k *verifyKey) fits(a algInfo) error {
	if k.reject != nil {
		return k.reject
	}
	if k.alg != "" && k.alg != a.name {
		return fmt.Errorf("key %q is for %s, the token uses %s", k.kid, k.alg, a.name)
	}
	return keyMismatch(a, k.key)
}

// keySet is an immutable snapshot of an issuer's keys, indexed so that a
// lookup on the request path does not allocate.
type keySet struct {
	algs  map[string]algInfo
	byKID map[string][]*verifyKey
	// noKID holds, per algorithm, what a token without "kid" is checked
	// against: a single key or a jwt.VerificationKeySet, boxed once.
	noKID map[string]any
	// anyKID holds, per algorithm, keys that tokens with any kid may use
	// (static keys configured without kid). Empty for JWKS.
	anyKID map[string]any
	usable int // keys that fit at least one allowed algorithm
}

// newKeySet indexes keys for the issuer's algorithms. Static keys without a
// kid serve every token (wild); JWKS keys serve kid-less tokens whatever
// their kid, and tokens with a kid only when it matches.
func newKeySet(algs map[string]algInfo, keys []*verifyKey, static bool) *keySet {
	ks := &keySet{
		algs:   algs,
		byKID:  make(map[string][]*verifyKey),
		noKID:  make(map[string]any),
		anyKID: make(map[string]any),
	}
	for _, k := range keys {
		if k.kid != "" {
			ks.byKID[k.kid] = append(ks.byKID[k.kid], k)
		}
		for _, a := range algs {
			if k.fits(a) == nil {
				ks.usable++
				break
			}
		}
	}
	for name, a := range algs {
		var forNoKID, forAnyKID []any
		for _, k := range keys {
			if k.fits(a) != nil {
				continue
			}
			switch {
			case !static:
				forNoKID = append(forNoKID, k.key)
			case k.kid == "":
				forNoKID = append(forNoKID, k.key)
				forAnyKID = append(forAnyKID, k.key)
			}
		}
		if v := boxKeys(forNoKID); v != nil {
			ks.noKID[name] = v
		}
		if v := boxKeys(forAnyKID); v != nil {
			ks.anyKID[name] = v
		}
	}
	return ks
}

func boxKeys(keys []any) any {
	switch len(keys) {
	case 0:
		return nil
	case 1:
		return keys[0]
	}
	set := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(keys))}
	for i, k := range keys {
		set.Keys[i] = k
	}
	return set
}

// lookup returns the key (or jwt.VerificationKeySet) to verify a token of
// algorithm alg with the given kid ("" = none). errUnknownKID and
// errNoKeyFits tell a caller that a refreshed set might help.
func (ks *keySet) lookup(alg, kid string) (any, error) {
	a, ok := ks.algs[alg]
	if !ok {
		return nil, errAlgNotInSet
	}
	if kid == "" {
		if k := ks.noKID[alg]; k != nil {
			return k, nil
		}
		return nil, errNoKeyFits
	}
	entries := ks.byKID[kid]
	if len(entries) == 0 {
		if k := ks.anyKID[alg]; k != nil {
			return k, nil
		}
		return nil, errUnknownKID
	}
	if len(entries) == 1 { // the usual case, without allocating
		if err := entries[0].fits(a); err != nil {
			return nil, err
		}
		return entries[0].key, nil
	}
	var (
		found    []any
		mismatch error
	)
	for _, k := range entries {
		if err := k.fits(a); err != nil {
			mismatch = err
			continue
		}
		found = append(found, k.key)
	}
	if len(found) == 0 {
		return nil, mismatch
	}
	return boxKeys(found), nil
}
