package apikey

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/modelguard/modelguard/policy/yamlerr"
)

// ParseError is one problem in a key file, located by file and line (0 when
// the problem has no line, such as an empty file).
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Load reads and validates a key file, YAML if its name ends in .yaml or
// .yml, one key per line otherwise. Each problem found is a *ParseError
// (several are joined with errors.Join); a file with any problem yields no
// Set, so a typo never half-applies.
func Load(path string) (*Set, error) {
	set, _, err := load(path, nil)
	return set, err
}

// Parse validates key file content; name picks the format, as in Load, and
// is used in error messages.
func Parse(name string, data []byte) (*Set, error) {
	set, _, err := read(name, bytes.NewReader(data), int64(len(data)), nil)
	return set, err
}

// load reads the file at path into a Set that shares the shards prev (nil
// for none) has in common with it. It also returns the SHA-256 of the
// content it parsed, good or bad, or zero if it could not read it whole.
func load(path string, prev *Set) (*Set, [32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("read key file: %w", err)
	}
	defer f.Close()
	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	return read(path, f, size, prev)
}

// read parses a key file of about size bytes (a hint for allocation), as
// load does.
func read(name string, r io.Reader, size int64, prev *Set) (*Set, [32]byte, error) {
	h := sha256.New()
	if isYAML(name) {
		// YAML needs the whole document; the line format streams.
		data, err := io.ReadAll(io.TeeReader(r, h))
		if err != nil {
			return nil, [32]byte{}, fmt.Errorf("read key file: %w", err)
		}
		sum := [32]byte(h.Sum(nil))
		set, err := parseYAML(name, data, sum, prev)
		return set, sum, err
	}
	return parseLines(name, r, size, h, prev)
}

// isYAML tells the formats apart by the file's name, so that no setting is
// needed and a file's format never changes with its content.
func isYAML(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

// maxReported bounds the problems reported for one file: an operator needs
// the first few, and a wrong file (say, a binary) must not log a million.
const maxReported = 20

// problems turns the problems found into the error Load returns.
func problems(name string, errs []*ParseError) error {
	slices.SortStableFunc(errs, func(x, y *ParseError) int { return cmp.Compare(x.Line, y.Line) })
	if len(errs) == 1 {
		return errs[0]
	}
	out := make([]error, 0, min(len(errs), maxReported)+1)
	for _, e := range errs[:min(len(errs), maxReported)] {
		out = append(out, e)
	}
	if len(errs) > maxReported {
		out = append(out, &ParseError{File: name, Msg: fmt.Sprintf("%d more problems not shown", len(errs)-maxReported)})
	}
	return errors.Join(out...) // the set is dropped: a file is used whole or not at all
}

type fileDoc struct {
	Keys []fileEntry `yaml:"keys"`
}

type fileEntry struct {
	ID        string   `yaml:"id"`
	Hash      string   `yaml:"hash"`
	Subject   string   `yaml:"subject"`
	Roles     []string `yaml:"roles"`
	ExpiresAt string   `yaml:"expires_at"` // parsed by us: strict RFC 3339 with a line number
	Disabled  bool     `yaml:"disabled"`
}

const hashPrefix = "sha256:"

// parseYAML reads the document as a yaml.Node first, checking its shape
// (a keys list of mappings, known fields, each of the kind it needs) in
// the key file's own terms, then decodes it into structs with KnownFields
// as a second line of defence; the nodes give the lines that the
// validation errors need.
func parseYAML(name string, data []byte, sum [32]byte, prev *Set) (*Set, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ParseError{File: name, Msg: "empty file: want a keys list (keys: [] for none)"}
		}
		return nil, yamlErrors(name, data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlErrors(name, data, err)
		}
		return nil, &ParseError{File: name, Line: extra.Line, Msg: "more than one YAML document"}
	}
	if line := findAlias(&root); line > 0 {
		// Aliases and merge keys would break the index match between the
		// decoded entries and their nodes; a key file has no use for them.
		return nil, &ParseError{File: name, Line: line, Msg: "YAML aliases are not allowed in a key file"}
	}
	top := root.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, &ParseError{File: name, Line: top.Line, Msg: "want a mapping with a keys list"}
	}
	for j := 0; j+1 < len(top.Content); j += 2 {
		if k := top.Content[j]; k.Value != "keys" {
			return nil, &ParseError{File: name, Line: k.Line, Msg: fmt.Sprintf("%s: unknown field; the file holds only keys, a list of entries", k.Value)}
		}
	}
	list := valueOf(top, "keys")
	if list == nil || list.Kind != yaml.SequenceNode {
		line := top.Line
		if list != nil {
			line = list.Line
		}
		return nil, &ParseError{File: name, Line: line, Msg: "keys: want a list (keys: [] for none)"}
	}
	var errs []*ParseError
	for i, n := range list.Content {
		if n.Kind != yaml.MappingNode {
			return nil, &ParseError{File: name, Line: n.Line, Msg: fmt.Sprintf("keys[%d]: want a mapping with id, hash and subject", i)}
		}
		errs = append(errs, entryShape(name, i, n)...)
	}
	if len(errs) > 0 {
		return nil, problems(name, errs)
	}
	var doc fileDoc
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&doc); err != nil {
		return nil, yamlErrors(name, data, err) // the shape checks passed, so unexpected
	}
	if len(list.Content) != len(doc.Keys) {
		return nil, &ParseError{File: name, Line: list.Line, Msg: "keys: entries could not be matched to lines"}
	}

	b := newBuilder(name, prev, len(doc.Keys))
	for i, e := range doc.Keys {
		n := list.Content[i]
		line := func(field string) int { return lineOf(n, field) }
		bad := func(field, format string, args ...any) {
			errs = append(errs, &ParseError{File: name, Line: line(field),
				Msg: fmt.Sprintf("keys[%d].%s: %s", i, field, fmt.Sprintf(format, args...))})
		}
		idMsg := checkID(e.ID)
		if idMsg != "" {
			bad("id", "%s", idMsg)
		}
		digest, hashMsg := parseHash(e.Hash)
		if hashMsg != "" {
			bad("hash", "%s", hashMsg)
		}
		if msg := checkSubject(e.Subject); msg != "" {
			bad("subject", "%s", msg)
		}
		for j, r := range e.Roles {
			if msg := checkRole(r); msg != "" {
				bad("roles", "role %d %q: %s", j, r, msg)
			}
		}
		var expires time.Time
		if e.ExpiresAt != "" {
			t, err := time.Parse(time.RFC3339, e.ExpiresAt)
			if err != nil {
				bad("expires_at", "%q is not an RFC 3339 time such as 2027-01-01T00:00:00Z", e.ExpiresAt)
			}
			expires = t
		}
		if idMsg == "" && hashMsg == "" {
			// Duplicates are looked for among entries with a usable id and hash.
			e := &record{
				origin:   origin{digest: digest, idLine: int32(line("id")), hashLine: int32(line("hash")), index: int32(i)},
				id:       []byte(e.ID),
				subject:  []byte(e.Subject),
				roles:    []byte(strings.Join(e.Roles, ",")),
				expires:  expires,
				disabled: e.Disabled,
			}
			if !b.match(e) {
				b.add(e)
			}
		}
	}
	set, berrs := b.finish(sum)
	if errs = append(errs, berrs...); len(errs) > 0 {
		return nil, problems(name, errs)
	}
	return set, nil
}

