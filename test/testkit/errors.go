package testkit

import (
	"strings"
	"testing"
)

// WantErrors fails tb unless each of want is part of some error's message
// and, when n is not negative, there are exactly n errors (settings
// validation reports every problem at once).
func WantErrors(tb testing.TB, errs []error, n int, want ...string) {
	tb.Helper()
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	all := strings.Join(msgs, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			tb.Errorf("no error says %q; got:\n%s", w, all)
		}
	}
	if n >= 0 && len(errs) != n {
		tb.Errorf("%d errors, want %d:\n%s", len(errs), n, all)
	}
}
