// Package jwtauth verifies JSON Web Tokens from several trusted issuers,
// with keys from a JWKS endpoint or from static files and environment
// variables. It is strict by design: only the algorithms an issuer allows,
// only keys whose type and size fit the algorithm, exp required, iat and
// nbf checked, audience and typ checked, no crit, no whitespace, no
// non-canonical base64, no oversized tokens. Every failure is an *Error
// with a stable reason code.
package jwtauth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/policy/field"
)

// Reasons carried by *Error: stable codes for operators and the audit log.
const (
	ReasonMalformed       = "jwt_malformed"
	ReasonTooLong         = "jwt_too_long"
	ReasonUnknownIssuer   = "jwt_unknown_issuer"
	ReasonAlgNotAllowed   = "jwt_alg_not_allowed"
	ReasonBadSignature    = "jwt_bad_signature"
	ReasonUnknownKey      = "jwt_unknown_key"
	ReasonKeyRejected     = "jwt_key_rejected" // the kid names a key unfit for the token (type, size, use, alg)
	ReasonExpired         = "jwt_expired"
	ReasonMissingExp      = "jwt_missing_exp"
	ReasonNotYetValid     = "jwt_not_yet_valid"
	ReasonIssuedInFuture  = "jwt_issued_in_future"
	ReasonBadIssuer       = "jwt_bad_issuer"
	ReasonBadAudience     = "jwt_bad_audience"
	ReasonCritUnsupported = "jwt_crit_unsupported"
	ReasonBadTyp          = "jwt_bad_typ"
	ReasonMissingSubject  = "jwt_missing_subject"
	ReasonJWKSUnavailable = "jwt_jwks_unavailable"
	// Replay protection (IssuerSettings.ReplayClaim).
	ReasonReplayed           = "jwt_replayed"
	ReasonMissingReplayClaim = "jwt_missing_replay_claim"
	ReasonReplayUnavailable  = "jwt_replay_unavailable" // the store cannot answer: 503
	ReasonInvalidClaimType   = "jwt_bad_claim"          // a registered claim (exp, nbf, iat, aud, iss) has the wrong JSON type
)

// Defaults of Options.
const (
	DefaultKeyWait       = 500 * time.Millisecond
	DefaultMaxTokenBytes = 8192
)

// Error is every failure Verify returns. Reason is one of the Reason*
// constants; Err says more, for logs (it may quote token content, never
// key material).
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

func fail(reason string, err error) *Error { return &Error{Reason: reason, Err: err} }

// Identity is a verified caller.
type Identity struct {
	Subject string
	Roles   []string       // deduplicated, in claim order; never nil
	Claims  map[string]any // all claims of the token
	Issuer  string         // the configured issuer that verified it

	// memo is one value a caller derives from the identity, kept because
	// a cached identity serves many requests (see Memo).
	memo atomic.Pointer[any]
}

// Memo returns derive(id), computed on first use and kept with id: the
// engine converts the claims to its policy input once per verified token
// instead of once per request. derive must depend on id alone. Concurrent
// first uses may each compute it; one result is kept. There is one slot,
// for one caller.
func (id *Identity) Memo(derive func(*Identity) any) any {
	if p := id.memo.Load(); p != nil {
		return *p
	}
	v := derive(id)
	id.memo.CompareAndSwap(nil, &v)
	return *id.memo.Load()
}

// Options are the non-configuration inputs of New.
type Options struct {
	// HTTPClient fetches JWKS; nil = a client with connect, TLS and header
	// timeouts. Responses are capped at 1 MiB either way.
	HTTPClient *http.Client
	// KeyWait bounds how long a request waits for a JWKS refresh triggered
	// by an unknown kid. Default 500ms.
	KeyWait time.Duration
	// OnJWKSRefresh is called after each JWKS refresh attempt (nil err =
	// success): during New for the first fetch, then from background
	// goroutines, possibly concurrently.
	OnJWKSRefresh func(issuer string, err error)
	// Logger receives operator logs; nil discards them.
	Logger *slog.Logger
	// MaxTokenBytes caps a token before any decoding. 0 = 8192.
	MaxTokenBytes int
	// OnCacheLookup is called after each lookup in the verified-token
	// cache (when enabled), on the request path: keep it cheap.
	OnCacheLookup func(hit bool)
	// Replay records one-time claim values; required when an issuer sets
	// replay_claim.
	Replay ReplayStore

	now func() time.Time // tests only; nil = time.Now
}

// ReplayStore records one-time values until they expire (policy/replay).
type ReplayStore interface {
	// FirstUse reports whether value is seen for the first time, and
	// remembers it until until.
	FirstUse(ctx context.Context, value string, until time.Time) (bool, error)
}

