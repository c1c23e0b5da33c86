package audit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// chainOf encodes n records, seq 1 to n, as a writer would: decisions, each
// followed by its completion (as Kong records them).
func chainOf(n int, key []byte) [][]byte {
	c := newChainHash(key)
	var prev digest
	lines := make([][]byte, n)
	for i := range lines {
		e := Event{Time: time.Unix(1700000000+int64(i), 0), Kind: KindDecision, DecisionID: fmt.Sprintf("d%d", i/2+1),
			Subject: "alice", Method: "POST", Path: "/v1/chat/completions", Result: "allow", Status: 200, Reason: "allowed"}
		if i%2 == 1 {
			e = Event{Time: time.Unix(1700000000+int64(i), 0), Kind: KindCompletion, DecisionID: fmt.Sprintf("d%d", i/2+1),
				Gateway: "kong", Status: 200, Reason: "allowed", LatencyMicros: 1500}
		}
		lines[i], prev = appendRecord(nil, &e, uint64(i+1), &prev, c)
	}
	return lines
}

// reencode rebuilds lines[from:] as someone who edits the file would: with
// each record's content as it now reads, chained to the record before, under
// key (nil: plain SHA-256).
func reencode(t *testing.T, lines [][]byte, from int, key []byte) [][]byte {
	t.Helper()
	out := slices.Clone(lines)
	c := newChainHash(key)
	var prev digest
	if from > 0 {
		_, sum, err := lineSeqHash(lines[from-1])
		if err != nil {
			t.Fatal(err)
		}
		prev = sum
	}
	for i := from; i < len(out); i++ {
		var e Event
		e, _, _, _ = checkLine(out[i], c, nil)
		out[i], prev = appendRecord(nil, &e, e.Seq, &prev, c)
	}
	return out
}

