package testkit

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteFile writes data to dir/name, readable by its owner only as real
// key and configuration files are, and returns the path.
func WriteFile[D string | []byte](tb testing.TB, dir, name string, data D) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// ReplaceFile writes data to dir/name the way editors and deploy tools do:
// a hidden temporary file in the same directory, renamed over the old one,
// so a watcher sees the old content or the new, never half of it. Missing
// directories in name are created. It returns the path.
func ReplaceFile[D string | []byte](tb testing.TB, dir, name string, data D) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tb.Fatal(err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+"-*.tmp")
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := f.Write([]byte(data)); err != nil {
		f.Close()
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		tb.Fatal(err)
	}
	return p
}
