// Package redisstore opens the rate limits' Redis store as the subsystems
// that share it (lockout, replay protection) use it, for their tests. It
// is apart from redisserver because policy/ratelimit's own tests use
// redisserver.
package redisstore

import (
	"log/slog"
	"testing"
	"time"

	"github.com/modelguard/modelguard/policy/ratelimit"
)

// Shared connects to the Redis at addr with redis.on_error onError
// ("deny" or "local") and a generous timeout for loaded machines; the
// connection closes when the test ends.
func Shared(tb testing.TB, addr, onError string) *ratelimit.Shared {
	tb.Helper()
	b, err := ratelimit.Open(ratelimit.Settings{Store: "redis", Redis: ratelimit.RedisSettings{Address: addr, Timeout: time.Second, OnError: onError}}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	return b.Shared()
}
