package inputdoc

import (
	"encoding/binary"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
)

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

// AppendValue appends the encodings of the values of input at the paths,
// each after the number of keys followed to it (see lookup). It reports
// false when input holds a value that has no encoding (not a JSON value).
// It is the reference the Encoder is equal to, for an input already built.
func (p *Paths) AppendValue(b []byte, input ast.Value) ([]byte, bool) {
	ok := true
	for _, r := range p.refs {
		v, depth := lookup(input, r[1:])
		b, ok = appendValue(binary.AppendUvarint(b, uint64(depth)), v)
		if !ok {
			break
		}
	}
	return b, ok
}

// lookup follows keys into v. It returns the value they lead to, or where
// following them stopped: at the first missing key (nil), or at a value
// that is not an object (a set answers a string key by membership, so
// what comes after such a value depends on all of it), with the number of
// keys followed.
func lookup(v ast.Value, keys ast.Ref) (ast.Value, int) {
	for i, k := range keys {
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
	return v, len(keys)
}

func appendValue(b []byte, v ast.Value) ([]byte, bool) {
	switch v := v.(type) {
	case nil:
		return append(b, tagAbsent), true
	case ast.Null:
		return append(b, tagNull), true
	case ast.Boolean:
		return appendBool(b, bool(v)), true
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

// The encodings of the Writer's scalar members: the bytes appendValue
// gives for the values the Builder makes of them.

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, tagTrue)
	}
	return append(b, tagFalse)
}

func appendInt(b []byte, n int64) []byte {
	var buf [20]byte
	digits := strconv.AppendInt(buf[:0], n, 10)
	return append(binary.AppendUvarint(append(b, tagNumber), uint64(len(digits))), digits...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(append(b, tagArray), uint64(len(ss)))
	for _, s := range ss {
		b = appendString(append(b, tagString), s)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}