// entryFields are the fields of a YAML key entry, in the order the
// documentation lists them.
const entryFields = "id, hash, subject, roles, expires_at, disabled"

// entryShape checks that entry i has only known fields, each of the kind
// it needs, so that a mistake reads in the file's terms rather than the
// decoder's. The decoder reads "disabled:" (null) and "disabled: no" as
// false and "expires_at:" as never; a revocation must not hinge on such
// guesses. (A null id, hash or subject is reported as missing later.)
func entryShape(name string, i int, n *yaml.Node) []*ParseError {
	var errs []*ParseError
	for j := 0; j+1 < len(n.Content); j += 2 {
		field, v := n.Content[j].Value, n.Content[j+1]
		bad := func(format string, args ...any) {
			errs = append(errs, &ParseError{File: name, Line: v.Line,
				Msg: fmt.Sprintf("keys[%d].%s: %s", i, field, fmt.Sprintf(format, args...))})
		}
		switch field {
		case "id", "hash", "subject", "expires_at", "disabled":
		case "roles":
			if v.Kind != yaml.SequenceNode && v.ShortTag() != "!!null" {
				bad("want a list of role names such as [reader, chat-user], got %s", kind(v))
				continue
			}
			for _, r := range v.Content {
				if r.Kind != yaml.ScalarNode {
					bad("want a list of role names such as [reader, chat-user], got %s in it", kind(r))
				}
			}
		default:
			errs = append(errs, &ParseError{File: name, Line: n.Content[j].Line,
				Msg: fmt.Sprintf("keys[%d].%s: unknown field; valid fields: %s", i, field, entryFields)})
			continue
		}
		switch {
		case field != "roles" && v.Kind != yaml.ScalarNode:
			bad("want a single value, got %s", kind(v))
		case (field == "roles" || field == "expires_at" || field == "disabled") && v.ShortTag() == "!!null":
			bad("no value: omit the field instead")
		case field == "disabled" && v.ShortTag() != "!!bool":
			bad("%q: want true or false", v.Value)
		}
	}
	return errs
}

