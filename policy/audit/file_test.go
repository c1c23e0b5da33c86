package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// openFileWriter starts a writer on a file sink.
func openFileWriter(t *testing.T, path string, s Settings, maxBytes int64, maxFiles int) *Writer {
	t.Helper()
	if s.FlushInterval == 0 {
		s.FlushInterval = 5 * time.Millisecond
	}
	w, err := NewWriter(s, Options{}, NewFileSink(path, maxBytes, maxFiles, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func record(t *testing.T, w *Writer, n int, tag string) {
	t.Helper()
	for i := range n {
		e := Event{Kind: KindDecision, DecisionID: fmt.Sprintf("%s-%d", tag, i), Gateway: "envoy", Method: "POST",
			Path: "/v1/chat/completions", Result: "allow", Status: 200, Reason: "allowed", Subject: "alice"}
		if err := w.Record(&e); err != nil {
			t.Fatal(err)
		}
	}
}

// trailFiles lists the rotated files of path, oldest first, then path.
func trailFiles(t *testing.T, path string) []string {
	t.Helper()
	rotated, err := NewFileSink(path, 0, 0, nil).rotated()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rotated {
		out = append(out, r.path)
	}
	return append(out, path)
}

// readEvents decodes every record of the files, in order.
func readEvents(t *testing.T, paths ...string) []Event {
	t.Helper()
	var out []Event
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.SplitAfter(data, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			var e Event
			if err := json.Unmarshal(line, &e); err != nil {
				t.Fatalf("%s: %v: %q", p, err, line)
			}
			out = append(out, e)
		}
	}
	return out
}

// Rotation mid-chain: the rotated files and the active one verify as one
// set, each rotated file is named after its first record, and none exceeds
// the size limit.
func TestFileRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w := openFileWriter(t, path, Settings{}, 4096, 0)
	record(t, w, 200, "a")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	files := trailFiles(t, path)
	if len(files) < 4 {
		t.Fatalf("%d files after 200 records of ~250 bytes with a 4 KiB limit", len(files))
	}
	sum, err := VerifyFiles(files, VerifyOptions{})
	if err != nil || sum.Records != 200 || sum.Files != len(files) {
		t.Fatalf("rotated set: %+v %v", sum, err)
	}
	for _, f := range files[:len(files)-1] {
		st, _ := os.Stat(f)
		first := readEvents(t, f)[0]
		if !strings.HasSuffix(f, fmt.Sprintf(".%020d", first.Seq)) || st.Size() > 4096 {
			t.Errorf("%s: first seq %d, %d bytes", f, first.Seq, st.Size())
		}
	}

	// Rotation continues the chain after a restart.
	w2 := openFileWriter(t, path, Settings{}, 4096, 0)
	record(t, w2, 50, "b")
	w2.Close()
	if sum, err := VerifyFiles(trailFiles(t, path), VerifyOptions{}); err != nil || sum.Records != 250 {
		t.Fatalf("after a restart: %+v %v", sum, err)
	}
}

func TestFileRotationKeepsMaxFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w := openFileWriter(t, path, Settings{}, 4096, 2)
	record(t, w, 200, "a")
	w.Close()
	files := trailFiles(t, path)
	if len(files) != 3 {
		t.Fatalf("files %v, want 2 rotated and the active one", files)
	}
	if _, err := VerifyFiles(files, VerifyOptions{}); err == nil {
		t.Error("a set whose oldest files were removed verified without Partial")
	}
	if sum, err := VerifyFiles(files, VerifyOptions{Partial: true}); err != nil || sum.LastSeq != 200 {
		t.Errorf("partial: %+v %v", sum, err)
	}
}

