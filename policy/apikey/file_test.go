package apikey

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Fixed test keys; their hashes go into the files below.
const (
	keyAlice = "mg_alice0000000000000000000000000000000000000"
	keyBob   = "mg_bob000000000000000000000000000000000000000"
	keyCarol = "mg_carol0000000000000000000000000000000000000"
	keyOld   = "mg_old000000000000000000000000000000000000000"
	keyOff   = "mg_off000000000000000000000000000000000000000"
)

// validFile exercises every field, comments and both optional fields.
var validFile = `# API keys for tests
keys:
  - id: alice-laptop
    hash: ` + Hash(keyAlice) + `   # alice's key
    subject: alice
    roles: [chat-user, embeddings]
  - id: bob
    hash: ` + Hash(keyBob) + `
    subject: bob@example.com
  - id: old
    hash: ` + Hash(keyOld) + `
    subject: carol
    roles:
      - batch
    expires_at: 2026-01-01T00:00:00Z
  - id: off
    hash: ` + Hash(keyOff) + `
    subject: dave
    disabled: true
    expires_at: 2030-06-01T12:00:00+02:00
`

func TestLoadValid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(path, []byte(validFile), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(set.Revision()) {
		t.Errorf("Revision = %q, want 12 lowercase hex digits", set.Revision())
	}
	other, err := Parse("x.yaml", []byte(validFile+"# a comment changes the revision\n"))
	if err != nil {
		t.Fatal(err)
	}
	if other.Revision() == set.Revision() {
		t.Errorf("different content, same revision %s", set.Revision())
	}

	checkValid(t, set)
}

// checkValid checks a set loaded from validFile or validLines, which hold
// the same keys.
func checkValid(t *testing.T, set *Set) {
	t.Helper()
	tests := []struct {
		key  string
		want Key
	}{
		{keyAlice, Key{ID: "alice-laptop", Subject: "alice", Roles: []string{"chat-user", "embeddings"}}},
		{keyBob, Key{ID: "bob", Subject: "bob@example.com"}},
		{keyOld, Key{ID: "old", Subject: "carol", Roles: []string{"batch"},
			ExpiresAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{keyOff, Key{ID: "off", Subject: "dave", Disabled: true,
			ExpiresAt: time.Date(2030, 6, 1, 10, 0, 0, 0, time.UTC)}},
	}
	if set.Len() != len(tests) {
		t.Errorf("Len = %d, want %d", set.Len(), len(tests))
	}
	for _, tt := range tests {
		d := digestOf(tt.key)
		if got := set.find(&d); got == nil || !sameKey(got, &tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.want.ID, got, tt.want)
		}
	}
}

func sameKey(a, b *Key) bool {
	return a.ID == b.ID && a.Subject == b.Subject && a.Disabled == b.Disabled &&
		a.ExpiresAt.Equal(b.ExpiresAt) && strings.Join(a.Roles, ",") == strings.Join(b.Roles, ",")
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want ErrNotExist", err)
	}
}

// entry builds one well-formed entry with the given extra lines, so that each
// error case below changes one thing. Line numbers: "keys:" is 1, "- id" 2,
// hash 3, subject 4, extra lines from 5.
func entry(id, key string, extra ...string) string {
	s := "  - id: " + id + "\n    hash: " + Hash(key) + "\n    subject: s\n"
	for _, e := range extra {
		s += "    " + e + "\n"
	}
	return s
}

