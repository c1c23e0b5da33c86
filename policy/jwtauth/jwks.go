package jwtauth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"golang.org/x/time/rate"
)

// maxJWKSBytes caps a JWKS response: a real set is a few KB, and jwkset
// reads the body without a limit.
const maxJWKSBytes = 1 << 20

var errJWKSTooLarge = fmt.Errorf("JWKS response exceeds %d bytes", maxJWKSBytes)

// jwksSource keeps one issuer's JWKS. jwkset fetches it (at start, on its
// refresh interval, and when asked for a kid it lacks); guardedStore turns
// each fetched set into the keySet the request path reads, and refuses sets
// that would leave the issuer without keys, so the last good set stays in
// force.
type jwksSource struct {
	issuer       string
	url          string
	log          *slog.Logger
	report       func(issuer string, err error)
	store        *guardedStore
	client       jwkset.Storage // reading a kid it lacks refreshes from url
	lifetime     context.Context
	fetchTimeout time.Duration
	keyWait      time.Duration
	limiter      *rate.Limiter // unknown-kid refreshes

	mu       sync.Mutex
	inflight chan struct{} // closed when the running on-demand refresh ends
}

type jwksParams struct {
	url             string
	algs            map[string]algInfo
	refreshInterval time.Duration
	unknownKIDEvery time.Duration
	fetchTimeout    time.Duration
	keyWait         time.Duration
	client          *http.Client
}

// newJWKSSource fetches the set once (a failure is logged and reported, not
// returned: the issuer starts without keys and recovers on the next
// refresh) and starts jwkset's refresh goroutine, which ends with ctx.
func newJWKSSource(ctx context.Context, issuer string, p jwksParams, log *slog.Logger, report func(string, error)) (*jwksSource, error) {
	s := &jwksSource{
		issuer:       issuer,
		url:          p.url,
		log:          log,
		report:       report,
		lifetime:     ctx,
		fetchTimeout: p.fetchTimeout,
		keyWait:      p.keyWait,
		limiter:      rate.NewLimiter(rate.Every(p.unknownKIDEvery), 1),
	}
	s.store = &guardedStore{MemoryJWKSet: jwkset.NewMemoryStorage(), src: s, algs: p.algs}
	s.store.keys.Store(newKeySet(p.algs, nil, false))
	hs, err := jwkset.NewStorageFromHTTP(p.url, jwkset.HTTPClientStorageOptions{
		Client:                    p.client,
		Ctx:                       ctx,
		HTTPTimeout:               p.fetchTimeout,
		NoErrorReturnFirstHTTPReq: true,
		RefreshErrorHandler:       s.refreshFailed,
		RefreshInterval:           p.refreshInterval,
		Storage:                   s.store,
		// GetX5U stays nil: jwkset then never fetches a key's x5u.
		ValidateOptions: jwkset.JWKValidateOptions{},
	})
	if err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", p.url, err)
	}
	s.client, err = jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{p.url: hs},
		// Rate limiting is s.limiter's job, checked without blocking
		// before a refresh starts.
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", p.url, err)
	}
	return s, nil
}

func (s *jwksSource) keys() *keySet { return s.store.keys.Load() }

func (s *jwksSource) refreshFailed(_ context.Context, err error) {
	s.log.Warn("JWKS refresh failed; keeping the previous key set",
		"issuer", s.issuer, "url", s.url, "keys_loaded", s.keys().usable > 0, "error", err)
	if s.report != nil {
		s.report(s.issuer, err)
	}
}

func (s *jwksSource) refreshed(ks *keySet, rejected []*verifyKey) {
	for _, k := range rejected {
		s.log.Warn("JWKS key not used", "issuer", s.issuer, "url", s.url, "kid", k.kid, "reason", k.reject)
	}
	s.log.Debug("JWKS refreshed", "issuer", s.issuer, "url", s.url, "usable_keys", ks.usable)
	if s.report != nil {
		s.report(s.issuer, nil)
	}
}

