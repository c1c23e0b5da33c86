package testkit

import (
	"testing"
	"time"
)

// WaitLimit bounds every Eventually. It is generous on purpose: it only
// decides how long a broken build takes to fail on a loaded machine, never
// whether a working one passes.
const WaitLimit = 60 * time.Second

// Eventually polls cond until it holds, and fails the test if it still does
// not after WaitLimit. Use it for effects that happen on another goroutine
// (reloads, refreshes, deliveries); what names the awaited effect.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(WaitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", WaitLimit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
