package testkit

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/MicahParks/jwkset"
)

// JWKSMode says how a JWKSServer misbehaves.
type JWKSMode string

const (
	// JWKSAnswer answers with the status and body set (the default).
	JWKSAnswer JWKSMode = ""
	// JWKSHangUp closes the connection without an answer.
	JWKSHangUp JWKSMode = "hangup"
	// JWKSBlock holds the request until the client gives up or the test ends.
	JWKSBlock JWKSMode = "block"
)

// JWKSServer is a real HTTP JWKS endpoint on loopback whose answer a test
// changes while verifiers fetch from it. It starts with an empty key set and
// closes when the test ends.
type JWKSServer struct {
	// URL is the endpoint's base URL; any path answers.
	URL string

	hits    atomic.Int64
	blocked atomic.Int64
	release chan struct{}

	mu     sync.Mutex
	status int
	body   string
	mode   JWKSMode
}

// NewJWKSServer starts a JWKSServer.
func NewJWKSServer(tb testing.TB) *JWKSServer {
	tb.Helper()
	s := &JWKSServer{release: make(chan struct{}), status: http.StatusOK, body: `{"keys":[]}`}
	srv := httptest.NewServer(http.HandlerFunc(s.handle))
	s.URL = srv.URL
	tb.Cleanup(func() {
		close(s.release)
		srv.Close()
	})
	return s
}

func (s *JWKSServer) handle(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	s.mu.Lock()
	status, body, mode := s.status, s.body, s.mode
	s.mu.Unlock()
	switch mode {
	case JWKSHangUp:
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	case JWKSBlock:
		s.blocked.Add(1)
		select {
		case <-s.release:
		case <-r.Context().Done():
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// Set makes every later request get status and body, or misbehave as mode
// says.
func (s *JWKSServer) Set(status int, body string, mode JWKSMode) {
	s.mu.Lock()
	s.status, s.body, s.mode = status, body, mode
	s.mu.Unlock()
}

// Serve answers with a JWK Set of keys (JSON objects, see JWK).
func (s *JWKSServer) Serve(keys ...string) {
	s.Set(http.StatusOK, `{"keys":[`+strings.Join(keys, ",")+`]}`, JWKSAnswer)
}

// Hits is how many requests reached the endpoint.
func (s *JWKSServer) Hits() int64 { return s.hits.Load() }

// Blocked is how many requests JWKSBlock has held.
func (s *JWKSServer) Blocked() int64 { return s.blocked.Load() }

// JWK returns the JWK JSON of key with kid; mod, if not nil, alters the
// options first (algorithm, use, private parts).
func JWK(tb testing.TB, key any, kid string, mod func(*jwkset.JWKOptions)) string {
	tb.Helper()
	opts := jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid}}
	if mod != nil {
		mod(&opts)
	}
	j, err := jwkset.NewJWKFromKey(key, opts)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := json.Marshal(j.Marshal())
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}
