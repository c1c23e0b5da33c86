package admission

import (
	"context"
	"errors"
	"testing"
)

func TestLimit(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		wait bool // a non-zero wait (the waiter is released by ctx, not by time)
		held int64
		n    int64
		ok   bool
	}{
		{"room", false, 0, 10, true},
		{"exactly full", false, 6, 4, true},
		{"over, refused at once", false, 7, 4, false},
		{"over, refused after the wait", true, 7, 4, false},
		{"more than the size is clamped", false, 0, 100, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLimit(10, 0)
			if tc.wait {
				l.wait = 1 << 62 // bounded by the cancelled context below
			}
			if tc.held > 0 {
				if err := l.Acquire(ctx, tc.held); err != nil {
					t.Fatal(err)
				}
			}
			actx := ctx
			if tc.wait {
				c, cancel := context.WithCancel(ctx)
				cancel()
				actx = c
			}
			err := l.Acquire(actx, tc.n)
			if tc.ok != (err == nil) {
				t.Fatalf("Acquire(%d) with %d held: %v", tc.n, tc.held, err)
			}
			if err != nil && !errors.Is(err, ErrOverloaded) {
				t.Fatalf("error %v, want ErrOverloaded", err)
			}
			if err == nil {
				l.Release(tc.n)
			}
			l.Release(tc.held)
			// Everything was given back: the whole capacity is free.
			if err := l.Acquire(ctx, 10); err != nil {
				t.Fatalf("capacity not restored: %v", err)
			}
		})
	}
}

// TestLimitWaiterGetsRoom: a waiter is admitted when room is released
// during its wait.
func TestLimitWaiterGetsRoom(t *testing.T) {
	l := NewLimit(1, 1<<62)
	if err := l.Acquire(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	got := make(chan error)
	go func() { got <- l.Acquire(context.Background(), 1) }()
	l.Release(1)
	if err := <-got; err != nil {
		t.Fatalf("waiter refused after release: %v", err)
	}
}
