package inputdoc

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// doc is a document as a builder writes it: members in the order written.
type doc []member_

// member_ is one write: a scalar, a Rego value or an object.
type member_ struct {
	key string
	// kind is "string", "bool", "int", "strings", "value" or "object".
	kind    string
	s       string
	b       bool
	n       int64
	ss      []string
	v       ast.Value
	members doc
	// ifWanted skips the member when the writer does not want it.
	ifWanted bool
}

func (d doc) write(w Writer) {
	for _, m := range d {
		k := Name(m.key)
		if m.ifWanted && !w.Wants(k) {
			continue
		}
		switch m.kind {
		case "string":
			w.String(k, m.s)
		case "bool":
			w.Bool(k, m.b)
		case "int":
			w.Int(k, m.n)
		case "strings":
			w.Strings(k, m.ss)
		case "value":
			w.Value(k, m.v)
		case "object":
			if w.Object(k) {
				m.members.write(w)
				w.End()
			}
		}
	}
}

func refs(t testing.TB, paths ...string) []ast.Ref {
	t.Helper()
	var rs []ast.Ref
	for _, p := range paths {
		rs = append(rs, ast.MustParseRef(p))
	}
	return rs
}

// encode returns the Encoder's bytes for d and the reference: AppendValue
// of the document the Builder makes of d.
func encode(t testing.TB, p *Paths, write func(Writer)) (got []byte, gotOK bool, want []byte, wantOK bool) {
	t.Helper()
	e := p.Encoder()
	defer e.Release()
	write(e)
	b, ok := e.Bytes()
	got = slices.Clone(b)
	built, err := Build(func(w Writer) error { write(w); return nil })
	if err != nil {
		return got, ok, nil, false
	}
	want, wantOK = p.AppendValue(nil, built)
	return got, ok, want, wantOK
}

func TestEncoder(t *testing.T) {
	v := func(s string) ast.Value { return ast.MustParseTerm(s).Value }
	headers := doc{{key: "x-b", kind: "string", s: "2"}, {key: "x-a", kind: "string", s: "1"}, {key: "content-type", kind: "string", s: "json"}}
	example := doc{
		{key: "subject", kind: "object", members: doc{{key: "id", kind: "string", s: "alice"}, {key: "roles", kind: "strings", ss: []string{"admin", "user"}}}},
		{key: "request", kind: "object", members: doc{{key: "method", kind: "string", s: "POST"}, {key: "headers", kind: "object", members: headers}}},
		{key: "model", kind: "object", members: doc{{key: "operation", kind: "string", s: "chat"}, {key: "name", kind: "string", s: "gpt"}}},
		{key: "body", kind: "object", members: doc{{key: "stream", kind: "bool", b: true}, {key: "max_tokens", kind: "int", n: 1000}, {key: "tools", kind: "strings"}}},
		{key: "parsed_body", kind: "value", v: v(`{"model": "gpt", "messages": [{"role": "user"}], "n": 1.0, "s": {1, "a"}}`), ifWanted: true},
		{key: "gateway", kind: "string", s: "envoy"},
	}
	tests := []struct {
		name  string
		paths []string
		doc   doc
	}{
		{"no paths", nil, example},
		{"all of input", []string{"input"}, example},
		{"the example policy's", []string{"input.body.max_tokens", "input.model", "input.request.method", "input.subject.roles"}, example},
		{"whole objects, members out of order", []string{"input.request", "input.subject"}, example},
		{"paths out of order, one inside another", []string{"input.subject.roles", "input.body.max_tokens", "input.subject", "input.body.max_tokens"}, example},
		{"into a header", []string{`input.request.headers["x-a"]`, `input.request.headers["x-z"]`}, example},
		{"absent members and parents", []string{"input.body.n", "input.missing.deeper", "input.model.name.x", "input.request.query"}, example},
		{"through a scalar", []string{"input.gateway.x", "input.subject.roles.x", "input.body.stream.a.b", "input.body.max_tokens.x"}, example},
		{"into a Rego value", []string{"input.parsed_body.messages", "input.parsed_body.model.x", "input.parsed_body.n", "input.parsed_body.s.a", "input.parsed_body.z"}, example},
		{"a Rego value whole", []string{"input.parsed_body"}, example},
		{"empty objects", []string{"input.a", "input.b.c"}, doc{{key: "a", kind: "object"}, {key: "b", kind: "object"}}},
		{"empty key", []string{"input.a"}, doc{{key: "a", kind: "object", members: doc{{key: "", kind: "string"}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, want, wantOK := encode(t, NewPaths(refs(t, tc.paths...)), tc.doc.write)
			if !ok || !wantOK || !bytes.Equal(got, want) {
				t.Fatalf("encoder %v %x\nbuilt   %v %x", ok, got, wantOK, want)
			}
		})
	}
}

// TestEncoderRefuses: a document the Encoder cannot be sure of gives no
// key, and the caller builds the input.
func TestEncoderRefuses(t *testing.T) {
	p := NewPaths(refs(t, "input.a", "input.b.c"))
	tests := []struct {
		name  string
		write func(Writer)
	}{
		{"a key twice on a path", func(w Writer) { w.String(Name("a"), "x"); w.String(Name("a"), "y") }},
		{"a key twice in an object read whole", func(w Writer) {
			w.Object(Name("a"))
			w.Int(Name("x"), 1)
			w.Int(Name("x"), 2)
			w.End()
		}},
		{"a value without encoding", func(w Writer) { w.Value(Name("a"), ast.Var("x")) }},
		{"an object not ended", func(w Writer) { w.Object(Name("a")) }},
		{"an End too many", func(w Writer) { w.End() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := p.Encoder()
			defer e.Release()
			tc.write(e)
			if b, ok := e.Bytes(); ok {
				t.Fatalf("key %x", b)
			}
		})
	}
	// Nor do paths with a key that is not a string.
	e := NewPaths([]ast.Ref{ast.MustParseRef("input.a").Append(ast.IntNumberTerm(1))}).Encoder()
	defer e.Release()
	if b, ok := e.Bytes(); ok {
		t.Fatalf("key %x", b)
	}
}

// TestEncoderProperty: for random documents and paths, the Encoder's bytes
// are AppendValue's on the built document, byte for byte.
func TestEncoderProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 1))
	for i := range 10000 {
		d := randomDoc(rng, 0)
		paths := randomPaths(rng)
		got, ok, want, wantOK := encode(t, NewPaths(paths), d.write)
		if !ok || !wantOK || !bytes.Equal(got, want) {
			b, _ := Build(func(w Writer) error { d.write(w); return nil })
			t.Fatalf("case %d: paths %v, document %v\nencoder %v %x\nbuilt   %v %x", i, paths, b, ok, got, wantOK, want)
		}
	}
}

