package testkit

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"maps"
	"net/http"
	"net/http/httptest"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/util"
)

// BundleServer is an OPA bundle service on loopback: GET of any path
// serves the bundle last given to Set with its ETag, 304 to a request
// whose If-None-Match names it, 503 while down. With LongPoll, it supports
// OPA's long polling: a request whose If-None-Match names the current
// bundle and that asks to wait ("Prefer: wait=N") is held until Set
// changes the bundle or N seconds pass.
type BundleServer struct {
	URL string

	mu      sync.Mutex
	body    []byte
	etag    string
	down    bool
	long    bool
	changed chan struct{} // closed by Set

	requests, notModified, held atomic.Int64
}

// LongPoll turns long polling support on.
func (s *BundleServer) LongPoll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.long = true
}

// Held counts the requests held open by long polling.
func (s *BundleServer) Held() int64 { return s.held.Load() }

// NewBundleServer starts a BundleServer without a bundle (it answers 404
// until Set), closed when the test ends.
func NewBundleServer(tb testing.TB) *BundleServer {
	tb.Helper()
	s := &BundleServer{}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	tb.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *BundleServer) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mu.Lock()
	body, etag, down, long, changed := s.body, s.etag, s.down, s.long, s.changed
	s.mu.Unlock()
	if long {
		// Long polling is announced by this content type on every answer.
		w.Header().Set("Content-Type", "application/vnd.openpolicyagent.bundles")
		if wait := longPollWait(r); wait > 0 && body != nil && !down && strings.Contains(r.Header.Get("If-None-Match"), etag) {
			s.held.Add(1)
			select {
			case <-changed:
			case <-time.After(wait):
			case <-r.Context().Done():
				return
			}
			s.mu.Lock()
			body, etag = s.body, s.etag
			s.mu.Unlock()
		}
	}
	switch {
	case down:
		http.Error(w, "down", http.StatusServiceUnavailable)
	case body == nil:
		http.NotFound(w, r)
	case strings.Contains(r.Header.Get("If-None-Match"), etag):
		s.notModified.Add(1)
		w.Header().Set("ETag", etag)
		w.WriteHeader(http.StatusNotModified)
	default:
		w.Header().Set("ETag", etag)
		if !long {
			w.Header().Set("Content-Type", "application/gzip")
		}
		w.Write(body)
	}
}

// longPollWait is the wait a request asks for in "Prefer: ...;wait=N".
func longPollWait(r *http.Request) time.Duration {
	for _, p := range strings.Split(r.Header.Get("Prefer"), ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(p), "wait="); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return time.Duration(n) * time.Second
			}
		}
	}
	return 0
}

// Set makes raw (a bundle file) the bundle served.
func (s *BundleServer) Set(raw []byte) {
	sum := sha256.Sum256(raw)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.etag = raw, `"`+hex.EncodeToString(sum[:8])+`"`
	if s.changed != nil {
		close(s.changed)
	}
	s.changed = make(chan struct{})
}

// SetDown makes the service answer 503 (down) or serve again.
func (s *BundleServer) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// Requests counts the requests served; NotModified those answered 304.
func (s *BundleServer) Requests() int64    { return s.requests.Load() }
func (s *BundleServer) NotModified() int64 { return s.notModified.Load() }

// BundleFiles are a bundle's files by path: .rego modules, and data.json
// or data.yaml files whose directory is their place under data.
type BundleFiles map[string]string

// BuildBundle writes files as a bundle tarball with OPA's bundle package,
// with manifest revision rev; when signingKey (a PEM RSA private key) is
// set, signed with it (RS256) under key id keyID, as opa build
// --signing-key does.
func BuildBundle(tb testing.TB, files BundleFiles, rev, signingKey, keyID string) []byte {
	tb.Helper()
	b := bundle.Bundle{Manifest: bundle.Manifest{Revision: rev}, Data: map[string]any{}}
	for name, text := range files {
		switch path.Base(name) {
		case "data.json", "data.yaml":
			var v any
			if err := util.Unmarshal([]byte(text), &v); err != nil {
				tb.Fatalf("%s: %v", name, err)
			}
			place(b.Data, strings.Split(strings.Trim(path.Dir(name), "./"), "/"), v)
		default:
			m, err := ast.ParseModuleWithOpts(name, text, ast.ParserOptions{RegoVersion: ast.RegoV1})
			if err != nil {
				tb.Fatal(err)
			}
			b.Modules = append(b.Modules, bundle.ModuleFile{URL: "/" + name, Path: "/" + name, Raw: []byte(text), Parsed: m})
		}
	}
	b.Manifest.Init()
	if signingKey != "" {
		if err := b.GenerateSignature(bundle.NewSigningConfig(signingKey, "RS256", ""), keyID, false); err != nil {
			tb.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// place sets v at keys under data (no keys: merges v's members into data).
func place(data map[string]any, keys []string, v any) {
	if len(keys) == 0 || keys[0] == "" {
		if m, ok := v.(map[string]any); ok {
			maps.Copy(data, m)
		}
		return
	}
	if len(keys) == 1 {
		data[keys[0]] = v
		return
	}
	next, ok := data[keys[0]].(map[string]any)
	if !ok {
		next = map[string]any{}
		data[keys[0]] = next
	}
	place(next, keys[1:], v)
}

// SigningKey returns a fresh RSA key pair as PEM: the private key signs
// bundles, the public key verifies them.
func SigningKey(tb testing.TB) (private, public string) {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}
