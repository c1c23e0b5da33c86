package rego

import (
	"crypto/sha256"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/rego/inputdoc"
)

// CacheSettings configure the decision cache: authorization.decision_cache.
//
// A policy's decision is a function of the input values it reads, its
// modules and its data, as long as it calls no built-in whose result
// depends on anything else. For such a policy, the decision of a request
// is kept under the SHA-256 of exactly the input values the compiled
// policy can read (see readsOf), and a later request with the same values
// gets it without evaluating. The cache belongs to one revision of the
// policy: a reload starts an empty one. Policies that call a
// non-deterministic built-in (time.now_ns, http.send, rand.intn, ...),
// print or trace, that use "with", or that read input.request.id are
// never cached. Only successful evaluations are kept.
type CacheSettings struct {
	// Enabled turns the cache on. Default true.
	Enabled bool `yaml:"enabled"`
	// Size is the most decisions kept. Default 10000, at most 1000000.
	Size int `yaml:"size"`
}

// Defaults and limits of CacheSettings.
const (
	DefaultCacheSize = 10000
	MaxCacheSize     = 1_000_000
)

func (c CacheSettings) validate() []error {
	var errs field.List
	if c.Enabled {
		field.Range(&errs, "size", c.Size, 1, MaxCacheSize)
	}
	return errs
}

// cacheKey is the SHA-256 of the input values a policy reads.
type cacheKey = [sha256.Size]byte

// decisionCache holds the decisions of one policy revision.
type decisionCache struct {
	lru   *lru.Cache[cacheKey, Result]
	paths *inputdoc.Paths
}

func newDecisionCache(size int, paths []ast.Ref) *decisionCache {
	l, err := lru.New[cacheKey, Result](size)
	if err != nil {
		panic(err) // size was validated
	}
	return &decisionCache{lru: l, paths: inputdoc.NewPaths(paths)}
}

// keyBufs are encoding buffers, so that a lookup does not allocate.
var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// key hashes the values of input, built already, at the cache's paths. It reports false
// when input holds a value that has no encoding (not a JSON value), and
// the request is then evaluated without the cache.
func (c *decisionCache) key(input ast.Value) (cacheKey, bool) {
	bp := keyBufs.Get().(*[]byte)
	defer keyBufs.Put(bp)
	b, ok := c.paths.AppendValue((*bp)[:0], input)
	*bp = b
	if !ok {
		return cacheKey{}, false
	}
	return sha256.Sum256(b), true
}

// inputKey is key of the input in writes for a policy reading reads,
// without building it: the values at the cache's paths are encoded as in
// writes them. It reports false when the encoding could not be made (the
// caller then builds the input and keys that), and in's error.
func (c *decisionCache) inputKey(in Input, reads Inputs) (cacheKey, bool, error) {
	enc := c.paths.Encoder()
	defer enc.Release()
	if err := in.WriteInput(enc, reads); err != nil {
		return cacheKey{}, false, err
	}
	b, ok := enc.Bytes()
	if !ok {
		return cacheKey{}, false, nil
	}
	return sha256.Sum256(b), true, nil
}