var docKeys = []string{"a", "b", "c", "", "ab"}

func randomDoc(rng *rand.Rand, depth int) doc {
	var d doc
	for _, k := range docKeys {
		if rng.IntN(3) == 0 {
			continue
		}
		m := member_{key: k, ifWanted: rng.IntN(2) == 0}
		switch r := rng.IntN(6); {
		case r == 0:
			m.kind, m.s = "string", []string{"", "x", "a\x00b", "1"}[rng.IntN(4)]
		case r == 1:
			m.kind, m.b = "bool", rng.IntN(2) == 0
		case r == 2:
			m.kind, m.n = "int", []int64{0, 1, -1, 600, 1 << 40}[rng.IntN(5)]
		case r == 3:
			m.kind = "strings"
			for range rng.IntN(3) {
				m.ss = append(m.ss, docKeys[rng.IntN(len(docKeys))])
			}
		case r == 4 || depth >= 3:
			m.kind, m.v = "value", randomValue(rng, depth)
		default:
			m.kind, m.members = "object", randomDoc(rng, depth+1)
		}
		d = append(d, m)
	}
	rng.Shuffle(len(d), func(i, j int) { d[i], d[j] = d[j], d[i] })
	return d
}

var scalars = []ast.Value{ast.Null{}, ast.Boolean(true), ast.Boolean(false), ast.Number("1"), ast.Number("1.0"), ast.Number("-2e3"),
	ast.String("x"), ast.String(""), ast.String("1")}

// randomValue is a JSON value (with sets) of every type.
func randomValue(rng *rand.Rand, depth int) ast.Value {
	if depth >= 4 || rng.IntN(3) == 0 {
		return scalars[rng.IntN(len(scalars))]
	}
	var items [][2]*ast.Term
	for _, k := range docKeys {
		if rng.IntN(2) == 0 {
			items = append(items, ast.Item(ast.StringTerm(k), ast.NewTerm(randomValue(rng, depth+1))))
		}
	}
	var elems []*ast.Term
	for _, it := range items {
		elems = append(elems, it[1])
	}
	switch rng.IntN(3) {
	case 0:
		return ast.NewObject(items...)
	case 1:
		return ast.NewArray(elems...)
	}
	return ast.NewSet(elems...)
}

// randomPaths are sorted paths, none inside another, over docKeys.
func randomPaths(rng *rand.Rand) []ast.Ref {
	if rng.IntN(20) == 0 {
		return []ast.Ref{ast.MustParseRef("input")}
	}
	var all []ast.Ref
	for range rng.IntN(6) {
		r := ast.Ref{ast.InputRootDocument}
		for range 1 + rng.IntN(4) {
			r = append(r, ast.StringTerm(docKeys[rng.IntN(len(docKeys))]))
		}
		all = append(all, r)
	}
	return Minimal(all)
}
