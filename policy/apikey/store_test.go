package apikey

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/testkit"
)

var testNow = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return testNow }

var (
	fileAliceBob = "keys:\n" + entry("alice", keyAlice) + entry("bob", keyBob)
	fileBobCarol = "keys:\n" + entry("bob", keyBob) + entry("carol", keyCarol)
)

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) string // returns the path to open
		check func(error) bool
	}{
		{"missing file", func(t *testing.T) string {
			return filepath.Join(t.TempDir(), "keys.yaml")
		}, func(err error) bool { return errors.Is(err, fs.ErrNotExist) }},
		{"missing directory", func(t *testing.T) string {
			return filepath.Join(t.TempDir(), "nope", "keys.yaml")
		}, func(err error) bool { return errors.Is(err, fs.ErrNotExist) }},
		{"path is a directory", func(t *testing.T) string {
			return t.TempDir()
		}, func(err error) bool { return err != nil }},
		{"bad YAML", func(t *testing.T) string {
			return writeTemp(t, "keys: [\n")
		}, func(err error) bool { return len(parseErrors(errors.Unwrap(err))) == 1 }},
		{"validation error", func(t *testing.T) string {
			return writeTemp(t, "keys:\n"+entry("a", keyAlice)+entry("a", keyBob))
		}, func(err error) bool {
			pes := parseErrors(errors.Unwrap(err))
			return len(pes) == 1 && pes[0].Line == 5
		}},
		{"empty file", func(t *testing.T) string {
			return writeTemp(t, "")
		}, func(err error) bool { return len(parseErrors(errors.Unwrap(err))) == 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.Context(), tt.setup(t), Options{})
			if err == nil || s != nil {
				t.Fatalf("Open = %v, %v; want an error and no store", s, err)
			}
			if !tt.check(err) {
				t.Errorf("Open error %v (%T) is not the expected kind", err, errors.Unwrap(err))
			}
		})
	}
}

// TestRevoke edits the file of a running Store and polls until the change is
// in force, without a restart.
func TestRevoke(t *testing.T) {
	tests := []struct {
		name   string
		write  func(tb testing.TB, path, content string)
		edited string
		reason string // of alice's key afterwards
	}{
		{"entry removed, file replaced", replaceFile,
			"keys:\n" + entry("bob", keyBob), ReasonUnknown},
		{"entry removed, rewritten in place", rewriteFile,
			"keys:\n" + entry("bob", keyBob), ReasonUnknown},
		{"disabled", replaceFile,
			"keys:\n" + entry("alice", keyAlice, "disabled: true") + entry("bob", keyBob), ReasonDisabled},
		{"expiry set in the past", replaceFile,
			"keys:\n" + entry("alice", keyAlice, "expires_at: 2026-05-31T23:59:59Z") + entry("bob", keyBob), ReasonExpired},
		{"all keys removed", replaceFile, "keys: []\n", ReasonUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			s, path := openStore(t, fileAliceBob, Options{OnReload: rec.record, Now: fixedNow})
			for _, k := range []string{keyAlice, keyBob} {
				if r := reasonOf(s, k); r != "ok" {
					t.Fatalf("before the edit: %s", r)
				}
			}
			tt.write(t, path, tt.edited)
			testkit.Eventually(t, "alice's key to be refused with "+tt.reason, func() bool {
				return reasonOf(s, keyAlice) == tt.reason
			})
			want, err := Parse(path, []byte(tt.edited))
			if err != nil {
				t.Fatal(err)
			}
			if s.Revision() != want.Revision() || s.Len() != want.Len() {
				t.Errorf("revision %s with %d keys, want %s with %d", s.Revision(), s.Len(), want.Revision(), want.Len())
			}
			if want.Len() > 0 && reasonOf(s, keyBob) != "ok" {
				t.Errorf("bob's key: %s, want ok", reasonOf(s, keyBob))
			}
			testkit.Eventually(t, "OnReload(nil)", func() bool { return rec.count() > 0 && rec.last() == nil })
		})
	}
}

