package body

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/maphash"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Parse strictly parses one JSON value (RFC 8259) into map[string]any,
// []any, string, json.Number, bool or nil: the representation
// santhosh-tekuri/jsonschema/v6 validates and Rego input conversion accepts.
// Any top-level value is allowed; callers that need an object check it.
//
// It refuses, with a 400 *Error naming the JSON pointer: an empty or
// whitespace-only body, syntax errors, duplicate keys at any depth, keys
// that differ only in letter case (see foldDuplicate) at any depth, data
// after the value, invalid UTF-8, lone surrogates in \u escapes, raw control
// characters in strings, nesting deeper than lim.MaxDepth (checked while
// descending, so a deep body costs no more than MaxDepth levels of work),
// and numbers that are not RFC 8259 numbers or overflow float64. A body over
// lim.MaxBytes gets 413.
//
// The work is linear in the body size. Strings and maps are allocated once,
// at their final size; keys and string values found in lim.Vocab cost no
// allocation, and other short ones that repeat share one allocation per
// parse.
func Parse(data []byte, lim Limits) (any, error) {
	if len(data) > lim.maxBytes() {
		return nil, wholeBodyError(http.StatusRequestEntityTooLarge, ReasonTooLarge, "is too large")
	}
	sc := scratches.Get().(*scratch)
	defer sc.release()
	p := parser{data: data, maxDepth: lim.maxDepth(), names: lim.Names, vocab: lim.Vocab, scratch: sc}
	p.skipSpace()
	if p.pos == len(p.data) {
		e := p.fail(ReasonNotJSON, "")
		e.Message = messagePrefix + "is empty"
		return nil, e
	}
	v, e := p.value(0)
	if e != nil {
		return nil, p.finish(e)
	}
	p.skipSpace()
	if p.pos != len(p.data) {
		e := p.fail(ReasonTrailingData, "has data after the top-level value")
		return nil, p.finish(e)
	}
	return v, nil
}

type member struct {
	key    string
	val    any
	offset int // of the key, for a duplicate-key error
}

// internEntry caches one short string and, once used as a value or a
// number, its boxed forms, so repeated keys and values ("role", "user",
// "0.5") cost one allocation.
type internEntry struct {
	s string
	v any // s boxed as a string
	n any // s boxed as a json.Number
}

const (
	internSlots  = 64 // direct-mapped; a collision only costs an allocation
	internMaxLen = 32
)

// internSeed keys the intern table's hash; set once, never changed. A hash
// of every byte: one of a few bytes made values such as "0.5" and "1"
// collide and evict each other all along a tensor.
var internSeed = maphash.MakeSeed()

type parser struct {
	data     []byte
	pos      int
	maxDepth int
	names    Names
	vocab    *Vocab
	*scratch

	segs []pathSeg // path to the error, innermost first, filled while unwinding
}

// scratch is a parse's working memory, reused through a pool: keeping it
// off the stack keeps Parse's frame small (a 2 KiB frame made the request
// goroutine grow its stack in every check), and reusing it saves two
// allocations per parse.
type scratch struct {
	// Stacks of the elements of the open arrays and the members of the
	// open objects. A container's children are copied out once, at its
	// end, into a slice or map of the exact size.
	elems   []any
	members []member
	intern  [internSlots]internEntry
	// used lists the intern slots filled, so that release clears only them
	// (clearing memory that holds pointers is slow while the GC runs).
	used  [internSlots]uint8
	nused int
}

// Capacities of a new scratch's stacks (typical chat bodies never grow
// them), and the most a scratch may have grown and still be pooled.
const (
	scratchElems     = 32
	scratchMembers   = 16
	scratchMaxPooled = 256
)

// scratches holds released scratch memory; each is reset before reuse.
var scratches = sync.Pool{New: func() any {
	return &scratch{elems: make([]any, 0, scratchElems), members: make([]member, 0, scratchMembers)}
}}

// release returns sc to the pool, cleared so that it keeps no value of the
// body alive, unless a big body grew it. The stacks are cleared as each
// container ends; after a refusal, what remains on them is cleared here.
func (sc *scratch) release() {
	if cap(sc.elems) > scratchMaxPooled || cap(sc.members) > scratchMaxPooled {
		return
	}
	clear(sc.elems)
	clear(sc.members)
	sc.elems, sc.members = sc.elems[:0], sc.members[:0]
	for _, i := range sc.used[:sc.nused] {
		sc.intern[i] = internEntry{}
	}
	sc.nused = 0
	scratches.Put(sc)
}

