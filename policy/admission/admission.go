// Package admission sheds load before it turns into an out-of-memory kill
// or into timeouts that look like policy errors: a byte budget for request
// bodies in flight and a cap on checks deciding at once. A request that
// finds no room within a short wait is refused with 503 and the reason
// "overloaded", which clients may retry.
package admission

import (
	"context"
	"errors"
	"time"

	"golang.org/x/sync/semaphore"
)

// ErrOverloaded means a limit stayed reached for the whole wait.
var ErrOverloaded = errors.New("overloaded: no room within the admission wait")

// Limit is a capacity shared by requests in flight, each taking some units
// of it (bytes, or one slot per check) for as long as it runs. It is a
// golang.org/x/sync/semaphore.Weighted, which serves waiters in order, so a
// large request is not starved by a stream of small ones.
type Limit struct {
	sem  *semaphore.Weighted
	size int64
	wait time.Duration
}

// NewLimit returns a Limit of size units; Acquire waits at most wait for
// room (0: refuse at once).
func NewLimit(size int64, wait time.Duration) *Limit {
	return &Limit{sem: semaphore.NewWeighted(size), size: size, wait: wait}
}

// Size is the capacity.
func (l *Limit) Size() int64 { return l.size }

// Acquire takes n units (at most Size), waiting up to the configured wait
// and never past ctx. It returns ErrOverloaded when there was no room; the
// caller must then not do the work, and must not Release.
func (l *Limit) Acquire(ctx context.Context, n int64) error {
	n = min(n, l.size)
	if l.sem.TryAcquire(n) {
		return nil
	}
	if l.wait <= 0 {
		return ErrOverloaded
	}
	ctx, cancel := context.WithTimeout(ctx, l.wait)
	defer cancel()
	if l.sem.Acquire(ctx, n) != nil {
		return ErrOverloaded
	}
	return nil
}

// Release returns n units taken by Acquire (with the same clamp).
func (l *Limit) Release(n int64) { l.sem.Release(min(n, l.size)) }
