package apikey

import (
	"cmp"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"time"
)

// record is one validated key file entry as a parser hands it to a builder.
// Text fields are views into the parser's buffer, so an entry that matches a
// key in force costs no allocation.
type record struct {
	origin
	id       []byte
	subject  []byte
	roles    []byte // comma-separated (roles hold no commas), empty for none
	expires  time.Time
	disabled bool
}

// origin is what errors about an entry need, kept for new and changed keys
// until the Set is built.
type origin struct {
	digest [32]byte
	// idLine and hashLine are the lines errors point to: a YAML entry has a
	// line per field, a one-line entry one line for all.
	idLine, hashLine int32
	index            int32 // of a YAML entry in the keys list; -1 for a line
}

// path starts an error message about one field of the entry.
func (o *origin) path(field string) string {
	if o.index < 0 {
		return field + ": "
	}
	return fmt.Sprintf("keys[%d].%s: ", o.index, field)
}

// sameAs reports whether e holds exactly what k holds.
func (e *record) sameAs(k *Key) bool {
	if string(e.id) != k.ID || string(e.subject) != k.Subject || e.disabled != k.Disabled ||
		!e.expires.Equal(k.ExpiresAt) {
		return false
	}
	rest := e.roles
	for i, r := range k.Roles {
		if i > 0 {
			if len(rest) == 0 || rest[0] != ',' {
				return false
			}
			rest = rest[1:]
		}
		if len(rest) < len(r) || string(rest[:len(r)]) != r {
			return false
		}
		rest = rest[len(r):]
	}
	return len(rest) == 0
}

// builder assembles a Set from entries in file order. Entries equal to a key
// of prev are only marked; a shard is rebuilt only when it gains, changes or
// loses a key, and shared with prev otherwise. A reload that appends or
// revokes one key therefore allocates one shard, not a second copy of the
// whole set.
type builder struct {
	name string
	prev *Set
	// seen has one slot per key of prev (shard by shard, from base): 0 not
	// in the new file, line > 0 kept as is, -line replaced by an entry, where
	// line is the hash line of the entry that matched it.
	seen  []int32
	base  [shardCount]int
	added [shardCount]*pending
	// ids lists the added keys by a hash of their id, for finding duplicate
	// ids once all are in (kept keys cannot clash with each other: prev had
	// none). Sorting a flat list at the end costs a fraction of a map of a
	// million strings grown one insert at a time.
	ids   []idRef
	seed  maphash.Seed
	roles map[string][]string // interned, by their comma-separated text
	n     int
	errs  []*ParseError
	// perShard sizes each shard's first allocation: growing a million
	// keys by appends costs more than the rest of their parsing.
	perShard int
}

// pending holds the keys added to one shard and where they came from.
type pending struct {
	keys []Key
	from []origin
}

// idRef is an added key: the hash of its id and where it is.
type idRef struct {
	hash  uint64
	shard uint16
	i     uint32
}

// newBuilder starts a Set of about expected keys (a hint for allocation)
// that shares what it can with prev (nil for none).
func newBuilder(name string, prev *Set, expected int) *builder {
	b := &builder{name: name, prev: prev, seed: maphash.MakeSeed(), roles: map[string][]string{}}
	if prev != nil {
		off := 0
		for i, sh := range prev.shards {
			b.base[i] = off
			if sh != nil {
				off += len(sh.keys)
			}
		}
		b.seen = make([]int32, off)
		// Most keys of a reload are kept; expect few to be added.
		expected = 0
	}
	b.ids = make([]idRef, 0, expected)
	// A shard gets about expected/shardCount keys, give or take a few
	// standard deviations (~sqrt of that): 1/8 more covers most.
	b.perShard = expected/shardCount + expected/shardCount/8
	return b
}

func (b *builder) fail(line int32, format string, args ...any) {
	b.errs = append(b.errs, &ParseError{File: b.name, Line: int(line), Msg: fmt.Sprintf(format, args...)})
}

// keptEarlier marks the keys of prev kept by keepAll: they are on lines
// before any entry added afterwards, which is all errors need to know.
const keptEarlier int32 = 1<<31 - 1

// keepAll marks every key of prev kept, when the file starts with exactly
// the content prev was loaded from and only entries after it are added.
func (b *builder) keepAll() {
	for i := range b.seen {
		b.seen[i] = keptEarlier
	}
	b.n += len(b.seen)
}

// match marks e as kept if it equals a key of prev, and reports whether it
// did (or refused e as a second entry for the same key). An entry that
// equals a key in force needs no validation: that key passed it.
func (b *builder) match(e *record) bool {
	if b.prev == nil {
		return false
	}
	s := shardOf(&e.digest)
	sh := b.prev.shards[s]
	if sh == nil {
		return false
	}
	i, ok := sh.index[e.digest]
	if !ok {
		return false
	}
	slot := &b.seen[b.base[s]+int(i)]
	switch first := *slot; {
	case first > 0:
		b.dupHash(&e.origin, sh.keys[i].ID, first)
	case first < 0:
		b.dupHash(&e.origin, b.addedWith(s, e.digest), -first)
	case e.sameAs(&sh.keys[i]):
		*slot = e.hashLine
	default:
		*slot = -e.hashLine // replaced: add will take e
		return false
	}
	b.n++
	return true
}

// add takes a validated entry that match did not take; it does not retain e.
func (b *builder) add(e *record) {
	b.n++
	s := shardOf(&e.digest)
	p := b.added[s]
	if p == nil {
		p = &pending{keys: make([]Key, 0, b.perShard), from: make([]origin, 0, b.perShard)}
		b.added[s] = p
	}
	id := string(e.id)
	b.ids = append(b.ids, idRef{maphash.String(b.seed, id), uint16(s), uint32(len(p.keys))})
	p.keys = append(p.keys, Key{
		ID:        id,
		Subject:   string(e.subject),
		Roles:     b.roleList(e.roles),
		ExpiresAt: e.expires,
		Disabled:  e.disabled,
	})
	p.from = append(p.from, e.origin)
}