// kind names a node's kind as the key file's messages do.
func kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "a single value"
}

// valueOf returns the value node of key in a mapping node, or nil.
func valueOf(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// lineOf is the line of a field's value, or of the mapping when it is absent.
func lineOf(m *yaml.Node, key string) int {
	if v := valueOf(m, key); v != nil {
		return v.Line
	}
	return m.Line
}

// findAlias returns the line of the first alias or merge key, or 0.
func findAlias(n *yaml.Node) int {
	if n.Kind == yaml.AliasNode || n.Tag == "!!merge" {
		return n.Line
	}
	for _, c := range n.Content {
		if line := findAlias(c); line > 0 {
			return line
		}
	}
	return 0
}

// yamlErrors turns the decoder's "line N: msg" strings into ParseErrors; a
// syntax error is placed on the line of the mistake (yamlerr).
func yamlErrors(name string, data []byte, err error) error {
	if line, msg, ok := yamlerr.Locate(data, err); ok {
		return &ParseError{File: name, Line: line, Msg: msg}
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		if len(te.Errors) == 1 {
			return lineError(name, te.Errors[0])
		}
		errs := make([]error, 0, len(te.Errors))
		for _, s := range te.Errors {
			errs = append(errs, lineError(name, s))
		}
		return errors.Join(errs...)
	}
	return lineError(name, strings.TrimPrefix(err.Error(), "yaml: "))
}

func lineError(name, s string) *ParseError {
	if rest, ok := strings.CutPrefix(s, "line "); ok {
		if num, msg, ok := strings.Cut(rest, ": "); ok {
			if line, err := strconv.Atoi(num); err == nil {
				return &ParseError{File: name, Line: line, Msg: msg}
			}
		}
	}
	return &ParseError{File: name, Msg: s}
}

const maxIDBytes = 128

// checkID keeps ids safe for headers, logs and metrics labels.
func checkID(id string) string {
	if id == "" {
		return "missing"
	}
	if len(id) > maxIDBytes {
		return fmt.Sprintf("longer than %d bytes", maxIDBytes)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && strings.IndexByte("-_.:@", c) < 0 {
			return fmt.Sprintf("%q: use ASCII letters, digits and - _ . : @", id)
		}
	}
	return ""
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// hashSyntax names the command that writes valid entries.
const hashSyntax = "want sha256: followed by 64 lowercase hex digits, the SHA-256 of the key (modelguard keys mint prints the entry to add)"

// parseHash decodes "sha256:" and 64 lowercase hex digits. It takes bytes
// and does not allocate: the line format calls it for every line.
func parseHash[T string | []byte](h T) ([32]byte, string) {
	var d [32]byte
	if len(h) == 0 {
		return d, "missing"
	}
	if len(h) != len(hashPrefix)+2*len(d) || string(h[:len(hashPrefix)]) != hashPrefix {
		return d, hashSyntax
	}
	hx := h[len(hashPrefix):]
	for i := range d {
		hi, lo := lowerHex[hx[2*i]], lowerHex[hx[2*i+1]]
		if hi|lo > 0xf {
			return d, hashSyntax
		}
		d[i] = hi<<4 | lo
	}
	return d, ""
}

// lowerHex maps lowercase hex digits to their value and every other byte to
// 0xff. It is encoding/hex's decoding without the uppercase digits (a key
// has one spelling), as a table: it runs for every line of a key file.
var lowerHex = func() (t [256]byte) {
	for i := range t {
		switch c := byte(i); {
		case '0' <= c && c <= '9':
			t[i] = c - '0'
		case 'a' <= c && c <= 'f':
			t[i] = c - 'a' + 10
		default:
			t[i] = 0xff
		}
	}
	return t
}()

// checkSubject refuses subjects that could be confused with others or break
// the identity header they are copied to.
func checkSubject(s string) string {
	if strings.TrimSpace(s) == "" {
		return "missing"
	}
	if strings.TrimSpace(s) != s {
		return "leading or trailing whitespace"
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return "control character"
		}
	}
	return ""
}

// checkRole refuses roles that would not survive the comma-separated roles
// header.
func checkRole(r string) string {
	if r == "" {
		return "empty"
	}
	for _, c := range r {
		if unicode.IsSpace(c) || unicode.IsControl(c) || c == ',' {
			return "whitespace, control characters and commas are not allowed"
		}
	}
	return ""
}
