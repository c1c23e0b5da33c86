package testkit

import "sync"

// EventLog is an in-memory, goroutine-safe record of events. With
// E = audit.Event its Record method makes it the engine's audit sink.
//
// It is generic rather than tied to audit.Event because the audit
// package's own tests import testkit, and testkit importing audit back
// would be an import cycle.
type EventLog[E any] struct {
	mu     sync.Mutex
	events []E
}

// Record keeps a copy of *e; it never fails.
func (l *EventLog[E]) Record(e *E) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, *e)
	return nil
}

// Events returns a copy of the events recorded so far, in order.
func (l *EventLog[E]) Events() []E {
	return l.Filter(func(E) bool { return true })
}

// Filter returns copies of the events recorded so far that keep accepts,
// in order.
func (l *EventLog[E]) Filter(keep func(E) bool) []E {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []E
	for _, e := range l.events {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}
