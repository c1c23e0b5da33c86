package inputdoc

import (
	"encoding/binary"
	"slices"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Paths are the paths into input a policy can read, as a tree of their
// keys that an Encoder follows while the document is written.
type Paths struct {
	// refs are the paths: sorted, none inside another (Minimal).
	refs []ast.Ref
	// nodes are the tree: nodes[0] is input, the others the keys of refs.
	nodes []node
	// encodable is false when a path has a key that is not a string: the
	// Encoder then never gives a key.
	encodable bool
	encoders  sync.Pool
}

// node is a key on some paths.
type node struct {
	name     string
	depth    int   // keys followed from input to it
	children []int // indexes in nodes
	// whole is true when a path ends here: the member's whole value is
	// read.
	whole bool
	// first and end bound the indexes in refs of the paths through it
	// (sorted paths sharing a prefix are adjacent).
	first, end int
}

// Minimal sorts paths and drops those inside another.
func Minimal(paths []ast.Ref) []ast.Ref {
	slices.SortFunc(paths, func(a, b ast.Ref) int { return a.Compare(b) })
	var out []ast.Ref
	for _, p := range paths {
		if n := len(out); n == 0 || !p.HasPrefix(out[n-1]) {
			out = append(out, p)
		}
	}
	return out
}

// NewPaths makes the tree of the paths refs (refs is not changed). Its
// encodings are in the order of Minimal(refs).
func NewPaths(refs []ast.Ref) *Paths {
	// Sorted paths are what lets a node's paths be a range.
	refs = Minimal(slices.Clone(refs))
	p := &Paths{refs: refs, nodes: []node{{end: len(refs)}}, encodable: true}
	p.encoders.New = func() any {
		return &Encoder{p: p, slots: make([]slot, len(refs)), seen: make([]bool, len(p.nodes))}
	}
	for i, r := range refs {
		n := 0
		for d, t := range r[1:] {
			name, ok := t.Value.(ast.String)
			if !ok {
				p.encodable = false
				return p
			}
			c := p.child(n, string(name))
			if c < 0 {
				c = len(p.nodes)
				p.nodes = append(p.nodes, node{name: string(name), depth: d + 1, first: i})
				p.nodes[n].children = append(p.nodes[n].children, c)
			}
			p.nodes[c].end = i + 1
			n = c
		}
		p.nodes[n].whole = true
	}
	return p
}

// child is n's child named name, or -1.
func (p *Paths) child(n int, name string) int {
	for _, c := range p.nodes[n].children {
		if p.nodes[c].name == name {
			return c
		}
	}
	return -1
}

// Encoder is the Writer that appends, for each path, the number of keys
// followed to its value and the value's encoding, as Paths.AppendValue
// does on the built document, without making any Rego value.
type Encoder struct {
	p *Paths
	// buf holds the paths' encodings in the order members were written.
	buf []byte
	// slots say where each path's encoding is in buf.
	slots []slot
	// seen are the nodes written in this document.
	seen   []bool
	frames []frame
	// members are the members of the objects being read whole, innermost
	// last.
	members []member
	// out is the paths' encodings in order; also scratch space for sorting
	// an object's members.
	out []byte
	// failed is set when the key would not be sure: a key written twice
	// in one object, a value without encoding, an unbalanced End.
	failed bool
}

type slot struct {
	start, end int
	set        bool
}

// frame is an open object.
type frame struct {
	// node is its node in the tree, -1 when the object is read whole.
	node int
	// Of an object read whole: where its members begin in buf, and the
	// first of them in members.
	start, members int
	// A member of an object read whole: its key, where the member begins.
	name   string
	member int
	// The value of a path: the path, where its encoding begins.
	slot, slotStart int
}

// member is where a member of an object read whole is in buf, its key
// first.
type member struct {
	name       string
	start, end int
}

// Encoder returns an empty encoder of p's paths; Release it after use.
func (p *Paths) Encoder() *Encoder {
	e := p.encoders.Get().(*Encoder)
	if p.nodes[0].whole { // all of input
		e.frames = append(e.frames, frame{node: -1, member: -1, slot: 0, slotStart: 0})
		e.buf = binary.AppendUvarint(e.buf, 0)
		e.frames[0].start = len(e.buf)
	} else {
		e.frames = append(e.frames, frame{node: 0, slot: -1})
	}
	return e
}

// Release returns e to its pool.
func (e *Encoder) Release() {
	clear(e.slots)
	clear(e.seen)
	clear(e.members) // member names may be a request's
	e.buf, e.frames, e.members, e.out, e.failed = e.buf[:0], e.frames[:0], e.members[:0], e.out[:0], false
	e.p.encoders.Put(e)
}

// Bytes ends the document and returns the encodings of the values at the
// paths, in the paths' order; false when the document had a value without
// an encoding or was not written as a Writer must be. The bytes are valid
// until Release.
func (e *Encoder) Bytes() ([]byte, bool) {
	if !e.p.encodable || len(e.frames) != 1 {
		return nil, false
	}
	e.End()
	for _, s := range e.slots {
		if !s.set {
			e.failed = true
		}
		if e.failed {
			return nil, false
		}
		e.out = append(e.out, e.buf[s.start:s.end]...)
	}
	return e.out, true
}

// Where a member goes.
const (
	skip    = iota // no path reads it
	inWhole        // it belongs to a value read whole
	onPath         // paths run through it or end at it (node)
)

// at says where member key of the current object goes, marking its node
// written.
func (e *Encoder) at(key Key) (where, n int) {
	f := &e.frames[len(e.frames)-1]
	if f.node < 0 {
		return inWhole, -1
	}
	c := e.p.child(f.node, key.name)
	if c < 0 {
		return skip, -1
	}
	if e.seen[c] {
		e.failed = true
		return skip, -1
	}
	e.seen[c] = true
	return onPath, c
}

// Wants reports whether a path runs through or ends at member key.
func (e *Encoder) Wants(key Key) bool {
	f := &e.frames[len(e.frames)-1]
	return f.node < 0 || e.p.child(f.node, key.name) >= 0
}

// scalar is a member's value other than an object the Writer opens.
type scalar struct {
	kind scalarKind
	s    string
	b    bool
	n    int64
	ss   []string
	v    ast.Value
}

type scalarKind uint8

const (
	kindString scalarKind = iota
	kindBool
	kindInt
	kindStrings
	kindValue // a Rego value
)

func (e *Encoder) appendScalar(v scalar) {
	switch v.kind {
	case kindString:
		e.buf = appendString(append(e.buf, tagString), v.s)
	case kindBool:
		e.buf = appendBool(e.buf, v.b)
	case kindInt:
		e.buf = appendInt(e.buf, v.n)
	case kindStrings:
		e.buf = appendStrings(e.buf, v.ss)
	case kindValue:
		var ok bool
		if e.buf, ok = appendValue(e.buf, v.v); !ok {
			e.failed = true
		}
	}
}

func (e *Encoder) put(key Key, v scalar) {
	switch where, n := e.at(key); where {
	case inWhole:
		start := e.memberKey(key)
		e.appendScalar(v)
		e.members = append(e.members, member{key.name, start, len(e.buf)})
	case onPath:
		nd := &e.p.nodes[n]
		obj, isObject := v.v.(ast.Object)
		for i := nd.first; i < nd.end; i++ {
			start := len(e.buf)
			if isObject && !nd.whole {
				// Paths go on into a Rego object: follow them there.
				sub, d := lookup(obj, e.p.refs[i][nd.depth+1:])
				var ok bool
				if e.buf, ok = appendValue(binary.AppendUvarint(e.buf, uint64(nd.depth+d)), sub); !ok {
					e.failed = true
				}
			} else {
				// Paths through any other value stop at it (lookup).
				e.buf = binary.AppendUvarint(e.buf, uint64(nd.depth))
				e.appendScalar(v)
			}
			e.slots[i] = slot{start, len(e.buf), true}
		}
	}
}

// memberKey appends the key of a member of an object read whole, and
// returns where the member begins.
func (e *Encoder) memberKey(key Key) int {
	start := len(e.buf)
	e.buf = appendString(append(e.buf, tagString), key.name)
	return start
}

func (e *Encoder) String(key Key, s string) { e.put(key, scalar{kind: kindString, s: s}) }

func (e *Encoder) Bool(key Key, b bool) { e.put(key, scalar{kind: kindBool, b: b}) }

func (e *Encoder) Int(key Key, n int64) { e.put(key, scalar{kind: kindInt, n: n}) }

func (e *Encoder) Strings(key Key, ss []string) { e.put(key, scalar{kind: kindStrings, ss: ss}) }

func (e *Encoder) Value(key Key, v ast.Value) { e.put(key, scalar{kind: kindValue, v: v}) }

func (e *Encoder) Object(key Key) bool {
	switch where, n := e.at(key); where {
	case inWhole:
		start := e.memberKey(key)
		e.frames = append(e.frames, frame{node: -1, start: len(e.buf), members: len(e.members), name: key.name, member: start, slot: -1})
	case onPath:
		nd := &e.p.nodes[n]
		if !nd.whole {
			e.frames = append(e.frames, frame{node: n, slot: -1})
			return true
		}
		f := frame{node: -1, member: -1, slot: nd.first, slotStart: len(e.buf)}
		e.buf = binary.AppendUvarint(e.buf, uint64(nd.depth))
		f.start, f.members = len(e.buf), len(e.members)
		e.frames = append(e.frames, f)
	default:
		return false
	}
	return true
}

func (e *Encoder) End() {
	if len(e.frames) == 0 {
		e.failed = true
		return
	}
	f := e.frames[len(e.frames)-1]
	e.frames = e.frames[:len(e.frames)-1]
	if f.node >= 0 {
		// The paths through keys the object lacks stop at it.
		nd := &e.p.nodes[f.node]
		for _, c := range nd.children {
			if e.seen[c] {
				continue
			}
			for i := e.p.nodes[c].first; i < e.p.nodes[c].end; i++ {
				start := len(e.buf)
				e.buf = append(binary.AppendUvarint(e.buf, uint64(nd.depth)), tagAbsent)
				e.slots[i] = slot{start, len(e.buf), true}
			}
		}
		return
	}
	e.sortMembers(f)
	if f.member < 0 {
		e.slots[f.slot] = slot{f.slotStart, len(e.buf), true}
	} else {
		e.members = append(e.members, member{f.name, f.member, len(e.buf)})
	}
}

// sortMembers rewrites the members of f, an object read whole, as its
// encoding: their count, then the members sorted by key.
func (e *Encoder) sortMembers(f frame) {
	ms := e.members[f.members:]
	slices.SortFunc(ms, func(a, b member) int { return strings.Compare(a.name, b.name) })
	for i := 1; i < len(ms); i++ {
		if ms[i].name == ms[i-1].name {
			e.failed = true
		}
	}
	e.out = append(e.out[:0], e.buf[f.start:]...)
	e.buf = binary.AppendUvarint(append(e.buf[:f.start], tagObject), uint64(len(ms)))
	for _, m := range ms {
		e.buf = append(e.buf, e.out[m.start-f.start:m.end-f.start]...)
	}
	e.out = e.out[:0]
	clear(ms)
	e.members = e.members[:f.members]
}
