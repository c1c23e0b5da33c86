// Package replay remembers one-time values (a token's jti or nonce) until
// they expire, so that a value presented twice within its lifetime is
// refused. State is shared by every replica through the rate limits'
// Redis (rate_limits.store: redis), or held in process.
package replay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelguard/modelguard/policy/ratelimit"
)

// MaxLocalKeys bounds the in-process store: 1,000,000 values (about 60
// MB). Past it, a new value is refused as unavailable rather than let a
// replay through.
const MaxLocalKeys = 1_000_000

// ErrUnavailable is returned when a value cannot be recorded: Redis
// failing (with on_error deny) or the local store full.
var ErrUnavailable = errors.New("replay store unavailable")

// Store records first uses. It is safe for concurrent use.
type Store struct {
	shared *ratelimit.Shared
	local  *localStore // nil: Redis only (on_error deny)
	log    *slog.Logger
	now    func() time.Time
}

// New returns a Store on the rate limits' Redis (shared may be nil: in
// process only).
func New(shared *ratelimit.Shared, log *slog.Logger) *Store {
	s := &Store{shared: shared, log: log, now: time.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if shared == nil || shared.Fallback {
		s.local = &localStore{maxKeys: MaxLocalKeys, seen: make(map[[16]byte]time.Time)}
	}
	return s
}

// firstUseScript sets KEYS[1] for ARGV[1] ms unless it exists: 1 on the
// first use, 0 after.
var firstUseScript = redis.NewScript(`
if redis.call('SET', KEYS[1], '1', 'PX', ARGV[1], 'NX') then return 1 end
return 0
`)

// FirstUse records value until it expires and reports whether this was
// its first use. Errors wrap ErrUnavailable.
func (s *Store) FirstUse(ctx context.Context, value string, until time.Time) (bool, error) {
	sum := sha256.Sum256([]byte(value))
	ttl := until.Sub(s.now())
	if ttl <= 0 {
		return true, nil // expired tokens are refused before this
	}
	if s.shared != nil {
		key := s.shared.Prefix + "{replay}:" + hex.EncodeToString(sum[:16])
		cmd, err := s.shared.Run(ctx, firstUseScript, []string{key}, max(ttl.Milliseconds(), 1))
		if err == nil {
			n, err := cmd.Int64()
			if err != nil {
				return false, fmt.Errorf("%w: script answer: %w", ErrUnavailable, err)
			}
			return n == 1, nil
		}
		if s.local == nil {
			return false, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		s.log.Warn("replay store failing: decided locally (rate_limits.redis.on_error: local)", "error", err)
	}
	return s.local.firstUse([16]byte(sum[:16]), s.now(), until)
}

type localStore struct {
	mu        sync.Mutex
	maxKeys   int
	seen      map[[16]byte]time.Time // value hash -> expiry
	nextSweep time.Time
}

func (l *localStore) firstUse(k [16]byte, now, until time.Time) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(l.nextSweep) { // at most once a second: a full store costs no scan per request
		l.nextSweep = now.Add(time.Second)
		for v, exp := range l.seen {
			if !now.Before(exp) {
				delete(l.seen, v)
			}
		}
	}
	if exp, ok := l.seen[k]; ok && now.Before(exp) {
		return false, nil
	}
	if len(l.seen) >= l.maxKeys {
		return false, fmt.Errorf("%w: %d values held", ErrUnavailable, len(l.seen))
	}
	l.seen[k] = until
	return true, nil
}
