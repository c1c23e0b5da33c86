package models

import (
	"strings"
	"testing"
)

// FuzzNormalizePath: normalising is idempotent, leaves no empty or dot
// segment, and never changes what the most lenient server would route.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{
		"/v1/chat/completions", "//v1/chat/completions", "/v1//chat/completions", "/v1/chat/completions/",
		"/v1/./chat/completions", "/x/../v1/chat/completions", "/v1/chat/%63ompletions", "/V1/chat/completions",
		"/v1/chat/completions;x=1", "/v1/chat%2Fcompletions", "/v1/chat%2fcompletions", `/v1/chat\completions`,
		"/v1/chat/%2563ompletions", "/%2e%2e/v1", "/a%zz", "/a%2", "", "/", "/..", "x/../y", "/a/b/..",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		n := normalizePath(p)
		if again := normalizePath(n); again != n {
			t.Fatalf("normalizePath(%q) = %q, then %q", p, n, again)
		}
		if n != p {
			if strings.Contains(n, "//") || strings.HasSuffix(n, "/.") || strings.HasSuffix(n, "/..") ||
				strings.Contains(n, "/./") || strings.Contains(n, "/../") {
				t.Fatalf("normalizePath(%q) = %q keeps an empty or dot segment", p, n)
			}
		}
		if lenientPath(n) != lenientPath(p) {
			t.Fatalf("%q: lenient form %q, normalised %q gives %q", p, lenientPath(p), n, lenientPath(n))
		}
	})
}
