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
