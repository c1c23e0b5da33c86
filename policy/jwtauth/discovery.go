package jwtauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelguard/modelguard/policy/field"
)

// keySource is where a JWKS issuer's keys come from: a configured jwks_url
// (*jwksSource) or the one its OpenID Connect discovery document names
// (*discovery).
type keySource interface {
	keys() *keySet
	// awaitRefresh waits briefly for keys a token's unknown kid needs.
	awaitRefresh(ctx context.Context, kid string)
	// where names the source in errors.
	where() string
}

func (s *jwksSource) where() string { return s.url }

// wellKnown is the discovery document's path under the issuer (OpenID
// Connect Discovery 1.0, section 4).
const wellKnown = "/.well-known/openid-configuration"

// discoveryRetry is how often a discovery that has never succeeded is
// tried again (later, the document is re-read every
// jwks_refresh_interval).
const discoveryRetry = 30 * time.Second

// discovery finds an issuer's JWKS from its discovery document, re-reads
// the document every refresh interval, and keeps the last good document
// and keys when the provider is down or answers with a document for
// another issuer. Until a first document arrives, the issuer has no keys
// and its tokens are refused (jwt_jwks_unavailable). Without configured
// algorithms, the document's id_token_signing_alg_values_supported (its
// public-key algorithms only) are the ones its keys verify; a document
// with none usable is refused like a foreign one.
type discovery struct {
	issuer   string
	docURL   string
	params   jwksParams // url is taken from the document
	algs     []string   // configured algorithms; none: the document's
	client   *http.Client
	log      *slog.Logger
	report   func(issuer string, err error)
	lifetime context.Context
	empty    *keySet

	cur atomic.Pointer[discovered]
}

// discovered is the JWKS a document named, in force.
type discovered struct {
	jwksURI string
	algs    string // the algorithms its keys verify, sorted, for comparison
	src     *jwksSource
	stop    context.CancelFunc
}

// newDiscovery reads the document once (a failure is logged and reported,
// not returned) and keeps re-reading it until ctx ends.
func newDiscovery(ctx context.Context, issuer string, algs []string, p jwksParams, log *slog.Logger, report func(string, error)) *discovery {
	d := &discovery{
		issuer: issuer, docURL: strings.TrimSuffix(issuer, "/") + wellKnown, params: p, algs: algs,
		client: p.client, log: log, report: report, lifetime: ctx, empty: newKeySet(p.algs, nil, false),
	}
	d.refresh()
	go d.loop()
	return d
}

func (d *discovery) loop() {
	for {
		wait := d.params.refreshInterval
		if d.cur.Load() == nil {
			wait = min(wait, discoveryRetry)
		}
		t := time.NewTimer(wait)
		select {
		case <-d.lifetime.Done():
			t.Stop()
			return
		case <-t.C:
			d.refresh()
		}
	}
}

func (d *discovery) keys() *keySet {
	if c := d.cur.Load(); c != nil {
		return c.src.keys()
	}
	return d.empty
}

func (d *discovery) awaitRefresh(ctx context.Context, kid string) {
	if c := d.cur.Load(); c != nil {
		c.src.awaitRefresh(ctx, kid)
	}
}

func (d *discovery) where() string {
	if c := d.cur.Load(); c != nil {
		return c.jwksURI
	}
	return d.docURL
}

// refresh reads the document and, when it names another JWKS than the one
// in force, starts fetching that one and retires the old.
func (d *discovery) refresh() {
	uri, algs, err := d.fetch()
	if err != nil {
		d.log.Warn("OIDC discovery failed; keeping the previous document and keys",
			"issuer", d.issuer, "url", d.docURL, "keys_loaded", d.keys().usable > 0, "error", err)
		if d.report != nil {
			d.report(d.issuer, err)
		}
		return
	}
	algKey := algNames(algs)
	cur := d.cur.Load()
	if cur != nil && cur.jwksURI == uri && cur.algs == algKey {
		return // the JWKS refreshes itself
	}
	ctx, stop := context.WithCancel(d.lifetime)
	p := d.params
	p.url, p.algs = uri, algs
	src, err := newJWKSSource(ctx, d.issuer, p, d.log, d.report)
	if err != nil {
		stop()
		d.log.Warn("OIDC discovery: JWKS not usable; keeping the previous keys", "issuer", d.issuer, "jwks_uri", uri, "error", err)
		if d.report != nil {
			d.report(d.issuer, err)
		}
		return
	}
	if cur != nil && src.keys().usable == 0 {
		// The new set could not be fetched yet: keep the keys in force
		// and try the move again at the next refresh.
		stop()
		return
	}
	d.cur.Store(&discovered{jwksURI: uri, algs: algKey, src: src, stop: stop})
	if cur != nil {
		cur.stop()
	}
	d.log.Info("OIDC discovery: JWKS in force", "issuer", d.issuer, "jwks_uri", uri, "algorithms", algKey)
}

// maxDiscoveryBytes caps the document (real ones are a few KB).
const maxDiscoveryBytes = 256 << 10

// fetch reads the document and returns the JWKS URL it names and the
// algorithms its keys verify, after checking that it is this issuer's (an
// exact match, as section 4.3 requires) and that the URL is one modelguard
// may fetch.
func (d *discovery) fetch() (string, map[string]algInfo, error) {
	ctx, cancel := context.WithTimeout(d.lifetime, d.params.fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.docURL, nil)
	if err != nil {
		return "", nil, err
	}
	req.Header.Set("accept", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		return "", nil, fmt.Errorf("discovery document: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("discovery document: HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDiscoveryBytes+1))
	if err != nil {
		return "", nil, fmt.Errorf("discovery document: %w", err)
	}
	if len(body) > maxDiscoveryBytes {
		return "", nil, fmt.Errorf("discovery document exceeds %d bytes", maxDiscoveryBytes)
	}
	var doc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", nil, fmt.Errorf("discovery document: %w", err)
	}
	switch {
	case doc.Issuer != d.issuer:
		return "", nil, fmt.Errorf("discovery document is for issuer %q, not %q", doc.Issuer, d.issuer)
	case doc.JWKSURI == "":
		return "", nil, errors.New("discovery document has no jwks_uri")
	}
	if err := field.CheckHTTPSURL(doc.JWKSURI, "a JWKS needs none", "keys fetched over plain http can be replaced in transit"); err != nil {
		return "", nil, fmt.Errorf("discovery document jwks_uri: %w", err)
	}
	if len(d.algs) > 0 { // configured algorithms win
		if len(doc.Algs) > 0 && !slices.ContainsFunc(d.algs, func(a string) bool { return slices.Contains(doc.Algs, a) }) {
			d.log.Warn("OIDC discovery: the provider advertises none of the issuer's algorithms", "issuer", d.issuer, "advertised", doc.Algs, "configured", d.algs)
		}
		return doc.JWKSURI, d.params.algs, nil
	}
	// publicAlgs(nil) would mean every algorithm: an empty list is none.
	if len(doc.Algs) > 0 {
		if algs := publicAlgs(doc.Algs); len(algs) > 0 {
			return doc.JWKSURI, algs, nil
		}
	}
	return "", nil, fmt.Errorf("discovery document's id_token_signing_alg_values_supported %q has no public-key algorithm modelguard supports, and the issuer configures no algorithms", doc.Algs)
}

// algNames lists algs' names, sorted and comma-separated.
func algNames(algs map[string]algInfo) string {
	names := make([]string, 0, len(algs))
	for name := range algs {
		names = append(names, name)
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}
