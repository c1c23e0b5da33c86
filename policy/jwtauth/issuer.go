package jwtauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/policy/field"
)

// maxHeaderParams bounds the header members we track for duplicates; real
// JWS headers have a handful.
const maxHeaderParams = 16

// issuer is one configured issuer with its prebuilt parser.
type issuer struct {
	name    string
	algs    map[string]algInfo
	leeway  time.Duration
	parser  *jwt.Parser
	typ     []byte // lower case, without "application/"; nil = not checked
	mapping        // claims to identity
	// replayClaim is the one-time claim (ReplayClaim); full "" = off.
	replayClaim claimPath
	static      *keySet     // static keys, or nil
	jwks        keySource   // JWKS (configured or discovered), or nil
	keyfunc     jwt.Keyfunc // static issuers: prebuilt, so Verify allocates no closure
}

// newIssuer builds an issuer from settings that Validate accepted; errors
// (a key that cannot be parsed or fits none of the algorithms) are
// *field.Error relative to the issuer.
func newIssuer(ctx context.Context, ic IssuerSettings, baseDir string, opts Options, client *http.Client) (*issuer, error) {
	is := &issuer{name: ic.Issuer, algs: make(map[string]algInfo, len(ic.Algorithms)), leeway: ic.Leeway}
	names := ic.Algorithms
	if ic.Discovery && len(names) == 0 {
		// The document says which algorithms are in force; the parser
		// admits every one a JWKS can serve and the discovered key set
		// refuses the others.
		for name := range publicAlgs(nil) {
			names = append(names, name)
		}
		slices.Sort(names)
	}
	methods := make([]string, 0, len(names))
	for _, name := range names {
		a, ok := lookupAlg(name)
		if !ok {
			return nil, field.Errorf("algorithms", "unsupported algorithm %q", name)
		}
		if _, dup := is.algs[name]; !dup {
			is.algs[name] = a
			methods = append(methods, name)
		}
	}
	if ic.Typ != "" {
		t := strings.ToLower(ic.Typ)
		is.typ = []byte(strings.TrimPrefix(t, "application/"))
	}
	is.mapping = newMapping(ic.Claims)
	if ic.ReplayClaim != "" {
		is.replayClaim = newClaimPath(ic.ReplayClaim)
	}

	popts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(ic.Issuer),
		jwt.WithAudience(ic.Audiences...), // any one of them (golang-jwt v5.3)
		jwt.WithLeeway(ic.Leeway),
		jwt.WithStrictDecoding(),
	}
	if opts.now != nil {
		popts = append(popts, jwt.WithTimeFunc(opts.now))
	}
	is.parser = jwt.NewParser(popts...)

	if ic.JWKSURL != "" || ic.Discovery {
		p := jwksParams{
			url: ic.JWKSURL, algs: is.algs, keyWait: opts.KeyWait, client: client,
			refreshInterval: ic.JWKSRefreshInterval, unknownKIDEvery: ic.JWKSUnknownKIDInterval, fetchTimeout: ic.JWKSFetchTimeout,
		}
		if ic.Discovery {
			is.jwks = newDiscovery(ctx, ic.Issuer, ic.Algorithms, p, opts.Logger, opts.OnJWKSRefresh)
			return is, nil
		}
		src, err := newJWKSSource(ctx, ic.Issuer, p, opts.Logger, opts.OnJWKSRefresh)
		if err != nil {
			return nil, &field.Error{Path: "jwks_url", Err: err}
		}
		is.jwks = src
		return is, nil
	}

	keys := make([]*verifyKey, 0, len(ic.Keys))
	for j, sk := range ic.Keys {
		kp := fmt.Sprintf("keys[%d]", j)
		key, err := loadStaticKey(sk, baseDir)
		if err != nil {
			return nil, field.Under(kp, err)
		}
		var why []string
		for _, name := range methods {
			if err := keyMismatch(is.algs[name], key); err != nil {
				why = append(why, err.Error())
			}
		}
		if len(why) == len(methods) {
			return nil, field.Errorf(field.Join(kp, sk.sources()[0]), "key fits none of the issuer's algorithms: %s", strings.Join(why, "; "))
		}
		keys = append(keys, &verifyKey{kid: sk.KID, key: key})
	}
	is.static = newKeySet(is.algs, keys, true)
	is.keyfunc = is.staticKey
	return is, nil
}

