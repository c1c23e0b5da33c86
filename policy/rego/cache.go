package rego

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/field"
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
	paths []ast.Ref
}

func newDecisionCache(size int, paths []ast.Ref) *decisionCache {
	l, err := lru.New[cacheKey, Result](size)
	if err != nil {
		panic(err) // size was validated
	}
	return &decisionCache{lru: l, paths: paths}
}

// keyBufs are encoding buffers, so that a lookup does not allocate.
var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// key hashes the values of input at the cache's paths. It reports false
// when input holds a value that has no encoding (not a JSON value), and
// the request is then evaluated without the cache.
func (c *decisionCache) key(input ast.Value) (cacheKey, bool) {
	bp := keyBufs.Get().(*[]byte)
	defer keyBufs.Put(bp)
	b := (*bp)[:0]
	ok := true
	for _, p := range c.paths {
		v, depth := lookup(input, p)
		b, ok = appendValue(binary.AppendUvarint(b, uint64(depth)), v)
		if !ok {
			break
		}
	}
	*bp = b
	if !ok {
		return cacheKey{}, false
	}
	return sha256.Sum256(b), true
}

// lookup follows path p into input. It returns the value at p, or where
// following p stopped: at the first missing key (nil), or at a value that
// is not an object (a set answers a string key by membership, so what
// comes after such a value depends on all of it), with the number of keys
// followed.
func lookup(input ast.Value, p ast.Ref) (ast.Value, int) {
	v := input
	for i, k := range p[1:] {
		obj, ok := v.(ast.Object)
		if !ok {
			return v, i
		}
		t := obj.Get(k)
		if t == nil {
			return nil, i
		}
		v = t.Value
	}
	return v, len(p) - 1
}

// Tags of the key encoding: one per kind of value, then its content;
// strings and numbers are length-prefixed, composites count their members,
// and object members and set elements come in sorted order, so that two
// values have the same encoding exactly when they are the same value.
// Numbers keep their text: 1 and 1.0 are different keys.
const (
	tagAbsent byte = iota
	tagNull
	tagFalse
	tagTrue
	tagNumber
	tagString
	tagArray
	tagSet
	tagObject
)

func appendValue(b []byte, v ast.Value) ([]byte, bool) {
	switch v := v.(type) {
	case nil:
		return append(b, tagAbsent), true
	case ast.Null:
		return append(b, tagNull), true
	case ast.Boolean:
		if v {
			return append(b, tagTrue), true
		}
		return append(b, tagFalse), true
	case ast.Number:
		return appendString(append(b, tagNumber), string(v)), true
	case ast.String:
		return appendString(append(b, tagString), string(v)), true
	case *ast.Array:
		b = binary.AppendUvarint(append(b, tagArray), uint64(v.Len()))
		ok := true
		for i := 0; ok && i < v.Len(); i++ {
			b, ok = appendValue(b, v.Elem(i).Value)
		}
		return b, ok
	case ast.Set:
		b = binary.AppendUvarint(append(b, tagSet), uint64(v.Len()))
		ok := true
		v.Foreach(func(t *ast.Term) {
			if ok {
				b, ok = appendValue(b, t.Value)
			}
		})
		return b, ok
	case ast.Object:
		b = binary.AppendUvarint(append(b, tagObject), uint64(v.Len()))
		ok := true
		v.Foreach(func(k, t *ast.Term) { // sorted by key
			if ok {
				b, ok = appendValue(b, k.Value)
			}
			if ok {
				b, ok = appendValue(b, t.Value)
			}
		})
		return b, ok
	}
	return b, false
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}
