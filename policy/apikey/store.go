package apikey

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelguard/modelguard/policy/watch"
)

// Options tune a Store.
type Options struct {
	// OnReload is called after every reload attempt that read new content or
	// failed (nil error: the new content is in force), for metrics. It is not
	// called for the initial load, whose error Open returns.
	OnReload func(err error)
	// Logger receives reload outcomes; nil discards them.
	Logger *slog.Logger
	// Now is the clock for expiry; nil means time.Now.
	Now func() time.Time
	// Poll also re-reads the file at this interval (watch.Options.Poll), for
	// volumes where file events do not arrive; 0 relies on events alone.
	Poll time.Duration
}

// Store serves lookups from the last good load of a key file and reloads it
// when it changes. Lookup takes no locks: each load builds a new Set and
// swaps a pointer to it.
type Store struct {
	path     string
	log      *slog.Logger
	now      func() time.Time
	onReload func(error)

	set atomic.Pointer[Set]

	mu sync.Mutex // serialises reloads; fields below are guarded by it
	// lastSum is the content of the last read, good or bad, so that an
	// unchanged file (every poll tick) is skipped without re-parsing or
	// logging again. seen is false after a read failure.
	lastSum [32]byte
	seen    bool
}

// Open loads the key file at path, refusing to start on any problem, then
// watches the file's directory until ctx ends and reloads on change. Watching
// the directory rather than the file keeps working across editors' renames
// and Kubernetes ConfigMap "..data" symlink swaps. After ctx ends the Store
// keeps serving the last good set.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	s := &Store{path: path, log: opts.Logger, now: opts.Now, onReload: opts.OnReload}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	set, err := Load(path)
	if err != nil {
		return nil, fmt.Errorf("open api key store: %w", err)
	}
	s.set.Store(set)
	s.lastSum, s.seen = set.sum, true

	err = watch.Dirs(ctx, []string{filepath.Dir(path)}, watch.Options{Poll: opts.Poll},
		func() { _ = s.reload() },
		func(err error) {
			// Events may have been lost (inotify overflow): re-read to be sure.
			s.log.Warn("api key file watch error", "file", s.path, "err", err)
			_ = s.reload()
		})
	if err != nil {
		return nil, fmt.Errorf("open api key store: %w", err)
	}
	// The file may have changed between the load and the watch starting.
	_ = s.reload()
	set = s.set.Load()
	s.log.Info("api keys loaded", "file", path, "revision", set.Revision(), "keys", set.Len())
	return s, nil
}

// Lookup checks a presented key against the set in force. Errors are *Error
// with Reason ReasonMalformed, ReasonUnknown, ReasonExpired or
// ReasonDisabled. The returned Key must not be modified.
func (s *Store) Lookup(key string) (*Key, error) {
	return s.set.Load().Lookup(key, s.now())
}

// Revision identifies the file content in force (see Set.Revision).
func (s *Store) Revision() string { return s.set.Load().Revision() }

// Len returns the number of keys in force.
func (s *Store) Len() int { return s.set.Load().Len() }

// reload re-reads the file and swaps in the new set if it is valid. It
// returns the reason a reload was refused, for tests; callers in production
// learn it through the log and OnReload.
func (s *Store) reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Hashing first costs one read of the file and no allocation, so the
	// many events and poll ticks that change nothing stay cheap at any size.
	sum, err := fileSum(s.path)
	if err != nil {
		// A missing file is most likely mid-edit; an empty key set would lock
		// everyone out, so keep the last good one.
		s.seen = false
		return s.refuse(err)
	}
	if s.seen && sum == s.lastSum {
		return nil
	}
	s.lastSum, s.seen = sum, true
	cur := s.set.Load()
	if sum == cur.sum {
		// Back to the content in force after a refused edit or a failed read.
		s.log.Info("api key file back to the revision in force", "file", s.path, "revision", cur.Revision())
		s.report(nil)
		return nil
	}
	// load reads the file again. If it changed in between, what was parsed
	// is what the next reload must compare with: the file may be back to
	// the content hashed above by then (a tool rewriting it in place), and
	// skipping it would leave a refused read in force.
	set, parsed, err := load(s.path, cur)
	s.lastSum, s.seen = parsed, parsed != [32]byte{}
	if err != nil {
		return s.refuse(err)
	}
	s.set.Store(set)
	s.log.Info("api keys reloaded", "file", s.path, "revision", set.Revision(),
		"previous", cur.Revision(), "keys", set.Len())
	s.report(nil)
	return nil
}

func fileSum(path string) ([32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, fmt.Errorf("read key file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, fmt.Errorf("read key file: %w", err)
	}
	return [32]byte(h.Sum(nil)), nil
}

func (s *Store) refuse(err error) error {
	s.log.Error("api key reload refused, keeping the keys in force",
		"file", s.path, "revision", s.set.Load().Revision(), "err", err)
	s.report(err)
	return err
}

func (s *Store) report(err error) {
	if s.onReload != nil {
		s.onReload(err)
	}
}