// checkHeader refuses, before golang-jwt parses anything, headers with
// duplicate or escaped member names (encoding/json keeps the last of
// {"alg":"RS256","alg":"HS256"}), a crit member (RFC 7515 4.1.11: we
// understand no extension), an alg the issuer does not allow and, when the
// issuer sets typ, another typ.
func (is *issuer) checkHeader(bp *[]byte, seg string) *Error {
	data, buf, err := decodeSegment(*bp, seg)
	*bp = buf[:0]
	if err != nil {
		return fail(ReasonMalformed, fmt.Errorf("header: %w", err))
	}
	var (
		seen     [maxHeaderParams][]byte
		n        int
		alg, typ []byte
		hasAlg   bool
		hasTyp   bool
	)
	err = scanObject(data, func(key, val []byte) error {
		if bytes.IndexByte(key, '\\') >= 0 {
			return fail(ReasonMalformed, fmt.Errorf("header member %s is escaped", key))
		}
		for _, s := range seen[:n] {
			if bytes.Equal(s, key) {
				return fail(ReasonMalformed, fmt.Errorf("header member %s appears twice", key))
			}
		}
		if n == len(seen) {
			return fail(ReasonMalformed, fmt.Errorf("header has more than %d members", maxHeaderParams))
		}
		seen[n] = key
		n++
		switch string(key) {
		case `"crit"`:
			return fail(ReasonCritUnsupported, errors.New("header has crit; no extension is supported"))
		case `"alg"`:
			s, ok := jsonString(val)
			if !ok {
				return fail(ReasonMalformed, errors.New("header alg is not a string"))
			}
			alg, hasAlg = s, true
		case `"typ"`:
			typ, hasTyp = val, true
		}
		return nil
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return e
		}
		return fail(ReasonMalformed, fmt.Errorf("header: %w", err))
	}
	if !hasAlg {
		return fail(ReasonMalformed, errors.New("header has no alg"))
	}
	if _, ok := is.algs[string(alg)]; !ok {
		return fail(ReasonAlgNotAllowed, fmt.Errorf("alg %q is not allowed for issuer %s", alg, is.name))
	}
	if is.typ != nil {
		if !hasTyp {
			return fail(ReasonBadTyp, fmt.Errorf("header has no typ, want %q", is.typ))
		}
		s, ok := jsonString(typ)
		if !ok || !typMatches(s, is.typ) {
			return fail(ReasonBadTyp, fmt.Errorf("header typ %s, want %q", typ, is.typ))
		}
	}
	return nil
}

// typMatches compares media types case-insensitively, accepting the full
// "application/" form (RFC 7515 4.1.9, RFC 8725 3.11).
func typMatches(got, want []byte) bool {
	if len(got) > len("application/") && bytes.EqualFold(got[:len("application/")], []byte("application/")) {
		got = got[len("application/"):]
	}
	return bytes.EqualFold(got, want)
}

// kidOf returns the token's kid, "" when absent.
func kidOf(t *jwt.Token) (string, *Error) {
	v, ok := t.Header["kid"]
	if !ok {
		return "", nil
	}
	kid, ok := v.(string)
	if !ok {
		return "", fail(ReasonMalformed, errors.New("header kid is not a string"))
	}
	return kid, nil
}

// currentKeys returns the key set in force: a JWKS refresh replaces it.
func (is *issuer) currentKeys() *keySet {
	if is.jwks != nil {
		return is.jwks.keys()
	}
	return is.static
}

// staticKey is the keyfunc of issuers with static keys. jku, x5u, jwk and
// x5c headers are never looked at.
func (is *issuer) staticKey(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok { // checkHeader refused it; kept as a backstop
		return nil, fail(ReasonCritUnsupported, errors.New("header has crit"))
	}
	kid, e := kidOf(t)
	if e != nil {
		return nil, e
	}
	key, err := is.static.lookup(t.Method.Alg(), kid)
	if err != nil {
		return nil, keyError(err, kid, t.Method.Alg())
	}
	return key, nil
}