// TestBadFileKeepsKeys pushes broken files at run time: each is refused, the
// reason is logged and reported, and the keys in force keep working until a
// good file arrives.
func TestBadFileKeepsKeys(t *testing.T) {
	tests := []struct {
		name    string
		content string
		line    int // of the first reported problem
	}{
		{"syntax error", "keys:\n  - id: a\n    hash: x\n    subject: abc: d\n", 4},
		{"duplicate id", "keys:\n" + entry("a", keyAlice) + entry("a", keyBob), 5},
		{"plaintext key as hash", "keys:\n  - id: a\n    hash: " + keyAlice + "\n    subject: s\n", 3},
		{"unknown field", "keys:\n" + entry("alice", keyAlice, "revoked: true"), 5},
		{"empty file", "", 0},
		{"truncated mid-write", fileAliceBob[:len(fileAliceBob)/2], 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			var logs testkit.SyncBuffer
			s, path := openStore(t, fileAliceBob, Options{
				OnReload: rec.record,
				Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
			})
			rev := s.Revision()
			replaceFile(t, path, tt.content)
			testkit.Eventually(t, "OnReload(error)", func() bool { return rec.count() > 0 })
			err := rec.last()
			if err == nil {
				t.Fatalf("bad file accepted; keys now %d, revision %s", s.Len(), s.Revision())
			}
			if pes := parseErrors(err); len(pes) == 0 || (tt.line > 0 && pes[0].Line != tt.line) {
				t.Errorf("OnReload(%v): want a *ParseError at line %d", err, tt.line)
			}
			if s.Revision() != rev || reasonOf(s, keyAlice) != "ok" || reasonOf(s, keyBob) != "ok" {
				t.Errorf("after the bad file: revision %s (want %s), alice %s, bob %s",
					s.Revision(), rev, reasonOf(s, keyAlice), reasonOf(s, keyBob))
			}
			if l := logs.String(); !strings.Contains(l, "reload refused") || !strings.Contains(l, path) {
				t.Errorf("refusal not logged with the file name; logs:\n%s", l)
			}

			replaceFile(t, path, fileBobCarol)
			testkit.Eventually(t, "the good file to be in force", func() bool { return reasonOf(s, keyCarol) == "ok" })
			if r := reasonOf(s, keyAlice); r != ReasonUnknown {
				t.Errorf("alice after the good file: %s, want %s", r, ReasonUnknown)
			}
			// The store swaps the new set in and then reports it: wait for
			// the report, which must say the good file was accepted.
			n := rec.count()
			testkit.Eventually(t, "OnReload after the good file", func() bool { return rec.count() > n || rec.last() == nil })
			if rec.last() != nil {
				t.Errorf("last OnReload(%v) after a good file, want nil", rec.last())
			}
		})
	}
}

func TestDeletedFileKeepsKeys(t *testing.T) {
	var rec recorder
	s, path := openStore(t, fileAliceBob, Options{OnReload: rec.record})
	rev := s.Revision()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "OnReload(not exist)", func() bool { return errors.Is(rec.last(), fs.ErrNotExist) })
	if s.Revision() != rev || reasonOf(s, keyAlice) != "ok" || reasonOf(s, keyBob) != "ok" {
		t.Fatalf("after delete: revision %s (want %s), alice %s, bob %s",
			s.Revision(), rev, reasonOf(s, keyAlice), reasonOf(s, keyBob))
	}

	// The same content coming back clears the failure for metrics.
	n := rec.count()
	replaceFile(t, path, fileAliceBob)
	testkit.Eventually(t, "OnReload(nil) for the restored file", func() bool { return rec.count() > n && rec.last() == nil })
	if s.Revision() != rev {
		t.Errorf("revision %s after restoring, want %s", s.Revision(), rev)
	}
}

// TestReloadSkipsUnchanged drives reload directly (the watch is stopped) to
// pin down exactly when OnReload is called.
func TestReloadSkipsUnchanged(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var rec recorder
	path := writeTemp(t, fileAliceBob)
	s, err := Open(ctx, path, Options{OnReload: rec.record})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		before  func()
		wantErr bool
		calls   int // OnReload calls so far
		lastNil bool
	}{
		{"unchanged after open", nil, false, 0, false},
		{"unchanged again", nil, false, 0, false},
		{"bad content", func() { replaceFile(t, path, "keys: [") }, true, 1, false},
		{"same bad content is not reported again", nil, false, 1, false},
		{"back to the content in force", func() { replaceFile(t, path, fileAliceBob) }, false, 2, true},
		{"and unchanged", nil, false, 2, true},
		{"file removed", func() { os.Remove(path) }, true, 3, false},
		{"still removed: reported each time", nil, true, 4, false},
		{"new content", func() { replaceFile(t, path, fileBobCarol) }, false, 5, true},
		{"new content unchanged", nil, false, 5, true},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		err := s.reload()
		if (err != nil) != st.wantErr || rec.count() != st.calls || (st.calls > 0 && (rec.last() == nil) != st.lastNil) {
			t.Fatalf("%s: reload() = %v, %d OnReload calls (last %v); want error %v, %d calls, last nil %v",
				st.name, err, rec.count(), rec.last(), st.wantErr, st.calls, st.lastNil)
		}
	}
	if reasonOf(s, keyCarol) != "ok" || reasonOf(s, keyAlice) != ReasonUnknown {
		t.Errorf("final set: carol %s, alice %s", reasonOf(s, keyCarol), reasonOf(s, keyAlice))
	}
}