// The chain continues across restarts; a restart refuses a trail whose last
// record does not verify under the configured key.
func TestFileRestart(t *testing.T) {
	key := bytes.Repeat([]byte("k"), 32)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w := openFileWriter(t, path, Settings{Key: key}, 0, 0)
	record(t, w, 5, "a")
	w.Close()
	w = openFileWriter(t, path, Settings{Key: key}, 0, 0)
	record(t, w, 5, "b")
	w.Close()
	sum, err := VerifyFiles([]string{path}, VerifyOptions{Key: key})
	if err != nil || sum.Records != 10 || sum.LastSeq != 10 {
		t.Fatalf("after a restart: %+v %v", sum, err)
	}

	for _, tt := range []struct {
		name  string
		key   []byte
		setup func()
	}{
		{"key changed", bytes.Repeat([]byte("x"), 32), func() {}},
		{"no key", nil, func() {}},
		{"last record edited", key, func() {
			data, _ := os.ReadFile(path)
			i := bytes.LastIndex(data, []byte(`"alice"`))
			copy(data[i:], `"alicf"`)
			os.WriteFile(path, data, 0o600)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.setup()
			w, err := NewWriter(Settings{Key: tt.key}, Options{}, NewFileSink(path, 0, 0, nil))
			if err == nil {
				w.Close()
				t.Fatal("started on a trail whose last record does not verify")
			}
			var se *SinkError
			if !errors.As(err, &se) || se.Sink != "file" || !strings.Contains(err.Error(), "does not verify") {
				t.Errorf("error: %v", err)
			}
		})
	}
}

// A torn last record (a write cut short by kill -9 or a crash) is moved to a
// quarantine file and recorded; the chain continues from the record before.
func TestFileTornLastRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w := openFileWriter(t, path, Settings{}, 0, 0)
	record(t, w, 5, "a")
	w.Close()
	torn := []byte(`{"seq":6,"prev":"0123456789abcdef","time":"2026-`)
	appendBytes(t, path, torn)
	var ve *VerifyError
	if _, err := VerifyFiles([]string{path}, VerifyOptions{}); !errors.As(err, &ve) || ve.Line != 6 {
		t.Fatalf("torn record not reported at line 6: %v", err)
	}

	w = openFileWriter(t, path, Settings{}, 0, 0)
	record(t, w, 2, "b")
	w.Close()
	events := readEvents(t, path)
	if len(events) != 8 {
		t.Fatalf("%d records, want 5 + audit_recovered + 2", len(events))
	}
	rec := events[5]
	if rec.Kind != KindRecovered || rec.Seq != 6 || !strings.Contains(rec.Detail, fmt.Sprintf("%d bytes", len(torn))) {
		t.Errorf("recovery event %+v", rec)
	}
	if q, err := os.ReadFile(rec.File); err != nil || !bytes.Equal(q, torn) {
		t.Errorf("quarantine %s holds %q (%v), want the torn bytes", rec.File, q, err)
	}
	if sum, err := VerifyFiles([]string{path}, VerifyOptions{}); err != nil || sum.Records != 8 {
		t.Errorf("after recovery: %+v %v", sum, err)
	}
}

// A crash right after a rotation leaves an active file without a complete
// record: the chain continues from the newest rotated file.
func TestFileTornAfterRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w := openFileWriter(t, path, Settings{}, 4096, 0)
	record(t, w, 40, "a")
	w.Close()
	// What rotate does before the first write to the new file, then a torn write.
	first := readEvents(t, path)[0].Seq
	if err := os.Rename(path, rotatedName(path, first)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(`{"seq":4`), 0o600); err != nil {
		t.Fatal(err)
	}
	w = openFileWriter(t, path, Settings{}, 4096, 0)
	record(t, w, 3, "b")
	w.Close()
	if sum, err := VerifyFiles(trailFiles(t, path), VerifyOptions{}); err != nil || sum.Records != 44 {
		t.Errorf("after recovery: %+v %v", sum, err)
	}
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// fakeFile stands for a file whose writes and fsyncs fail on demand. A failed
// fsync drops what was not durable, as Linux may drop dirty pages.
type fakeFile struct {
	data       []byte
	durable    int
	failWrites int
	failSyncs  int
}