// Verifier verifies tokens. It is safe for concurrent use.
type Verifier struct {
	replay   ReplayStore
	issuers  map[string]*issuer
	maxBytes int
	bufs     sync.Pool   // *[]byte scratch for decoding header and payload
	cache    *tokenCache // nil = off
}

// New builds a Verifier for s, which it validates first (see
// Settings.Validate; errors are *field.Error relative to the section).
// Static keys are read now; relative paths resolve against baseDir. JWKS
// issuers fetch their set now and refresh it until ctx ends; a JWKS that
// cannot be fetched does not fail New (the issuer's tokens are refused until
// a fetch succeeds).
func New(ctx context.Context, s Settings, baseDir string, opts Options) (*Verifier, error) {
	if errs := s.Validate(baseDir); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return build(ctx, s, baseDir, opts)
}

// build is New without validation.
func build(ctx context.Context, s Settings, baseDir string, opts Options) (*Verifier, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.KeyWait <= 0 {
		opts.KeyWait = DefaultKeyWait
	}
	v := &Verifier{
		issuers:  make(map[string]*issuer, len(s.Issuers)),
		maxBytes: opts.MaxTokenBytes,
		replay:   opts.Replay,
	}
	if v.maxBytes <= 0 {
		v.maxBytes = DefaultMaxTokenBytes
	}
	v.bufs.New = func() any {
		b := make([]byte, 0, 2048)
		return &b
	}
	now := opts.now
	if now == nil {
		now = time.Now
	}
	var err error
	if v.cache, err = newTokenCache(s.Cache, now, opts.OnCacheLookup); err != nil {
		return nil, field.Under("cache", err)
	}
	client := jwksHTTPClient(opts.HTTPClient)
	for i, ic := range s.Issuers {
		is, err := newIssuer(ctx, ic, baseDir, opts, client)
		if err != nil {
			return nil, field.Under("issuers["+strconv.Itoa(i)+"]", err)
		}
		if is.replayClaim.full != "" && v.replay == nil {
			return nil, field.Errorf("issuers["+strconv.Itoa(i)+"].replay_claim", "no replay store")
		}
		v.issuers[ic.Issuer] = is
	}
	return v, nil
}

// Verify checks token and returns the caller's identity. Every error is an
// *Error. The Identity may be shared with other calls (the cache returns
// the same one for the same token): callers must not modify it.
func (v *Verifier) Verify(ctx context.Context, token string) (*Identity, error) {
	if len(token) > v.maxBytes {
		return nil, fail(ReasonTooLong, fmt.Errorf("token of %d bytes exceeds the %d-byte limit", len(token), v.maxBytes))
	}
	var h [sha256.Size]byte
	if v.cache != nil {
		h = sha256.Sum256([]byte(token))
		if id := v.cache.get(h); id != nil {
			return v.once(ctx, id)
		}
	}
	hdr, payload, err := splitCompact(token)
	if err != nil {
		return nil, fail(ReasonMalformed, err)
	}
	bp := v.bufs.Get().(*[]byte)
	is, e := v.route(bp, payload)
	if e == nil {
		e = is.checkHeader(bp, hdr)
	}
	v.bufs.Put(bp)
	if e != nil {
		return nil, e
	}
	claims := jwt.MapClaims{}
	kf := is.keyfunc
	if is.jwks != nil {
		kf = func(t *jwt.Token) (any, error) { return is.jwksKey(ctx, t) }
	}
	keys := is.currentKeys()
	if _, err := is.parser.ParseWithClaims(token, claims, kf); err != nil {
		return nil, classify(err, claims)
	}
	id, err := is.identity(claims)
	if err != nil {
		return nil, err
	}
	// Cached only when the key set did not change while verifying (an
	// unknown kid refreshes it), so the entry names the set that verified.
	if v.cache != nil && is.currentKeys() == keys {
		v.cache.put(h, is, keys, claims, id)
	}
	return v.once(ctx, id)
}

// once applies the issuer's replay protection to a verified token, on
// every request (a cache hit included): its one-time claim must be new.
func (v *Verifier) once(ctx context.Context, id *Identity) (*Identity, error) {
	is := v.issuers[id.Issuer]
	if is.replayClaim.full == "" {
		return id, nil
	}
	c, _ := is.replayClaim.lookup(id.Claims)
	val, _ := c.(string)
	if val == "" || len(val) > maxReplayValue {
		return nil, fail(ReasonMissingReplayClaim, fmt.Errorf("claim %q is missing, empty, longer than %d bytes or not a string", is.replayClaim.full, maxReplayValue))
	}
	exp, err := jwt.MapClaims(id.Claims).GetExpirationTime()
	if err != nil || exp == nil { // unreachable: exp is required and checked
		return nil, fail(ReasonMissingExp, errors.New("no exp"))
	}
	first, err := v.replay.FirstUse(ctx, id.Issuer+"\x00"+val, exp.Add(is.leeway))
	switch {
	case err != nil:
		return nil, fail(ReasonReplayUnavailable, err)
	case !first:
		return nil, fail(ReasonReplayed, fmt.Errorf("%s %q was used before", is.replayClaim.full, val))
	}
	return id, nil
}

