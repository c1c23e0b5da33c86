package apikey

import (
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/modelguard/modelguard/test/testkit"
)

// line builds one well-formed line-format entry.
func line(id, key string, extra ...string) string {
	return strings.Join(append([]string{Hash(key), id, "s"}, extra...), " ") + "\n"
}

var validLines = "# API keys for tests\n" +
	"\n" +
	Hash(keyAlice) + " alice-laptop alice roles=chat-user,embeddings\n" +
	"   # an indented comment\n" +
	Hash(keyBob) + "\tbob\tbob@example.com\r\n" +
	Hash(keyOld) + "  old carol roles=batch expires=2026-01-01T00:00:00Z\n" +
	Hash(keyOff) + " off dave disabled expires=2030-06-01T12:00:00+02:00\n"

func TestLinesValid(t *testing.T) {
	set, err := Parse("keys.txt", []byte(validLines))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	checkValid(t, set)
	for name, content := range map[string]string{"only comments": "# no keys yet\n", "blank line": "\n"} {
		if set, err := Parse("keys.txt", []byte(content)); err != nil || set.Len() != 0 {
			t.Errorf("%s: Parse = %v, %v; want an empty set", name, set, err)
		}
	}
}

func TestLinesErrors(t *testing.T) {
	h := Hash(keyAlice)
	tests := []refusal{
		{"empty file", "", 0, "empty file"},
		{"no final newline", line("a", keyAlice) + strings.TrimSuffix(line("b", keyBob), "\n"), 2, "no newline at the end"},
		{"too few fields", h + " a\n", 1, "too few fields"},
		{"YAML in a line file", "keys:\n  - id: a\n", 1, "must be named *.yaml"},
		{"hash is a plaintext key", keyAlice + " a s\n", 1, "hash: want sha256:"},
		{"hash uppercase", "sha256:" + strings.ToUpper(h[7:]) + " a s\n", 1, "64 lowercase hex"},
		{"hash short", h[:70] + " a s\n", 1, "64 lowercase hex"},
		{"hash other algorithm", "md5:" + h[7:] + " a s\n", 1, "64 lowercase hex"},
		{"id bad", h + " a/b s\n", 1, "id: \"a/b\": use ASCII letters"},
		{"id too long", h + " " + strings.Repeat("a", 129) + " s\n", 1, "id: longer than 128"},
		{"subject control character", h + " a al\x01ice\n", 1, "subject: control character"},
		{"subject with a leading no-break space", h + " a \u00a0alice\n", 1, "subject: leading or trailing whitespace"},
		{"unknown field", line("a", keyAlice, "revoked"), 1, `field 4 "revoked": unknown or repeated`},
		{"misspelt option", line("a", keyAlice, "role=x"), 1, "unknown or repeated"},
		{"roles twice", line("a", keyAlice, "roles=a", "roles=b"), 1, "unknown or repeated"},
		{"disabled twice", line("a", keyAlice, "disabled", "disabled"), 1, "unknown or repeated"},
		{"roles empty", line("a", keyAlice, "roles="), 1, "roles: empty"},
		{"role empty", line("a", keyAlice, "roles=a,,b"), 1, `roles: role "": empty`},
		{"expires date only", line("a", keyAlice, "expires=2027-01-01"), 1, "not an RFC 3339 time"},
		{"expires no zone", line("a", keyAlice, "expires=2027-01-01T00:00:00"), 1, "not an RFC 3339 time"},
		{"second line bad", line("a", keyAlice) + line("b", keyBob, "expires=soon"), 2, "expires:"},
		{"duplicate id", line("a", keyAlice) + "# c\n" + line("a", keyBob), 3, `id: duplicate id "a" (first at line 1)`},
		{"duplicate hash", line("a", keyAlice) + line("b", keyAlice), 2, `hash: same hash as id "a" (line 1)`},
		{"line too long", line("a", keyAlice) + h + " b " + strings.Repeat("x", maxLineBytes) + "\n" + line("c", keyCarol), 2, "line longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkRefused(t, "keys.txt", tt.content, tt.line, tt.msg) })
	}
}

// TestLinesReportsProblemsInOrder: every problem, by line, and no more than
// maxReported of them.
func TestLinesReportsProblemsInOrder(t *testing.T) {
	content := line("a", keyAlice, "expires=soon") + line("b", keyBob) + line("b", keyCarol) + line("c", keyBob)
	_, err := Parse("keys.txt", []byte(content))
	var lines []int
	for _, pe := range parseErrors(err) {
		lines = append(lines, pe.Line)
	}
	if len(lines) != 3 || lines[0] != 1 || lines[1] != 3 || lines[2] != 4 {
		t.Errorf("error lines %v, want [1 3 4]; error: %v", lines, err)
	}

	var many strings.Builder
	for range 3 * maxReported {
		many.WriteString("garbage\n")
	}
	_, err = Parse("keys.txt", []byte(many.String()))
	pes := parseErrors(err)
	if len(pes) != maxReported+1 || !strings.Contains(pes[maxReported].Msg, strconv.Itoa(2*maxReported)+" more problems") {
		t.Errorf("%d problems reported for %d bad lines, last %v", len(pes), 3*maxReported, pes[len(pes)-1])
	}
}

// TestFormatByName: the name, not the content, picks the format.
func TestFormatByName(t *testing.T) {
	yaml := "keys:\n" + entry("a", keyAlice)
	for _, tt := range []struct {
		name, content string
		ok            bool
	}{
		{"keys.yaml", yaml, true},
		{"KEYS.YML", yaml, true},
		{"keys.txt", yaml, false},
		{"keys", validLines, true},
		{"keys.yaml", validLines, false},
	} {
		if _, err := Parse(tt.name, []byte(tt.content)); (err == nil) != tt.ok {
			t.Errorf("Parse(%s) = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

// TestLinesReload applies edits to a running Store and checks the keys in
// force, that a refused edit keeps them, and that a reload shares every
// shard the edit did not touch with the set it replaces.
func TestLinesReload(t *testing.T) {
	base := line("alice", keyAlice, "roles=chat-user") + line("bob", keyBob) + line("old", keyOld)
	tests := []struct {
		name    string
		edited  string
		want    map[string]string // key -> reason after the edit ("ok" when usable)
		errLine int               // > 0: the edit is refused with a problem at this line
		rebuilt int               // shards rebuilt when accepted
	}{
		{"append", base + line("carol", keyCarol), map[string]string{keyCarol: "ok", keyAlice: "ok"}, 0, 1},
		{"revoke by disabled", strings.Replace(base, line("bob", keyBob), line("bob", keyBob, "disabled"), 1),
			map[string]string{keyBob: ReasonDisabled, keyAlice: "ok"}, 0, 1},
		{"revoke by deleting", strings.Replace(base, line("bob", keyBob), "", 1),
			map[string]string{keyBob: ReasonUnknown, keyAlice: "ok", keyOld: "ok"}, 0, 1},
		{"expire", strings.Replace(base, line("old", keyOld), line("old", keyOld, "expires=2026-01-01T00:00:00Z"), 1),
			map[string]string{keyOld: ReasonExpired}, 0, 1},
		{"rename a key's id", strings.Replace(base, line("bob", keyBob), line("robert", keyBob), 1),
			map[string]string{keyBob: "ok"}, 0, 1},
		{"change roles", strings.Replace(base, "roles=chat-user", "roles=reader", 1), map[string]string{keyAlice: "ok"}, 0, 1},
		{"same-length edit and an append", strings.Replace(base, "roles=chat-user", "roles=chat-xxxx", 1) + line("carol", keyCarol),
			map[string]string{keyAlice: "ok", keyCarol: "ok"}, 0, 2},
		{"appended after an append", base + line("carol", keyCarol) + line("dave", keyOff, "disabled"),
			map[string]string{keyCarol: "ok", keyOff: ReasonDisabled, keyAlice: "ok"}, 0, 2},
		{"only comments added", "# header\n" + base + "\n# end\n", map[string]string{keyAlice: "ok"}, 0, 0},
		{"reordered", line("old", keyOld) + line("bob", keyBob) + line("alice", keyAlice, "roles=chat-user"),
			map[string]string{keyAlice: "ok"}, 0, 0},
		{"malformed line appended", base + Hash(keyCarol) + " carol\n", nil, 4, 0},
		{"append cut off mid-line", base + Hash(keyCarol) + " carol s roles=adm", nil, 4, 0},
		{"same key appended again", base + line("alice2", keyAlice), nil, 4, 0},
		{"changed key appended again", base + line("alice", keyAlice, "roles=admin"), nil, 4, 0},
		{"appended id in use", base + line("bob", keyCarol), nil, 4, 0},
		{"new line above with a later id", line("old", keyCarol) + base, nil, 4, 0},
		{"key moved to another id in use", strings.Replace(base, line("bob", keyBob), line("alice", keyBob), 1), nil, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys.txt")
			rewriteFile(t, path, base)
			var rec recorder
			s, err := Open(stopped(t), path, Options{Now: fixedNow, OnReload: rec.record})
			if err != nil {
				t.Fatal(err)
			}
			before := s.set.Load()
			replaceFile(t, path, tt.edited)
			err = s.reload()
			if tt.errLine > 0 {
				pes := parseErrors(err)
				if len(pes) == 0 || pes[0].Line != tt.errLine || !strings.HasPrefix(err.Error(), path+":"+strconv.Itoa(tt.errLine)+": ") {
					t.Fatalf("reload() = %v, want a problem at line %d", err, tt.errLine)
				}
				if s.set.Load() != before || !errors.Is(rec.last(), err) {
					t.Fatalf("refused edit changed the set in force or was not reported")
				}
				for _, k := range []string{keyAlice, keyBob, keyOld} {
					if r := reasonOf(s, k); r != "ok" && !(k == keyOld && r == ReasonExpired) {
						t.Errorf("after a refused edit: %s", r)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("reload() = %v", err)
			}
			for k, want := range tt.want {
				if got := reasonOf(s, k); got != want {
					t.Errorf("key %.8s: %s, want %s", k, got, want)
				}
			}
			after := s.set.Load()
			rebuilt := 0
			for i := range after.shards {
				if after.shards[i] != before.shards[i] {
					rebuilt++
				}
			}
			if rebuilt != tt.rebuilt {
				t.Errorf("%d shards rebuilt, want %d", rebuilt, tt.rebuilt)
			}
		})
	}
}

// TestLinesWatched: an append through the file system reaches a watching
// Store.
func TestLinesWatched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.txt")
	rewriteFile(t, path, line("alice", keyAlice))
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := AppendLine(path, line("carol", keyCarol)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the appended key", func() bool { return reasonOf(s, keyCarol) == "ok" })
	if reasonOf(s, keyAlice) != "ok" {
		t.Errorf("alice after the append: %s", reasonOf(s, keyAlice))
	}
}

// TestLinesAppendsInARow: appends applied one after another keep their
// line numbers, and an appended line that clashes with a key in force is
// refused.
func TestLinesAppendsInARow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.txt")
	content := "# keys\n" + line("alice", keyAlice) + line("bob", keyBob)
	rewriteFile(t, path, content)
	s, err := Open(stopped(t), path, Options{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		add     string
		errLine int
		errMsg  string
	}{
		{line("carol", keyCarol), 0, ""},
		{line("old", keyOld), 0, ""},
		{Hash(keyOff) + " off\n", 6, "too few fields"},
		{line("alice", keyOff), 6, `id: duplicate id "alice" (first at an earlier line)`},
		{line("off", keyBob), 6, `hash: same hash as id "bob" (an earlier line)`},
		{line("off", keyOff, "disabled"), 0, ""},
	}
	for i, st := range steps {
		rewriteFile(t, path, content+st.add)
		err := s.reload()
		if st.errLine == 0 {
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			content += st.add
			continue
		}
		if pes := parseErrors(err); len(pes) != 1 || pes[0].Line != st.errLine || !strings.Contains(pes[0].Msg, st.errMsg) {
			t.Fatalf("step %d: reload() = %v, want line %d: %s", i, err, st.errLine, st.errMsg)
		}
	}
	for k, want := range map[string]string{keyAlice: "ok", keyBob: "ok", keyCarol: "ok", keyOld: "ok", keyOff: ReasonDisabled} {
		if got := reasonOf(s, k); got != want {
			t.Errorf("key %.8s: %s, want %s", k, got, want)
		}
	}
	if set := s.set.Load(); set.lines != 6 || set.Len() != 5 {
		t.Errorf("set in force: %d lines, %d keys; want 6 and 5", set.lines, set.Len())
	}
}