func writeSet(t *testing.T, files ...[][]byte) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i, lines := range files {
		p := filepath.Join(dir, fmt.Sprintf("audit.jsonl.%020d", i))
		if err := os.WriteFile(p, bytes.Join(lines, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

func TestVerifyDetectsTampering(t *testing.T) {
	good := chainOf(6, nil)
	edit := func(i int, old, new string) [][]byte {
		out := slices.Clone(good)
		out[i] = bytes.Replace(out[i], []byte(old), []byte(new), 1)
		return out
	}
	swapped := slices.Clone(good)
	swapped[2], swapped[3] = swapped[3], swapped[2]
	forged := func() [][]byte {
		// A record with the right seq and prev and a valid SHA-256, inserted
		// after record 3: only the next record shows it.
		seq3, hash3, _ := lineSeqHash(good[2])
		e := Event{Time: time.Unix(1, 0), Kind: KindDecision, Subject: "mallory", Result: "allow"}
		line, _ := appendRecord(nil, &e, seq3+1, &hash3, newChainHash(nil))
		return slices.Insert(slices.Clone(good), 3, line)
	}()

	tests := []struct {
		name    string
		lines   [][]byte
		line    int
		problem string
	}{
		{"field edited", edit(2, `"alice"`, `"bob"`), 3, "record edited: its hash does not match"},
		{"field edited, its hash recomputed", reencode(t, edit(2, `"alice"`, `"bob"`), 2, nil)[:3:3], 0, ""}, // alone it verifies: see next
		{"field edited, hashes from there recomputed, one record kept", append(reencode(t, edit(2, `"alice"`, `"bob"`), 2, nil)[:3:3], good[3:]...), 4, "chain broken"},
		{"member added", edit(2, `,"reason"`, `,"note":"x","reason"`), 3, "not in the canonical encoding"},
		{"completion's status edited", edit(3, `"status":200`, `"status":500`), 4, "record edited: its hash does not match"},
		{"record deleted", slices.Delete(slices.Clone(good), 2, 3), 3, "record deleted or moved: seq 4, want 3"},
		{"records swapped", swapped, 3, "record deleted or moved: seq 4, want 3"},
		{"record duplicated", slices.Insert(slices.Clone(good), 3, good[1]), 4, "record inserted, duplicated or moved: seq 2, want 4"},
		{"forged record inserted", forged, 5, "record inserted, duplicated or moved: seq 4, want 5"},
		{"first record deleted", good[1:], 1, "records deleted before this one: the trail starts at seq 2"},
		{"last record truncated", append(slices.Clone(good[:5]), good[5][:40]), 6, "truncated record"},
		{"middle record cut short", append(append(slices.Clone(good[:2]), append(good[2][:40:40], '\n')), good[3:]...), 3, "not a record"},
		{"empty line", slices.Insert(slices.Clone(good), 2, []byte("\n")), 3, "not a record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			paths := writeSet(t, tt.lines)
			_, err := VerifyFiles(paths, VerifyOptions{})
			if tt.line == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("got %v, want a VerifyError at line %d", err, tt.line)
			}
			if ve.File != paths[0] || ve.Line != tt.line || !strings.Contains(ve.Problem, tt.problem) {
				t.Errorf("got %v, want %s:%d: %s...", err, paths[0], tt.line, tt.problem)
			}
		})
	}
}

func TestVerifyGoodTrail(t *testing.T) {
	good := chainOf(6, nil)
	sum, err := VerifyFiles(writeSet(t, good), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, last, _ := lineSeqHash(good[5])
	want := Summary{Files: 1, Records: 6, FirstSeq: 1, LastSeq: 6, FirstPrev: strings.Repeat("0", 64), LastHash: fmt.Sprintf("%x", last)}
	if sum != want {
		t.Errorf("summary %+v, want %+v", sum, want)
	}
	if _, err := VerifyFiles(writeSet(t, nil), VerifyOptions{}); err == nil || !strings.Contains(err.Error(), "no records") {
		t.Errorf("an empty trail verified: %v", err)
	}
	if _, err := VerifyFiles([]string{filepath.Join(t.TempDir(), "missing")}, VerifyOptions{}); err == nil {
		t.Error("a missing file verified")
	}
}

// A rotated set is one chain across files: a missing, misplaced or edited
// file is reported at the right file and line.
func TestVerifyRotationSet(t *testing.T) {
	good := chainOf(9, nil)
	f1, f2, f3 := good[:3], good[3:6], good[6:]
	edited := slices.Clone(f2)
	edited[1] = bytes.Replace(edited[1], []byte(`"allow"`), []byte(`"deny"`), 1)

	sum, err := VerifyFiles(writeSet(t, f1, f2, f3), VerifyOptions{})
	if err != nil || sum.Files != 3 || sum.Records != 9 || sum.LastSeq != 9 {
		t.Fatalf("good set: %+v %v", sum, err)
	}
	tests := []struct {
		name  string
		files [][][]byte
		file  int // index of the file reported
		line  int
		want  string
	}{
		{"middle file missing", [][][]byte{f1, f3}, 1, 1, "seq 7, want 4"},
		{"files out of order", [][][]byte{f1, f3, f2}, 1, 1, "seq 7, want 4"},
		{"record edited in the middle file", [][][]byte{f1, edited, f3}, 1, 2, "record edited"},
		{"rotated file truncated", [][][]byte{append(slices.Clone(f1[:2]), f1[2][:10]), f2, f3}, 0, 3, "truncated record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			paths := writeSet(t, tt.files...)
			_, err := VerifyFiles(paths, VerifyOptions{})
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.File != paths[tt.file] || ve.Line != tt.line || !strings.Contains(ve.Problem, tt.want) {
				t.Errorf("got %v, want %s:%d: ...%s", err, paths[tt.file], tt.line, tt.want)
			}
		})
	}

	// Records removed from the end leave a valid chain: only the last hash,
	// compared with an anchor kept elsewhere, shows it.
	short, err := VerifyFiles(writeSet(t, f1, f2), VerifyOptions{})
	if err != nil || short.LastHash == sum.LastHash {
		t.Errorf("a trail without its last file: %+v %v", short, err)
	}

	// The oldest file rotated away: -partial verifies the rest.
	if _, err := VerifyFiles(writeSet(t, f2, f3), VerifyOptions{}); err == nil {
		t.Error("a set without its first file verified without Partial")
	}
	part, err := VerifyFiles(writeSet(t, f2, f3), VerifyOptions{Partial: true})
	if err != nil || part.FirstSeq != 4 || part.Records != 6 || part.FirstPrev == strings.Repeat("0", 64) {
		t.Errorf("partial set: %+v %v", part, err)
	}
}

// Whoever can edit a keyed trail but lacks the key cannot rebuild the chain.
func TestVerifyKeyed(t *testing.T) {
	key := bytes.Repeat([]byte("K"), 32)
	good := chainOf(5, key)
	sum, err := VerifyFiles(writeSet(t, good), VerifyOptions{Key: key})
	if err != nil || !sum.Keyed || sum.Records != 5 {
		t.Fatalf("keyed trail: %+v %v", sum, err)
	}

	edited := slices.Clone(good)
	edited[2] = bytes.Replace(edited[2], []byte(`"alice"`), []byte(`"bob"`), 1)
	tests := []struct {
		name  string
		lines [][]byte
		key   []byte
		line  int
		want  string
	}{
		{"no key given", good, nil, 1, "a keyed trail needs its key"},
		{"wrong key", good, bytes.Repeat([]byte("k"), 32), 1, "under this key"},
		{"edited, rebuilt as a plain chain", reencode(t, edited, 2, nil), key, 3, "under this key"},
		{"edited, rebuilt with a guessed key", reencode(t, edited, 2, bytes.Repeat([]byte("G"), 32)), key, 3, "under this key"},
		{"whole trail rebuilt without the key", reencode(t, edited, 0, nil), key, 1, "under this key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			paths := writeSet(t, tt.lines)
			_, err := VerifyFiles(paths, VerifyOptions{Key: tt.key})
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Line != tt.line || !strings.Contains(ve.Problem, tt.want) {
				t.Errorf("got %v, want line %d: ...%s", err, tt.line, tt.want)
			}
		})
	}
	// The rebuilt trail is a perfectly good plain chain: only the key tells.
	if _, err := VerifyFiles(writeSet(t, reencode(t, edited, 0, nil)), VerifyOptions{}); err != nil {
		t.Errorf("the rebuilt trail should verify as a plain chain: %v", err)
	}
}

func TestVerifyLongLine(t *testing.T) {
	good := chainOf(2, nil)
	long := append(bytes.Repeat([]byte("x"), maxLineBytes+1), '\n')
	paths := writeSet(t, [][]byte{good[0], long})
	_, err := VerifyFiles(paths, VerifyOptions{})
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Line != 2 || !strings.Contains(ve.Problem, "longer than") {
		t.Errorf("got %v", err)
	}
}

func TestReadAnchorRefusesJunk(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty":    "",
		"short":    "42 abc\n",
		"bad hash": fmt.Sprintf("%020d %s\n", 42, strings.Repeat("z", 64)),
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := ReadAnchor(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	p := filepath.Join(dir, "good")
	os.WriteFile(p, fmt.Appendf(nil, "%020d %s\n", 42, strings.Repeat("ab", 32)), 0o600)
	if a, err := ReadAnchor(p); err != nil || a.Seq != 42 || a.Hash != strings.Repeat("ab", 32) {
		t.Errorf("good anchor: %+v %v", a, err)
	}
}
