package apikey

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary key files to the parser, in both formats (YAML
// and one key per line): it never panics, a refused file yields no Set and
// only located *ParseErrors naming the file, and an accepted file yields
// only keys whose fields pass the same checks an operator's file must pass.
func FuzzParse(f *testing.F) {
	const hash = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	for _, s := range []string{
		"keys:\n  - id: alice-laptop\n    hash: " + hash + "\n    subject: alice\n    roles: [chat-user]\n    expires_at: 2027-01-01T00:00:00Z\n",
		"keys: []\n", "", "keys:\n", "keys: {}\n", "- a\n", "keys:\n  - x\n",
		"keys:\n  - {id: a, hash: " + hash + ", subject: s, disabled: no}\n",
		"keys:\n  - {id: a, hash: " + hash + ", subject: s}\n  - {id: a, hash: " + hash + ", subject: s}\n",
		"keys:\n  - &k {id: a, hash: " + hash + ", subject: s}\n  - *k\n",
		"keys:\n  - {id: a, hash: " + strings.ToUpper(hash) + ", subject: \"a\\nb\", roles: [\"x,y\"]}\n",
		"keys: []\n---\nkeys: []\n", "keys:\n  - {id: a, hash: sha256:zz, subject: s, extra: 1}\n",
		"keys:\n  - {id: a, hash: " + hash + ", subject: s, expires_at: 2027-13-01}\n",
		hash + " alice-laptop alice roles=chat-user,reader expires=2027-01-01T00:00:00Z\n",
		"# none\n", hash + " a s disabled\n" + hash + " b s\n", hash + " a s", hash + "\ta\ts\troles=\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, name := range []string{"keys.yaml", "keys.lines"} {
			checkParse(t, name, data)
		}
	})
}

func checkParse(t *testing.T, name string, data []byte) {
	t.Helper()
	set, err := Parse(name, data)
	if err != nil {
		if set != nil {
			t.Fatalf("%s %q: a refused file returned a set", name, data)
		}
		for _, e := range unjoin(err) {
			var pe *ParseError
			if !errors.As(e, &pe) || pe.File != name {
				t.Fatalf("%s %q: error %v (%T) is not a *ParseError naming the file", name, data, e, e)
			}
		}
		return
	}
	var keys []Key
	for _, sh := range set.shards {
		if sh != nil {
			keys = append(keys, sh.keys...)
		}
	}
	if len(keys) != set.Len() {
		t.Fatalf("%s %q: %d keys in the shards, Len %d", name, data, len(keys), set.Len())
	}
	for _, k := range keys {
		if msg := checkID(k.ID); msg != "" {
			t.Fatalf("%s %q: accepted id %q: %s", name, data, k.ID, msg)
		}
		if msg := checkSubject(k.Subject); msg != "" {
			t.Fatalf("%s %q: accepted subject %q: %s", name, data, k.Subject, msg)
		}
		for _, r := range k.Roles {
			if msg := checkRole(r); msg != "" {
				t.Fatalf("%s %q: accepted role %q: %s", name, data, r, msg)
			}
		}
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