func TestLoadErrors(t *testing.T) {
	h := Hash(keyAlice)
	tests := []refusal{
		{"empty file", "", 0, "empty file"},
		{"only a comment", "# nothing\n", 0, "empty file"},
		// Syntax error lines are yaml.v3's own.
		{"syntax error", "keys:\n  - id: a\n    hash: x\n    subject: abc: d\n", 4, "mapping values are not allowed"},
		{"unclosed quote", "keys:\n  - id: a\n    hash: x\n    subject: \"abc\n", 4, "unexpected end of stream"},
		{"unknown top-level key", "keys: []\nextra: 1\n", 2, "extra: unknown field; the file holds only keys"},
		{"unknown entry key", "keys:\n" + entry("a", keyAlice, "owner: x"), 5, "keys[0].owner: unknown field; valid fields: id, hash, subject, roles, expires_at, disabled"},
		{"misspelt field", "keys:\n" + entry("a", keyAlice, "expires: 2027-01-01T00:00:00Z"), 5, "keys[0].expires: unknown field"},
		{"duplicate mapping key", "keys:\n" + entry("a", keyAlice, "subject: t"), 5, `"subject" already defined`},
		{"roles not a list", "keys:\n" + entry("a", keyAlice, "roles: chat-user"), 5, "keys[0].roles: want a list of role names such as [reader, chat-user], got a single value"},
		{"roles a mapping", "keys:\n" + entry("a", keyAlice, "roles: {a: b}"), 5, "got a mapping"},
		{"disabled an int", "keys:\n" + entry("a", keyAlice, "disabled: 1"), 5, "want true or false"},
		{"disabled yes", "keys:\n" + entry("a", keyAlice, "disabled: yes"), 5, "want true or false"},
		{"disabled null", "keys:\n" + entry("a", keyAlice, "disabled:"), 5, "no value"},
		{"expires_at null", "keys:\n" + entry("a", keyAlice, "expires_at: ~"), 5, "no value"},
		{"roles null", "keys:\n" + entry("a", keyAlice, "roles:"), 5, "no value"},
		{"expires_at date only", "keys:\n" + entry("a", keyAlice, "expires_at: 2027-01-01"), 5, "not an RFC 3339 time"},
		{"expires_at garbage", "keys:\n" + entry("a", keyAlice, "expires_at: next year"), 5, "not an RFC 3339 time"},
		{"expires_at no zone", "keys:\n" + entry("a", keyAlice, `expires_at: "2027-01-01T00:00:00"`), 5, "not an RFC 3339 time"},
		{"duplicate id", "keys:\n" + entry("a", keyAlice) + entry("a", keyBob), 5, `duplicate id "a" (first at line 2)`},
		{"duplicate hash", "keys:\n" + entry("a", keyAlice) + entry("b", keyAlice), 6, `same hash as id "a" (line 3)`},
		{"hash uppercase", "keys:\n  - id: a\n    hash: " + strings.ToUpper(h[:7]) + strings.ToUpper(h[7:]) + "\n    subject: s\n", 3, "64 lowercase hex"},
		{"hash uppercase hex", "keys:\n  - id: a\n    hash: sha256:" + strings.ToUpper(h[7:]) + "\n    subject: s\n", 3, "64 lowercase hex"},
		{"hash other algorithm", "keys:\n  - id: a\n    hash: md5:" + h[7:] + "\n    subject: s\n", 3, "64 lowercase hex"},
		{"hash short", "keys:\n  - id: a\n    hash: " + h[:70] + "\n    subject: s\n", 3, "64 lowercase hex"},
		{"hash not hex", "keys:\n  - id: a\n    hash: sha256:" + strings.Repeat("g", 64) + "\n    subject: s\n", 3, "64 lowercase hex"},
		{"hash is a plaintext key", "keys:\n  - id: a\n    hash: " + keyAlice + "\n    subject: s\n", 3, "64 lowercase hex"},
		{"hash missing", "keys:\n  - id: a\n    subject: s\n", 2, "hash: missing"},
		{"id missing", "keys:\n  - hash: " + h + "\n    subject: s\n", 2, "id: missing"},
		{"id with space", "keys:\n  - id: alice laptop\n    hash: " + h + "\n    subject: s\n", 2, "use ASCII letters"},
		{"id too long", "keys:\n  - id: " + strings.Repeat("a", 129) + "\n    hash: " + h + "\n    subject: s\n", 2, "longer than 128"},
		{"subject empty", "keys:\n  - id: a\n    hash: " + h + "\n    subject: \"\"\n", 4, "subject: missing"},
		{"subject blank", "keys:\n  - id: a\n    hash: " + h + "\n    subject: \"  \"\n", 4, "subject: missing"},
		{"subject missing", "keys:\n  - id: a\n    hash: " + h + "\n", 2, "subject: missing"},
		{"subject padded", "keys:\n  - id: a\n    hash: " + h + "\n    subject: \" alice\"\n", 4, "whitespace"},
		{"subject control char", "keys:\n  - id: a\n    hash: " + h + "\n    subject: \"al\\nice\"\n", 4, "control character"},
		{"role with comma", "keys:\n" + entry("a", keyAlice, `roles: ["a,b"]`), 5, "commas"},
		{"role empty", "keys:\n" + entry("a", keyAlice, `roles: [""]`), 5, "empty"},
		{"second entry bad", "keys:\n" + entry("a", keyAlice) + entry("b", keyBob, "expires_at: soon"), 8, "keys[1].expires_at"},
		{"keys missing", "{}\n", 1, "keys: want a list"},
		{"keys null", "keys:\n", 1, "keys: want a list"},
		{"keys a string", "keys: all\n", 1, "keys: want a list"},
		{"top level a list", "- keys\n", 1, "want a mapping with a keys list"},
		{"entry a string", "keys:\n  - alice\n", 2, "keys[0]: want a mapping with id, hash and subject"},
		{"id a list", "keys:\n  - id: [a]\n    hash: " + h + "\n    subject: s\n", 2, "keys[0].id: want a single value, got a list"},
		{"role a list", "keys:\n" + entry("a", keyAlice, "roles: [[a]]"), 5, "got a list in it"},
		// yaml.v3 says line 4 (the entry's start, counted from 0).
		{"unclosed roles list", "keys:\n" + entry("a", keyAlice, "roles: [a, b", "disabled: true"), 5, "did not find expected ',' or ']'"},
		{"entry null", "keys:\n  -\n", 2, "want a mapping"},
		{"second document", "keys: []\n---\nkeys: []\n", 2, "more than one YAML document"},
		{"alias", "keys:\n  - &e {id: a, hash: " + h + ", subject: s}\n  - *e\n", 3, "aliases are not allowed"},
		{"merge key", "keys:\n  - &e {id: a, hash: " + h + ", subject: s}\n  - <<: *e\n    id: b\n", 3, "aliases are not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkRefused(t, "keys.yaml", tt.content, tt.line, tt.msg) })
	}
}

// refusal is a file that must be refused, with its first problem.
type refusal struct {
	name    string
	content string
	line    int
	msg     string
}

// checkRefused parses content as the file name and checks that it is
// refused, first with a problem at line (0: none) holding msg, named
// name:line: and without a plaintext test key.
func checkRefused(t *testing.T, name, content string, line int, msg string) {
	t.Helper()
	set, err := Parse(name, []byte(content))
	if err == nil {
		t.Fatalf("Parse succeeded (%d keys), want an error at line %d", set.Len(), line)
	}
	if set != nil {
		t.Errorf("Parse returned a set along with %v", err)
	}
	pes := parseErrors(err)
	if len(pes) == 0 {
		t.Fatalf("error %v holds no *ParseError", err)
	}
	pe := pes[0]
	if pe.File != name || pe.Line != line || !strings.Contains(pe.Msg, msg) {
		t.Errorf("got %q (line %d), want line %d containing %q", err, pe.Line, line, msg)
	}
	prefix := name + ": "
	if line > 0 {
		prefix = name + ":" + strconv.Itoa(line) + ": "
	}
	if !strings.HasPrefix(err.Error(), prefix) {
		t.Errorf("error %q does not start with %q", err, prefix)
	}
	if strings.Contains(err.Error(), keyAlice) {
		t.Errorf("error %q holds a plaintext key", err)
	}
	// The operator reads the key file's terms, not the decoder's Go types.
	for _, goTerm := range []string{"apikey.", "unmarshal", "!!", "[]string"} {
		if strings.Contains(err.Error(), goTerm) {
			t.Errorf("error %q speaks Go (%q)", err, goTerm)
		}
	}
}

// TestLoadReportsEveryProblem: an operator fixing a file sees all problems at
// once, and the good entries of a bad file are not used.
func TestLoadReportsEveryProblem(t *testing.T) {
	tests := []struct {
		name    string
		content string
		lines   []int
	}{
		{"validation", "keys:\n" + entry("a", keyAlice, "expires_at: soon") + entry("b", keyBob) + entry("a", keyCarol, `roles: [""]`), []int{5, 9, 12}},
		{"types", "keys:\n" + entry("a", keyAlice, "roles: x") + entry("b", keyBob, "disabled: 1"), []int{5, 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := Parse("keys.yaml", []byte(tt.content))
			var lines []int
			for _, pe := range parseErrors(err) {
				lines = append(lines, pe.Line)
			}
			if set != nil || !slices.Equal(lines, tt.lines) {
				t.Fatalf("set %v, error lines %v, want no set and %v; error: %v", set, lines, tt.lines, err)
			}
		})
	}
}

func parseErrors(err error) []*ParseError {
	var out []*ParseError
	var walk func(error)
	walk = func(e error) {
		if pe, ok := e.(*ParseError); ok {
			out = append(out, pe)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
		}
	}
	walk(err)
	return out
}

func digestOf(key string) [32]byte { return sha256.Sum256([]byte(key)) }