// fail makes a 400 error at the current offset. rule is completed with the
// location by finish once the path is known.
func (p *parser) fail(reason, rule string) *Error {
	return &Error{Status: http.StatusBadRequest, Reason: reason, Offset: p.pos, Message: rule}
}

func (p *parser) finish(e *Error) *Error {
	e.Pointer = pointer(p.segs, nil, false)
	e.Message = messagePrefix + e.Message + " " + location(pointer(p.segs, p.names, true), e.Offset)
	return e
}

// isSpace and isPlain classify bytes: JSON whitespace, and the bytes a
// string may hold as they are (printable ASCII but '"' and '\\'). Read-only
// lookup tables.
var (
	isSpace = func() (t [256]bool) {
		for _, c := range []byte(" \t\n\r") {
			t[c] = true
		}
		return t
	}()
	isPlain = func() (t [256]bool) {
		for c := 0x20; c < 0x80; c++ {
			t[c] = c != '"' && c != '\\'
		}
		return t
	}()
)

// plainRun returns the index of the first byte at or after i that a string
// cannot hold as is ('"', '\\', a control character or a non-ASCII byte),
// or len(d). It tests 8 bytes at a time: strings are most of a chat body.
func plainRun(d []byte, i int) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(d); i += 8 {
		x := binary.LittleEndian.Uint64(d[i:])
		q := x ^ (ones * '"')
		bs := x ^ (ones * '\\')
		// Classic zero-byte and less-than tests; exact about whether some
		// byte matches, which is all that is needed to stop here.
		special := (x-ones*0x20)&^x | (q-ones)&^q | (bs-ones)&^bs | x
		if special&highs != 0 {
			break
		}
	}
	for i < len(d) && isPlain[d[i]] {
		i++
	}
	return i
}

// closingQuote returns the index of the quote ending the string whose
// backslash is at i, or len(d) when it is unterminated. It is an upper
// bound for sizing; the decoding loop still checks every byte.
func closingQuote(d []byte, i int) int {
	for {
		j := bytes.IndexByte(d[i:], '"')
		if j < 0 {
			return len(d)
		}
		j += i
		// The quote is escaped when an odd number of backslashes precede it.
		n := 0
		for k := j - 1; k >= i && d[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return j
		}
		i = j + 1
	}
}

func (p *parser) skipSpace() {
	for p.pos < len(p.data) && isSpace[p.data[p.pos]] {
		p.pos++
	}
}

// value parses the value at p.pos (after whitespace); depth is the nesting
// of the container holding it.
func (p *parser) value(depth int) (any, *Error) {
	if p.pos >= len(p.data) {
		return nil, p.fail(ReasonNotJSON, "ends where a value was expected")
	}
	switch c := p.data[p.pos]; c {
	case '{':
		return p.object(depth + 1)
	case '[':
		return p.array(depth + 1)
	case '"':
		raw, s, escaped, e := p.str()
		switch {
		case e != nil:
			return nil, e
		case escaped:
			return s, nil
		}
		return p.internValue(raw), nil
	case 't':
		return p.literal("true", true)
	case 'f':
		return p.literal("false", false)
	case 'n':
		return p.literal("null", nil)
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return p.number()
	case '+', '.', 'N', 'I':
		// +1, .5, NaN, Infinity: numbers in other languages, not in JSON.
		return nil, p.fail(ReasonNumberInvalid, "has an invalid number")
	default:
		return nil, p.fail(ReasonNotJSON, "is not valid JSON")
	}
}

func (p *parser) literal(word string, v any) (any, *Error) {
	if len(p.data)-p.pos < len(word) || string(p.data[p.pos:p.pos+len(word)]) != word {
		return nil, p.fail(ReasonNotJSON, "is not valid JSON")
	}
	p.pos += len(word)
	return v, nil
}

func (p *parser) object(depth int) (any, *Error) {
	if depth > p.maxDepth {
		return nil, p.fail(ReasonTooDeep, "is nested too deeply")
	}
	p.pos++ // '{'
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return map[string]any{}, nil
	}
	base := len(p.members)
	for {
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return nil, p.fail(ReasonNotJSON, "is not valid JSON: expected an object key")
		}
		keyOffset := p.pos
		raw, key, escaped, e := p.str()
		if e != nil {
			return nil, e
		}
		if !escaped {
			key = p.internKey(raw)
		}
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return nil, p.fail(ReasonNotJSON, "is not valid JSON: expected ':' after an object key")
		}
		p.pos++
		p.skipSpace()
		v, e := p.value(depth)
		if e != nil {
			p.segs = append(p.segs, pathSeg{key: key, index: -1})
			return nil, e
		}
		p.members = append(p.members, member{key: key, val: v, offset: keyOffset})
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.fail(ReasonNotJSON, "ends inside an object")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return p.endObject(base)
		default:
			return nil, p.fail(ReasonNotJSON, "is not valid JSON: expected ',' or '}' in an object")
		}
	}
}