// maxReplayValue bounds a one-time claim value.
const maxReplayValue = 256

// route finds the issuer named by the payload's "iss".
func (v *Verifier) route(bp *[]byte, payload string) (*issuer, *Error) {
	data, buf, err := decodeSegment(*bp, payload)
	*bp = buf[:0]
	if err != nil {
		return nil, fail(ReasonMalformed, fmt.Errorf("payload: %w", err))
	}
	var (
		iss   []byte
		found int
	)
	err = scanObject(data, func(key, val []byte) error {
		if !keyIs(key, "iss") {
			return nil
		}
		found++
		s, ok := jsonString(val)
		if !ok {
			return errors.New(`"iss" is not a string`)
		}
		iss = s
		return nil
	})
	switch {
	case err != nil:
		return nil, fail(ReasonMalformed, fmt.Errorf("payload: %w", err))
	case found > 1:
		return nil, fail(ReasonMalformed, errors.New(`payload has more than one "iss"`))
	case found == 0:
		return nil, fail(ReasonUnknownIssuer, errors.New(`token has no "iss" claim`))
	}
	is, ok := v.issuers[string(iss)]
	if !ok {
		return nil, fail(ReasonUnknownIssuer, fmt.Errorf("issuer %q is not configured", iss))
	}
	return is, nil
}

// splitCompact checks that token is three base64url segments, the first
// two non-empty, and returns them. Anything outside the base64url alphabet
// is refused, which covers whitespace (Go's base64 skips CR and LF, so
// "token\n" would otherwise verify), padding and the +/ alphabet.
func splitCompact(token string) (hdr, payload string, err error) {
	dot1, dot2 := -1, -1
	for i := 0; i < len(token); i++ {
		switch c := token[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		case c == '.':
			switch {
			case dot1 < 0:
				dot1 = i
			case dot2 < 0:
				dot2 = i
			default:
				return "", "", errors.New("token has more than three segments")
			}
		case c == ' ', c == '\t', c == '\r', c == '\n', c == '\v', c == '\f':
			return "", "", errors.New("token contains white space")
		default:
			return "", "", fmt.Errorf("token contains %q, which is outside the base64url alphabet", c)
		}
	}
	if dot2 < 0 {
		return "", "", errors.New("token does not have three segments")
	}
	if dot1 == 0 || dot2 == dot1+1 {
		return "", "", errors.New("token has an empty header or payload")
	}
	return token[:dot1], token[dot1+1 : dot2], nil
}

// LooksLikeJWT reports whether s has the shape of a compact JWS: three
// dot-separated segments, the first starting with "eyJ" (the base64url of
// `{"`) and the payload non-empty. The signature may be empty so that an
// unsecured ("alg":"none") token is refused as a JWT, with its own reason,
// rather than looked up as an API key. It tells a JWT from an API key in
// "Authorization: Bearer"; it verifies nothing.
func LooksLikeJWT(s string) bool {
	a, rest, ok := strings.Cut(s, ".")
	if !ok || !strings.HasPrefix(a, "eyJ") {
		return false
	}
	b, c, ok := strings.Cut(rest, ".")
	return ok && b != "" && !strings.Contains(c, ".")
}

// classify maps a golang-jwt error to a reason. Header checks and key
// lookup ran before and return *Error themselves.
func classify(err error, claims jwt.MapClaims) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fail(ReasonMalformed, err)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// golang-jwt does not know the alg; checkHeader refuses these first.
		return fail(ReasonAlgNotAllowed, err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return fail(ReasonBadSignature, err)
	case errors.Is(err, jwt.ErrInvalidType):
		return fail(ReasonInvalidClaimType, err)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		if exp, _ := claims.GetExpirationTime(); exp == nil {
			return fail(ReasonMissingExp, err)
		}
		if aud, _ := claims.GetAudience(); len(aud) == 0 || (len(aud) == 1 && aud[0] == "") {
			return fail(ReasonBadAudience, err)
		}
		return fail(ReasonBadIssuer, err)
	case errors.Is(err, jwt.ErrTokenExpired):
		return fail(ReasonExpired, err)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return fail(ReasonNotYetValid, err)
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return fail(ReasonIssuedInFuture, err)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return fail(ReasonBadAudience, err)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return fail(ReasonBadIssuer, err)
	default:
		return fail(ReasonMalformed, err)
	}
}