func (f *fakeFile) Write(p []byte) (int, error) {
	if f.failWrites > 0 {
		f.failWrites--
		f.data = append(f.data, p[:len(p)/2]...)
		return len(p) / 2, errors.New("injected write failure")
	}
	f.data = append(f.data, p...)
	return len(p), nil
}

func (f *fakeFile) Truncate(n int64) error {
	f.data = f.data[:n]
	f.durable = min(f.durable, int(n))
	return nil
}

func (f *fakeFile) Sync() error {
	if f.failSyncs > 0 {
		f.failSyncs--
		f.data = f.data[:f.durable]
		return errors.New("injected fsync failure")
	}
	f.durable = len(f.data)
	return nil
}

func (f *fakeFile) Close() error { return nil }

// linesOf is records i to j (exclusive) of lines, as the writer hands them
// to a sink.
func linesOf(lines [][]byte, i, j int) []Line {
	var out []Line
	for k := i; k < j; k++ {
		out = append(out, Line{Seq: uint64(k + 1), Data: lines[k]})
	}
	return out
}

// After a failed write or fsync the file holds every record exactly once,
// never a partial one.
func TestAppendFileRecoversFromFailures(t *testing.T) {
	lines := chainOf(6, nil)
	recs := func(i, j int) []Line { return linesOf(lines, i, j) }
	f := &fakeFile{}
	a := &appendFile{f: f}
	if err := a.write(recs(0, 2)); err != nil {
		t.Fatal(err)
	}
	f.failWrites = 1
	if err := a.write(recs(2, 4)); err == nil {
		t.Fatal("injected write failure not reported")
	}
	if err := a.write(recs(2, 4)); err != nil { // the writer retries
		t.Fatal(err)
	}
	if err := a.sync(); err != nil {
		t.Fatal(err)
	}
	if err := a.write(recs(4, 6)); err != nil {
		t.Fatal(err)
	}
	f.failSyncs = 1
	if err := a.sync(); err == nil {
		t.Fatal("injected fsync failure not reported")
	}
	if err := a.sync(); err != nil {
		t.Fatal(err)
	}
	if want := bytes.Join(lines, nil); !bytes.Equal(f.data, want) || f.durable != len(want) {
		t.Fatalf("file holds:\n%s\nwant:\n%s", f.data, want)
	}
}