// endObject builds the map of the members above base. Inserting into the
// map being built finds duplicates in linear time: a key already present
// leaves the length unchanged. Names equal under case folding are refused
// too: a server decoding into a struct with encoding/json would read either.
func (p *parser) endObject(base int) (any, *Error) {
	ms := p.members[base:]
	m := make(map[string]any, len(ms))
	for i := range ms {
		m[ms[i].key] = ms[i].val
		if len(m) != i+1 {
			p.pos = ms[i].offset
			e := p.fail(ReasonDuplicateKey, "has a duplicate object key")
			p.segs = append(p.segs, pathSeg{key: ms[i].key, index: -1})
			return nil, e
		}
	}
	if i := foldDuplicate(ms); i >= 0 {
		p.pos = ms[i].offset
		e := p.fail(ReasonAmbiguousKey, "has object keys that differ only in letter case")
		p.segs = append(p.segs, pathSeg{key: ms[i].key, index: -1})
		return nil, e
	}
	clear(ms)
	p.members = p.members[:base]
	return m, nil
}

func (p *parser) array(depth int) (any, *Error) {
	if depth > p.maxDepth {
		return nil, p.fail(ReasonTooDeep, "is nested too deeply")
	}
	p.pos++ // '['
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return []any{}, nil
	}
	base := len(p.elems)
	for {
		p.skipSpace()
		index := len(p.elems) - base // before the value: a failed child leaves its own elements above
		v, e := p.value(depth)
		if e != nil {
			p.segs = append(p.segs, pathSeg{index: index})
			return nil, e
		}
		p.elems = append(p.elems, v)
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.fail(ReasonNotJSON, "ends inside an array")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			es := p.elems[base:]
			a := make([]any, len(es))
			copy(a, es)
			clear(es)
			p.elems = p.elems[:base]
			return a, nil
		default:
			return nil, p.fail(ReasonNotJSON, "is not valid JSON: expected ',' or ']' in an array")
		}
	}
}

// str parses the string at p.pos ('"'). A string without escapes comes
// back as raw, a slice of the input (the caller converts or interns it);
// one with escapes comes back unescaped as s, built in a single allocation.
func (p *parser) str() (raw []byte, s string, escaped bool, e *Error) {
	d := p.data
	start := p.pos + 1
	i := start
	for {
		i = plainRun(d, i)
		if i >= len(d) {
			p.pos = i
			return nil, "", false, p.fail(ReasonNotJSON, "ends inside a string")
		}
		switch c := d[i]; {
		case c == '"':
			p.pos = i + 1
			return d[start:i], "", false, nil
		case c == '\\':
			s, e := p.strEscaped(start, i)
			return nil, s, true, e
		case c < 0x20:
			p.pos = i
			return nil, "", false, p.fail(ReasonControlCharacter, "has a control character in a string")
		default:
			n, ok := p.validRune(i)
			if !ok {
				return nil, "", false, p.fail(ReasonInvalidUTF8, "is not valid UTF-8")
			}
			i += n
		}
	}
}

// validRune checks the UTF-8 sequence at i (a byte >= 0x80); on failure
// p.pos is set to i for the error.
func (p *parser) validRune(i int) (int, bool) {
	r, n := utf8.DecodeRune(p.data[i:])
	if r == utf8.RuneError && n == 1 {
		p.pos = i
		return 0, false
	}
	return n, true
}