// addedWith returns the id of the added key with digest d in shard s.
func (b *builder) addedWith(s int, d [32]byte) string {
	p := b.added[s]
	for i := range p.from {
		if p.from[i].digest == d {
			return p.keys[i].ID
		}
	}
	return ""
}

func (b *builder) roleList(text []byte) []string {
	if len(text) == 0 {
		return nil
	}
	if r, ok := b.roles[string(text)]; ok {
		return r
	}
	r := strings.Split(string(text), ",")
	b.roles[string(text)] = r
	return r
}

func (b *builder) dupHash(o *origin, firstID string, firstLine int32) {
	b.fail(o.hashLine, "%ssame hash as id %q (%s): one key must map to one identity", o.path("hash"), firstID, b.where(firstLine))
}

func (b *builder) dupID(id string, o *origin, firstLine int32) {
	b.fail(o.idLine, "%sduplicate id %q (first at %s)", o.path("id"), id, b.where(firstLine))
}

// where names the line of a key; keys kept by keepAll have none.
func (b *builder) where(line int32) string {
	if line == keptEarlier {
		return "an earlier line"
	}
	return fmt.Sprintf("line %d", line)
}

// finish returns the Set, or the duplicates found.
func (b *builder) finish(sum [32]byte) (*Set, []*ParseError) {
	b.checkAddedIDs()
	set := &Set{n: b.n, sum: sum}
	for s := range shardCount {
		var old *shard
		var seen []int32
		if b.prev != nil {
			old = b.prev.shards[s]
		}
		keep := 0
		if old != nil {
			seen = b.seen[b.base[s] : b.base[s]+len(old.keys)]
			for i, l := range seen {
				if l > 0 {
					keep++
					if len(b.ids) > 0 {
						b.checkKeptID(old.keys[i].ID, l)
					}
				}
			}
		}
		add := b.added[s]
		switch {
		case old != nil && add == nil && keep == len(old.keys):
			set.shards[s] = old
		case add != nil || keep > 0:
			set.shards[s] = b.buildShard(old, seen, keep, add)
		}
	}
	if len(b.errs) > 0 {
		return nil, b.errs
	}
	return set, nil
}

// checkAddedIDs sorts ids by hash and reports added keys whose id an
// earlier added key has.
func (b *builder) checkAddedIDs() {
	slices.SortFunc(b.ids, func(x, y idRef) int {
		if c := cmp.Compare(x.hash, y.hash); c != 0 {
			return c
		}
		return cmp.Compare(b.origin(x).idLine, b.origin(y).idLine)
	})
	for i := 1; i < len(b.ids); i++ {
		// Within a run of equal hashes (almost always two keys with the same
		// id), compare with each earlier one.
		for j := i - 1; j >= 0 && b.ids[j].hash == b.ids[i].hash; j-- {
			if id := b.key(b.ids[i]).ID; id == b.key(b.ids[j]).ID {
				b.dupID(id, b.origin(b.ids[i]), b.origin(b.ids[j]).idLine)
				break
			}
		}
	}
}

// checkKeptID reports a clash between a kept key's id, at line l, and an
// added key's.
func (b *builder) checkKeptID(id string, l int32) {
	h := maphash.String(b.seed, id)
	i, _ := slices.BinarySearchFunc(b.ids, h, func(r idRef, h uint64) int { return cmp.Compare(r.hash, h) })
	for ; i < len(b.ids) && b.ids[i].hash == h; i++ {
		if b.key(b.ids[i]).ID != id {
			continue
		}
		if o := b.origin(b.ids[i]); l == keptEarlier || l < o.hashLine {
			b.dupID(id, o, l)
		} else {
			b.fail(l, "duplicate id %q (first at line %d)", id, o.idLine) // l is a real line: keptEarlier is never later
		}
		return
	}
}

func (b *builder) key(r idRef) *Key       { return &b.added[r.shard].keys[r.i] }
func (b *builder) origin(r idRef) *origin { return &b.added[r.shard].from[r.i] }

// buildShard makes a shard from the keys of old that are kept (seen > 0)
// and the added ones.
func (b *builder) buildShard(old *shard, seen []int32, keep int, add *pending) *shard {
	var keys []Key
	var from []origin
	if add != nil {
		keys, from = add.keys, add.from
	}
	sh := &shard{index: make(map[[32]byte]uint32, keep+len(keys))}
	if keep > 0 {
		// Kept keys are copied (their strings are shared): a shard is small.
		// Their digests are only in the old index.
		merged := make([]Key, 0, keep+len(keys))
		pos := make([]uint32, len(old.keys))
		for i := range old.keys {
			if seen[i] > 0 {
				pos[i] = uint32(len(merged))
				merged = append(merged, old.keys[i])
			}
		}
		for d, i := range old.index {
			if seen[i] > 0 {
				sh.index[d] = pos[i]
			}
		}
		keys = append(merged, keys...)
	} else if cap(keys)-len(keys) > len(keys)/8 {
		keys = slices.Clone(keys) // drop append's spare capacity
	}
	sh.keys = keys
	for i := range from {
		o := &from[i]
		if j, dup := sh.index[o.digest]; dup {
			// add refused digests of prev, so j is an added key.
			b.dupHash(o, keys[j].ID, from[int(j)-keep].hashLine)
			continue
		}
		sh.index[o.digest] = uint32(keep + i)
	}
	return sh
}
