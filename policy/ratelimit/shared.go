package ratelimit

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// Shared is the rate limits' Redis connection as other subsystems use it
// for state every replica must see (brute-force lockouts, seen token
// ids): one connection pool, one deadline per round trip and one breaker,
// so a failing Redis costs each request at most redis.timeout whatever
// asks.
type Shared struct {
	r *redisStore
	// Prefix starts the rate limits' keys (redis.key_prefix); users add
	// their own segment after it.
	Prefix string
	// Fallback is redis.on_error: local: a failed round trip is to be
	// decided by the replica's own state rather than refused.
	Fallback bool
}

// Shared returns the Redis store for other subsystems, or nil with store:
// local.
func (b *Backend) Shared() *Shared {
	if b.redis == nil {
		return nil
	}
	return &Shared{r: b.redis, Prefix: b.redis.prefix, Fallback: b.fallback}
}

// Run runs a script within the store's deadline, through its breaker. Its
// errors wrap ErrUnavailable.
func (s *Shared) Run(ctx context.Context, script *redis.Script, keys []string, args ...any) (*redis.Cmd, error) {
	return s.r.run(ctx, script, keys, args)
}