// TestConfigMapSwap reproduces how the kubelet updates a ConfigMap volume:
// keys.yaml -> ..data/keys.yaml, ..data -> ..<timestamp>, and an update
// renames a new ..data symlink over the old one.
func TestConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, content string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		testkit.WriteFile(t, filepath.Join(dir, name), "keys.yaml", content)
	}
	swap := func(name, old string) {
		t.Helper()
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_a", fileAliceBob)
	if err := os.Symlink("..2026_a", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "keys.yaml")
	if err := os.Symlink(filepath.Join("..data", "keys.yaml"), path); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	s, err := Open(t.Context(), path, Options{OnReload: rec.record})
	if err != nil {
		t.Fatal(err)
	}
	if reasonOf(s, keyAlice) != "ok" {
		t.Fatalf("alice before the swap: %s", reasonOf(s, keyAlice))
	}

	version("..2026_b", fileBobCarol)
	swap("..2026_b", "..2026_a")
	testkit.Eventually(t, "carol's key after the first swap", func() bool { return reasonOf(s, keyCarol) == "ok" })
	if reasonOf(s, keyAlice) != ReasonUnknown || reasonOf(s, keyBob) != "ok" {
		t.Errorf("after the first swap: alice %s, bob %s", reasonOf(s, keyAlice), reasonOf(s, keyBob))
	}

	// A second swap proves the watch survived the first.
	version("..2026_c", "keys:\n"+entry("carol", keyCarol, "disabled: true"))
	swap("..2026_c", "..2026_b")
	testkit.Eventually(t, "carol's key disabled after the second swap", func() bool { return reasonOf(s, keyCarol) == ReasonDisabled })
	if reasonOf(s, keyBob) != ReasonUnknown {
		t.Errorf("bob after the second swap: %s", reasonOf(s, keyBob))
	}
	for _, err := range rec.all() {
		if err != nil {
			t.Errorf("OnReload(%v) during atomic swaps", err)
		}
	}
}

// TestConcurrentLookupsDuringReloads is for -race: lookups never block on or
// observe a half-built set.
func TestConcurrentLookupsDuringReloads(t *testing.T) {
	s, path := openStore(t, fileAliceBob, Options{Poll: 5 * time.Millisecond})
	revs := map[string]bool{}
	for _, c := range []string{fileAliceBob, fileBobCarol} {
		set, err := Parse(path, []byte(c))
		if err != nil {
			t.Fatal(err)
		}
		revs[set.Revision()] = true
	}

	stop := make(chan struct{})
	errs := make(chan string, 8)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// bob is in both files; alice and carol in exactly one.
				if r := reasonOf(s, keyBob); r != "ok" {
					errs <- "bob: " + r
					return
				}
				a, c := reasonOf(s, keyAlice), reasonOf(s, keyCarol)
				if (a != "ok" && a != ReasonUnknown) || (c != "ok" && c != ReasonUnknown) {
					errs <- "alice " + a + ", carol " + c
					return
				}
				if rev := s.Revision(); !revs[rev] {
					errs <- "unexpected revision " + rev
					return
				}
			}
		})
	}
	for i := range 100 {
		content := fileAliceBob
		if i%2 == 0 {
			content = fileBobCarol
		}
		replaceFile(t, path, content)
		if err := s.reload(); err != nil {
			t.Errorf("reload: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// openStore writes content to a fresh key file and opens a Store on it,
// watching until the test ends.
func openStore(tb testing.TB, content string, opts Options) (*Store, string) {
	tb.Helper()
	path := writeTemp(tb, content)
	s, err := Open(tb.Context(), path, opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	return s, path
}

func writeTemp(tb testing.TB, content string) string {
	tb.Helper()
	return testkit.WriteFile(tb, tb.TempDir(), "keys.yaml", content)
}

// rewriteFile writes like tools that truncate the file and write it again,
// so a reader may see it half-written.
func rewriteFile(tb testing.TB, path, content string) {
	tb.Helper()
	testkit.WriteFile(tb, filepath.Dir(path), filepath.Base(path), content)
}

// replaceFile writes like editors and deploy tools do: a temporary file
// renamed over the old one, so readers see the old or the new content.
func replaceFile(tb testing.TB, path, content string) {
	tb.Helper()
	testkit.ReplaceFile(tb, filepath.Dir(path), filepath.Base(path), content)
}

// reasonOf is "ok" for an accepted key, else the refusal reason.
func reasonOf(s *Store, key string) string {
	_, err := s.Lookup(key)
	if err == nil {
		return "ok"
	}
	var ae *Error
	if !errors.As(err, &ae) {
		return "not an *Error: " + err.Error()
	}
	return ae.Reason
}

// recorder collects OnReload calls, made from the watch goroutine.
type recorder struct {
	mu   sync.Mutex
	errs []error
}

func (r *recorder) record(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *recorder) all() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

func (r *recorder) count() int { return len(r.all()) }

func (r *recorder) last() error {
	all := r.all()
	if len(all) == 0 {
		return nil
	}
	return all[len(all)-1]
}