// awaitRefresh starts an on-demand refresh if the unknown-kid rate limit
// allows, then waits for the refresh in flight (started now or by another
// request) for at most keyWait, so a request never blocks on a slow or dead
// endpoint. The refresh itself runs to its own fetch timeout and serves
// later requests even when this one stops waiting.
func (s *jwksSource) awaitRefresh(ctx context.Context, kid string) {
	s.mu.Lock()
	done := s.inflight
	if done == nil && s.limiter.Allow() {
		done = make(chan struct{})
		s.inflight = done
		go s.refresh(kid, done)
	}
	s.mu.Unlock()
	if done == nil {
		return
	}
	t := time.NewTimer(s.keyWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

func (s *jwksSource) refresh(kid string, done chan struct{}) {
	defer func() {
		s.mu.Lock()
		s.inflight = nil
		s.mu.Unlock()
		close(done)
	}()
	ctx, cancel := context.WithTimeout(s.lifetime, s.fetchTimeout)
	defer cancel()
	// jwkset refreshes from the URL when asked for a kid it lacks; the
	// outcome reaches guardedStore or refreshFailed, not this result.
	_, _ = s.client.KeyRead(ctx, kid)
}

// guardedStore is the jwkset storage of one JWKS. jwkset replaces the whole
// set on every successful fetch, so removed keys stop verifying; a set with
// no usable key (an empty or junk response, or only unsupported keys) is
// refused, which makes jwkset count the refresh as failed and keeps the
// previous keys.
type guardedStore struct {
	*jwkset.MemoryJWKSet
	src  *jwksSource
	algs map[string]algInfo
	keys atomic.Pointer[keySet]
}

func (g *guardedStore) KeyReplaceAll(ctx context.Context, given []jwkset.JWK) error {
	keys := make([]*verifyKey, 0, len(given))
	var rejected []*verifyKey
	for _, j := range given {
		k := fromJWK(j, g.algs)
		keys = append(keys, k)
		if k.reject != nil {
			rejected = append(rejected, k)
		}
	}
	ks := newKeySet(g.algs, keys, false)
	if ks.usable == 0 {
		var reasons []error
		for _, k := range rejected {
			reasons = append(reasons, fmt.Errorf("kid %q: %w", k.kid, k.reject))
		}
		return fmt.Errorf("JWK Set with %d keys has none usable for this issuer's algorithms: %w", len(given), errors.Join(reasons...))
	}
	if err := g.MemoryJWKSet.KeyReplaceAll(ctx, given); err != nil {
		return err
	}
	g.keys.Store(ks)
	g.src.refreshed(ks, rejected)
	return nil
}

// KeyWrite and KeyDelete are refused: only whole fetched sets change keys.
func (g *guardedStore) KeyWrite(context.Context, jwkset.JWK) error {
	return errors.New("JWKS store is replaced only by fetches")
}

func (g *guardedStore) KeyDelete(context.Context, string) (bool, error) {
	return false, errors.New("JWKS store is replaced only by fetches")
}

// fromJWK checks one fetched key. Unusable keys are kept with a reason so
// that a token naming them is refused with it.
func fromJWK(j jwkset.JWK, algs map[string]algInfo) *verifyKey {
	m := j.Marshal()
	k := &verifyKey{kid: m.KID, alg: string(m.ALG), key: j.Key()}
	if _, private := k.key.(interface{ Public() crypto.PublicKey }); private {
		// A published private key can sign anything: never trust it.
		k.reject = errors.New("the JWKS publishes this key's private part")
		return k
	}
	switch {
	case m.USE != "" && m.USE != jwkset.UseSig:
		k.reject = fmt.Errorf(`key use is %q, not "sig"`, m.USE)
	case len(m.KEYOPS) > 0 && !slices.Contains(m.KEYOPS, jwkset.KeyOpsVerify):
		k.reject = errors.New(`key_ops does not include "verify"`)
	case m.KTY == jwkset.KtyOct:
		k.reject = errors.New("symmetric (oct) key in a JWKS: HMAC secrets must not be published")
	default:
		if err := checkPublicKey(k.key); err != nil {
			k.reject = err
		} else if k.alg != "" {
			if _, ok := algs[k.alg]; !ok {
				k.reject = fmt.Errorf("key is for %s, which this issuer does not allow", k.alg)
			}
		}
	}
	return k
}

// jwksHTTPClient returns a copy of c (or of a default client with sane
// timeouts) whose responses are capped at maxJWKSBytes.
func jwksHTTPClient(c *http.Client) *http.Client {
	if c == nil {
		c = &http.Client{
			Transport: &http.Transport{
				Proxy:                 http.ProxyFromEnvironment,
				DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				TLSHandshakeTimeout:   5 * time.Second,
				ResponseHeaderTimeout: 10 * time.Second,
				IdleConnTimeout:       90 * time.Second,
				MaxIdleConnsPerHost:   2,
				ForceAttemptHTTP2:     true,
			},
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 3 {
					return errors.New("JWKS: too many redirects")
				}
				if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
					return errors.New("JWKS: refusing a redirect from https to " + req.URL.Scheme)
				}
				return nil
			},
		}
	}
	cp := *c
	base := cp.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cp.Transport = capTransport{base: base}
	return &cp
}

type capTransport struct{ base http.RoundTripper }

func (t capTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &cappedBody{rc: resp.Body, left: maxJWKSBytes + 1}
	return resp, nil
}

type cappedBody struct {
	rc   io.ReadCloser
	left int64 // bytes still allowed, plus one to see an overflow
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errJWKSTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left <= 0 {
		return n, errJWKSTooLarge
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }
