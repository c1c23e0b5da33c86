package main

import (
	"os"
	"runtime/debug"
	"testing"
)

// serve sets GOGC to serveGCPercent unless the operator set GOGC, which
// then wins (the runtime read it at start).
func TestSetGCPercent(t *testing.T) {
	const running = 123 // stands for the percent the runtime started with
	defer debug.SetGCPercent(debug.SetGCPercent(running))
	for _, tc := range []struct {
		name string
		env  *string
		want int
	}{
		{"GOGC unset", nil, serveGCPercent},
		{"GOGC set", new("150"), running},
		{"GOGC set empty", new(""), running},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(running)
			t.Setenv("GOGC", "")
			if tc.env == nil {
				os.Unsetenv("GOGC")
			} else {
				os.Setenv("GOGC", *tc.env)
			}
			setGCPercent()
			if got := debug.SetGCPercent(running); got != tc.want {
				t.Errorf("GC percent %d, want %d", got, tc.want)
			}
		})
	}
}
