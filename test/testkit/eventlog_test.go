package testkit

import (
	"slices"
	"sync"
	"testing"
)

func TestEventLog(t *testing.T) {
	var log EventLog[int]
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() { v := i; log.Record(&v) })
	}
	wg.Wait()
	got := log.Events()
	slices.Sort(got)
	if !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("Events() = %v, want 0..3 in some order", got)
	}
	got[0] = 99 // a copy: the log keeps its own
	if odd := log.Filter(func(v int) bool { return v%2 == 1 }); len(odd) != 2 || slices.Contains(log.Events(), 99) {
		t.Errorf("Filter(odd) = %v, Events() = %v", odd, log.Events())
	}
}
