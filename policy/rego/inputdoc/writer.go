package inputdoc

import (
	"errors"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A Writer receives an input document, member by member, in any order;
// the members of one object have distinct keys.
type Writer interface {
	// Wants reports whether member key of the current object is needed. A
	// builder may skip making a member that is not wanted, never work that
	// can refuse the request.
	Wants(key Key) bool
	String(key Key, s string)
	Bool(key Key, b bool)
	Int(key Key, n int64)
	// Strings is an array of strings.
	Strings(key Key, ss []string)
	// Value is a member already made as a Rego value.
	Value(key Key, v ast.Value)
	// Object starts an object member: the members written until the
	// matching End are its. When it reports false the member is not
	// wanted: nothing may be written for it, and End not called.
	Object(key Key) bool
	End()
}

// Key is a member's name. The input's own keys are made once with NewKey;
// names that come with a request (headers) are wrapped by Name.
type Key struct {
	name string
	term *ast.Term // nil: made when the member is built
}

// NewKey makes the key name with its Rego term, for keys used by every
// request (ast.InternedTerm allocates for strings OPA does not intern).
func NewKey(name string) Key { return Key{name: name, term: ast.StringTerm(name)} }

// Name is the key name, for names that vary by request.
func Name(name string) Key { return Key{name: name} }

func (k Key) astTerm() *ast.Term {
	if k.term != nil {
		return k.term
	}
	return ast.StringTerm(k.name)
}

// Builder is the Writer that makes the document's Rego values.
type Builder struct {
	// items are the members of the open objects, the innermost last.
	items  [][2]*ast.Term
	frames []builderFrame
}

// builderFrame is an open object: its key and where its members begin.
type builderFrame struct {
	key  *ast.Term
	base int
}

// errUnended is a builder's bug: an Object without its End.
var errUnended = errors.New("input document: an object was not ended")

var builders = sync.Pool{New: func() any { return new(Builder) }}

// Build returns the document write writes, or write's error.
func Build(write func(Writer) error) (ast.Value, error) {
	b := builders.Get().(*Builder)
	defer func() {
		clear(b.items)
		b.items, b.frames = b.items[:0], b.frames[:0]
		builders.Put(b)
	}()
	if err := write(b); err != nil {
		return nil, err
	}
	if len(b.frames) > 0 {
		return nil, errUnended
	}
	return ast.NewObject(b.items...), nil
}

func (b *Builder) add(key Key, v *ast.Term) { b.items = append(b.items, ast.Item(key.astTerm(), v)) }

// Wants is always true: a built document has every member.
func (b *Builder) Wants(Key) bool { return true }

func (b *Builder) String(key Key, s string) { b.add(key, ast.StringTerm(s)) }

func (b *Builder) Bool(key Key, v bool) { b.add(key, ast.InternedTerm(v)) }

func (b *Builder) Int(key Key, n int64) { b.add(key, ast.InternedTerm(n)) }

func (b *Builder) Strings(key Key, ss []string) {
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = ast.StringTerm(s)
	}
	b.add(key, ast.ArrayTerm(ts...))
}

func (b *Builder) Value(key Key, v ast.Value) { b.add(key, ast.NewTerm(v)) }

func (b *Builder) Object(key Key) bool {
	b.frames = append(b.frames, builderFrame{key: key.astTerm(), base: len(b.items)})
	return true
}

func (b *Builder) End() {
	f := b.frames[len(b.frames)-1]
	b.frames = b.frames[:len(b.frames)-1]
	obj := ast.NewObject(b.items[f.base:]...) // copies the members
	clear(b.items[f.base:])
	b.items = append(b.items[:f.base], ast.Item(f.key, ast.NewTerm(obj)))
}
