// Package watch calls a function when files in a directory change. It is the
// one reload trigger for policies and key files.
//
// It watches directories rather than files: editors and Kubernetes ConfigMap
// volumes replace files by renaming (a ConfigMap swaps its "..data" symlink),
// which a watch on the file itself would lose.
package watch

import (
	"context"
	"fmt"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Options tune a watch.
type Options struct {
	// Debounce groups a burst of events (an editor's write, chmod, rename)
	// into one call. Default 100ms.
	Debounce time.Duration
	// MaxDelay bounds how long a steady stream of events (say, a log file
	// written in the same directory) can postpone the call. Default 1s.
	MaxDelay time.Duration
	// Poll, when positive, also calls onChange at this interval, for file
	// systems where inotify events do not arrive (some network volumes).
	// Callers skip reloads whose content did not change.
	Poll time.Duration
}

// Dirs watches dirs until ctx ends, calling onChange (never concurrently)
// after changes settle. It returns once the watch is established; errors
// after that go to onError, which may be nil.
func Dirs(ctx context.Context, dirs []string, opts Options, onChange func(), onError func(error)) error {
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = time.Second
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	for _, d := range dirs {
		if err := w.Add(d); err != nil {
			w.Close()
			return fmt.Errorf("watch %s: %w", d, err)
		}
	}
	go run(ctx, w, opts, onChange, onError)
	return nil
}

func run(ctx context.Context, w *fsnotify.Watcher, opts Options, onChange func(), onError func(error)) {
	defer w.Close()
	// quiet fires when events pause; limit when a burst has lasted MaxDelay.
	quiet, limit := time.NewTimer(time.Hour), time.NewTimer(time.Hour)
	quiet.Stop()
	limit.Stop()
	defer quiet.Stop()
	defer limit.Stop()
	pending := false
	fire := func() {
		if pending {
			pending = false
			quiet.Stop()
			limit.Stop()
			onChange()
		}
	}
	var poll <-chan time.Time
	if opts.Poll > 0 {
		t := time.NewTicker(opts.Poll)
		defer t.Stop()
		poll = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-w.Events:
			if !ok {
				return
			}
			if !pending {
				pending = true
				limit.Reset(opts.MaxDelay)
			}
			quiet.Reset(opts.Debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			if onError != nil {
				onError(err)
			}
		case <-quiet.C:
			fire()
		case <-limit.C:
			fire()
		case <-poll:
			onChange()
		}
	}
}