// strEscaped finishes a string that starts at start and has its first
// backslash at i. Unescaping never lengthens the text, so the distance to
// the closing quote bounds the result and one allocation holds it.
func (p *parser) strEscaped(start, i int) (string, *Error) {
	d := p.data
	var b strings.Builder
	b.Grow(closingQuote(d, i) - start)
	b.Write(d[start:i])
	for {
		run := i
		i = plainRun(d, i)
		b.Write(d[run:i])
		if i >= len(d) {
			p.pos = i
			return "", p.fail(ReasonNotJSON, "ends inside a string")
		}
		switch c := d[i]; {
		case c == '"':
			p.pos = i + 1
			return b.String(), nil
		case c < 0x20:
			p.pos = i
			return "", p.fail(ReasonControlCharacter, "has a control character in a string")
		case c >= 0x80:
			n, ok := p.validRune(i)
			if !ok {
				return "", p.fail(ReasonInvalidUTF8, "is not valid UTF-8")
			}
			b.Write(d[i : i+n])
			i += n
		default: // '\\'
			p.pos = i
			if i+1 >= len(d) {
				return "", p.fail(ReasonNotJSON, "ends inside a string")
			}
			switch d[i+1] {
			case '"', '\\', '/':
				b.WriteByte(d[i+1])
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				r, ok := hex4(d, i+2)
				if !ok {
					return "", p.fail(ReasonInvalidEscape, "has an invalid \\u escape")
				}
				switch {
				case r >= 0xDC00 && r <= 0xDFFF:
					return "", p.fail(ReasonLoneSurrogate, "has a lone UTF-16 surrogate")
				case r >= 0xD800 && r <= 0xDBFF:
					lo, ok := -1, i+11 < len(d) && d[i+6] == '\\' && d[i+7] == 'u'
					if ok {
						lo, ok = hex4(d, i+8)
					}
					if !ok || lo < 0xDC00 || lo > 0xDFFF {
						return "", p.fail(ReasonLoneSurrogate, "has a lone UTF-16 surrogate")
					}
					r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
					i += 6
				}
				b.WriteRune(rune(r))
				i += 4
			default:
				return "", p.fail(ReasonInvalidEscape, "has an invalid escape in a string")
			}
			i += 2
		}
	}
}

// hex4 decodes the 4 hex digits at d[i:i+4].
func hex4(d []byte, i int) (int, bool) {
	if i+4 > len(d) {
		return 0, false
	}
	r := 0
	for _, c := range d[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | int(c)
	}
	return r, true
}

// number parses an RFC 8259 number:
// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func (p *parser) number() (any, *Error) {
	d := p.data
	i := p.pos
	start := i
	if d[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
			n++
		}
		return n
	}
	intDigits := 0
	switch {
	case i < len(d) && d[i] == '0':
		i++
		intDigits = 1
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		intDigits = digits()
	default:
		return nil, p.fail(ReasonNumberInvalid, "has an invalid number")
	}
	if i < len(d) && d[i] == '.' {
		i++
		if digits() == 0 {
			return nil, p.fail(ReasonNumberInvalid, "has an invalid number")
		}
	}
	exponent := false
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if digits() == 0 {
			return nil, p.fail(ReasonNumberInvalid, "has an invalid number")
		}
		exponent = true
	}
	// A digit after a leading zero (01), a second fraction or sign: one
	// malformed number rather than a number followed by junk.
	if i < len(d) {
		switch d[i] {
		case '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '.', 'e', 'E', '+', '-':
			return nil, p.fail(ReasonNumberInvalid, "has an invalid number")
		}
	}
	// Without an exponent, up to 308 integer digits are below
	// math.MaxFloat64 (1.79e308); only longer ones or exponents can overflow.
	if exponent || intDigits > 308 {
		if f, err := strconv.ParseFloat(string(d[start:i]), 64); err != nil || math.IsInf(f, 0) {
			return nil, p.fail(ReasonNumberInvalid, "has a number too large for a 64-bit float")
		}
	}
	p.pos = i
	return p.internNumber(d[start:i]), nil
}

// interned returns the intern entry holding b (1 to internMaxLen bytes):
// the string is allocated on a miss, and the slot noted as used. A
// collision replaces the entry: it only costs an allocation.
func (p *parser) interned(b []byte) *internEntry {
	i := maphash.Bytes(internSeed, b) % internSlots
	e := &p.intern[i]
	if e.s == string(b) { // no allocation: the compiler compares in place
		return e
	}
	if e.s == "" {
		p.used[p.nused] = uint8(i)
		p.nused++
	}
	*e = internEntry{s: string(b)}
	return e
}

// internKey returns b as a string: a Vocab string, or one shared with
// earlier equal short strings.
func (p *parser) internKey(b []byte) string {
	if w, ok := p.vocab.lookup(b); ok {
		return w.s
	}
	if len(b) == 0 || len(b) > internMaxLen {
		return string(b)
	}
	return p.interned(b).s
}

// internValue returns b as a boxed string: a Vocab string, or one shared
// with earlier equal short strings.
func (p *parser) internValue(b []byte) any {
	if w, ok := p.vocab.lookup(b); ok {
		return w.v
	}
	if len(b) == 0 || len(b) > internMaxLen {
		return string(b)
	}
	e := p.interned(b)
	if e.v == nil {
		e.v = e.s
	}
	return e.v
}

// internNumber returns b, a valid number, as a boxed json.Number shared
// with earlier equal short numbers (tensors repeat values).
func (p *parser) internNumber(b []byte) any {
	if len(b) > internMaxLen {
		return json.Number(b)
	}
	e := p.interned(b)
	if e.n == nil {
		e.n = json.Number(e.s)
	}
	return e.n
}