// A second writer on a trail already open is refused at start with an error
// that says why; once the first closes, a writer opens it again.
func TestFileTrailLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := NewWriter(Settings{}, Options{}, NewFileSink(path, 0, 0, nil))
	if err != nil {
		t.Fatal(err)
	}
	record(t, w, 3, "first")
	_, err = NewWriter(Settings{}, Options{}, NewFileSink(path, 0, 0, nil))
	if err == nil || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), AnchorPath(path)) {
		t.Fatalf("second writer on one trail: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2 := openFileWriter(t, path, Settings{}, 0, 0)
	record(t, w2, 1, "again")
	w2.Close()
	if sum, err := VerifyFiles([]string{path}, VerifyOptions{}); err != nil || sum.Records != 4 {
		t.Fatalf("%+v %v", sum, err)
	}
}

// The anchor follows the last fsynced record; a trail cut short from its
// end still chains, but fails against its anchor, in verify and at start.
func TestFileAnchor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w := openFileWriter(t, path, Settings{}, 1024, 0) // rotations too
	record(t, w, 20, "a")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	a, err := ReadAnchor(AnchorPath(path))
	if err != nil {
		t.Fatal(err)
	}
	files := trailFiles(t, path)
	sum, err := VerifyFiles(files, VerifyOptions{Anchor: &a})
	if err != nil || a.Seq != sum.LastSeq || a.Hash != sum.LastHash {
		t.Fatalf("anchor %+v, trail %+v, %v", a, sum, err)
	}

	// Remove the last record of the active file.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	cut := bytes.Join(lines[:len(lines)-2], nil)
	if err := os.WriteFile(path, cut, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyFiles(files, VerifyOptions{}); err != nil {
		t.Fatalf("without the anchor the cut trail verifies, as a chain must: %v", err)
	}
	var ve *VerifyError
	if _, err := VerifyFiles(files, VerifyOptions{Anchor: &a}); !errors.As(err, &ve) || !strings.Contains(ve.Problem, "records deleted from the end") || ve.File != path {
		t.Errorf("verify against the anchor: %v", err)
	}
	if _, err := NewWriter(Settings{}, Options{}, NewFileSink(path, 1024, 0, nil)); err == nil || !strings.Contains(err.Error(), "records deleted from the end") {
		t.Errorf("start on a cut trail: %v", err)
	}

	// A replaced last record: same seq, another hash.
	other := chainOf(int(a.Seq), nil)
	last := other[len(other)-1]
	if err := os.WriteFile(path, append(cut, last...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyFiles(files, VerifyOptions{Anchor: &a}); err == nil {
		t.Error("a replaced last record verified against the anchor")
	}
}

// An fsync running beside writes (syncPoint, syncFile, syncedTo) makes
// durable what was written before it began, and no more; after a failed
// fsync, or a rewrite while it ran, nothing is taken as durable that may
// not be, and the file still holds every record exactly once.
func TestAppendFileSyncBesideWrites(t *testing.T) {
	lines := chainOf(8, nil)
	recs := func(i, j int) []Line { return linesOf(lines, i, j) }
	size := func(i int) int64 { return int64(len(bytes.Join(lines[:i], nil))) }
	f := &fakeFile{}
	a := &appendFile{f: f}
	mustWrite := func(i, j int) {
		t.Helper()
		if err := a.write(recs(i, j)); err != nil {
			t.Fatal(err)
		}
	}

	mustWrite(0, 2)
	p, ok := a.syncPoint()
	if !ok {
		t.Fatal("no sync point on a healthy file")
	}
	mustWrite(2, 4) // while the fsync runs
	if durable, err := a.syncedTo(p, a.syncFile()); !durable || err != nil {
		t.Fatalf("syncedTo = %v, %v", durable, err)
	}
	if a.synced != size(2) || !bytes.Equal(a.unsynced, bytes.Join(lines[2:4], nil)) {
		t.Fatalf("after the fsync: synced %d (want %d), unsynced %q", a.synced, size(2), a.unsynced)
	}

	// A failed fsync: not durable, and the bytes after the last durable
	// point are rewritten before the next write.
	p, _ = a.syncPoint()
	f.failSyncs = 1
	if durable, err := a.syncedTo(p, a.syncFile()); durable || err == nil {
		t.Fatalf("failed fsync: syncedTo = %v, %v", durable, err)
	}
	if _, ok := a.syncPoint(); ok {
		t.Error("a sync point while the file must be rewritten")
	}
	mustWrite(4, 5)

	// A rewrite while the fsync ran: the fsync may have missed it.
	p, _ = a.syncPoint()
	f.failWrites = 1
	if err := a.write(recs(5, 6)); err == nil {
		t.Fatal("injected write failure not reported")
	}
	mustWrite(5, 6) // rewrites, then writes
	synced := a.synced
	if durable, err := a.syncedTo(p, a.syncFile()); durable || err != nil || a.synced != synced {
		t.Fatalf("after a rewrite: syncedTo = %v, %v; synced %d -> %d", durable, err, synced, a.synced)
	}

	mustWrite(6, 8)
	if err := a.sync(); err != nil {
		t.Fatal(err)
	}
	if want := bytes.Join(lines, nil); !bytes.Equal(f.data, want) || f.durable != len(want) || a.synced != size(8) || len(a.unsynced) != 0 {
		t.Fatalf("file holds:\n%s\nwant:\n%s", f.data, want)
	}
}