// jwksKey is the keyfunc of JWKS issuers: an unknown kid (or an empty set)
// triggers a rate-limited refresh that the request waits for briefly.
func (is *issuer) jwksKey(ctx context.Context, t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		return nil, fail(ReasonCritUnsupported, errors.New("header has crit"))
	}
	kid, e := kidOf(t)
	if e != nil {
		return nil, e
	}
	alg := t.Method.Alg()
	ks := is.jwks.keys()
	key, err := ks.lookup(alg, kid)
	if err == nil {
		return key, nil
	}
	if errors.Is(err, errUnknownKID) || ks.usable == 0 {
		is.jwks.awaitRefresh(ctx, kid)
		ks = is.jwks.keys()
		if key, err = ks.lookup(alg, kid); err == nil {
			return key, nil
		}
	}
	if ks.usable == 0 {
		return nil, fail(ReasonJWKSUnavailable, fmt.Errorf("no keys loaded from %s yet", is.jwks.where()))
	}
	return nil, keyError(err, kid, alg)
}

func keyError(err error, kid, alg string) *Error {
	switch {
	case errors.Is(err, errAlgNotInSet):
		return fail(ReasonAlgNotAllowed, fmt.Errorf("alg %s is not among the issuer's current algorithms", alg))
	case errors.Is(err, errUnknownKID):
		return fail(ReasonUnknownKey, fmt.Errorf("no key with kid %q", kid))
	case errors.Is(err, errNoKeyFits):
		return fail(ReasonUnknownKey, fmt.Errorf("no key fits a %s token without kid", alg))
	default:
		return fail(ReasonKeyRejected, fmt.Errorf("kid %q: %w", kid, err))
	}
}

// identity maps verified claims to the caller.
func (is *issuer) identity(claims jwt.MapClaims) (*Identity, error) {
	return is.mapping.identity(map[string]any(claims), is.name)
}

// mapping is a ClaimMapping ready to apply: JWT issuers and token
// introspection map claims to the caller alike.
type mapping struct {
	subject claimPath
	roles   []claimPath
}

func newMapping(c ClaimMapping) mapping {
	mp := mapping{subject: newClaimPath(c.Subject)}
	for _, r := range c.Roles {
		mp.roles = append(mp.roles, newClaimPath(r))
	}
	return mp
}

// identity maps claims to the caller.
func (mp mapping) identity(m map[string]any, issuer string) (*Identity, error) {
	v, _ := mp.subject.lookup(m)
	sub, _ := v.(string)
	if sub == "" {
		return nil, fail(ReasonMissingSubject, fmt.Errorf("claim %q is missing, empty or not a string", mp.subject.full))
	}
	return &Identity{Subject: sub, Roles: mp.rolesOf(m), Claims: m, Issuer: issuer}, nil
}

// rolesOf collects roles from each configured claim: a JSON array of
// strings (other elements ignored) or a space-separated string such as
// "scope". Duplicates are dropped, first occurrence kept.
func (mp mapping) rolesOf(m map[string]any) []string {
	roles := make([]string, 0, 8)
	add := func(r string) {
		if r == "" {
			return
		}
		for _, have := range roles {
			if have == r {
				return
			}
		}
		roles = append(roles, r)
	}
	for _, p := range mp.roles {
		v, _ := p.lookup(m)
		switch x := v.(type) {
		case string:
			for f := range strings.FieldsSeq(x) {
				add(f)
			}
		case []any:
			for _, e := range x {
				if s, ok := e.(string); ok {
					add(s)
				}
			}
		}
	}
	return roles
}

// claimPath names a claim: the whole name first (namespaced claims such as
// "https://example.com/roles" contain dots), then as a dotted path into
// nested objects ("realm_access.roles").
type claimPath struct {
	full  string
	parts []string
}

func newClaimPath(name string) claimPath {
	p := claimPath{full: name}
	if strings.Contains(name, ".") {
		p.parts = strings.Split(name, ".")
	}
	return p
}

func (p claimPath) lookup(m map[string]any) (any, bool) {
	if v, ok := m[p.full]; ok {
		return v, true
	}
	if p.parts == nil {
		return nil, false
	}
	var cur any = m
	for _, part := range p.parts {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}
