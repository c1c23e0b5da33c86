package ratelimit

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/secret"
)

// takeScript decides every matching rule of one request in one round trip
// and atomically: KEYS are the rules' keys, ARGV pairs of (cost,
// capacity) in µs. Time is the server's (TIME), so replicas' clocks do not
// matter. It returns {admitted 0|1, d1..dn} where di is the key's
// theoretical arrival time minus now, before this request's charge. A key
// expires when its allowance is whole again. Lua numbers are doubles:
// Validate keeps every quantity below 2^52 µs.
var takeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {1}
local new = {}
for i = 1, #KEYS do
  local cost = tonumber(ARGV[2*i-1])
  local cap = tonumber(ARGV[2*i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  new[i] = tat + cost
  if new[i] - now > cap then out[1] = 0 end
  out[i+1] = tat - now
end
if out[1] == 1 then
  for i = 1, #KEYS do
    local d = new[i] - now
    if d > 0 then
      redis.call('SET', KEYS[i], string.format('%d', new[i]), 'PX', math.ceil(d / 1000) + 1)
    end
  end
end
return out
`)

// adjustScript moves one key by ARGV[1] µs (negative: a refund), never
// below "whole allowance", which it stores as no key at all, and, charging,
// never past ARGV[2] µs (the capacity: an empty allowance).
var adjustScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local delta = tonumber(ARGV[1])
local new = tat + delta
if delta > 0 then new = math.max(tat, math.min(new, now + tonumber(ARGV[2]))) end
if new <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil((new - now) / 1000) + 1)
return new - now
`)

// Backoff between reconnection attempts while Redis is failing.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
)

type redisStore struct {
	client  *redis.Client
	prefix  string
	timeout time.Duration
	metrics *Metrics
	log     *slog.Logger

	// retryAt is 0 while Redis answers; after a failure, requests fail at
	// once until retryAt (unix ns), then one request probes. This keeps a
	// dead server from costing every request the whole timeout.
	retryAt atomic.Int64
	mu      sync.Mutex
	backoff time.Duration
}

func newRedisStore(s RedisSettings, m *Metrics, log *slog.Logger) (*redisStore, error) {
	opt := &redis.Options{
		Addr:                  s.Address,
		Username:              s.Username,
		DB:                    s.DB,
		PoolSize:              s.PoolSize,
		DialTimeout:           s.Timeout,
		DialerRetries:         1,
		ReadTimeout:           s.Timeout,
		WriteTimeout:          s.Timeout,
		PoolTimeout:           s.Timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1, // a retry would overrun the deadline; the breaker retries
		DisableIdentity:       true,
	}
	if s.PasswordEnv != "" {
		pw, err := secret.Read("", s.PasswordEnv, true)
		if err != nil {
			return nil, &field.Error{Path: "redis.password_env", Err: err}
		}
		opt.Password = string(pw)
	}
	if s.TLS {
		opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return &redisStore{client: redis.NewClient(opt), prefix: s.KeyPrefix, timeout: s.Timeout, metrics: m, log: log}, nil
}

// prepare names the key: prefix, the rule name as hash tag (a rule's keys
// share a Redis Cluster slot), and a hash of the key's values so no
// subject or address is stored in clear.
func (r *redisStore) prepare(c *charge, key []byte) {
	sum := sha256.Sum256(key)
	c.rkey = r.prefix + "{" + c.rule.name + "}:" + hex.EncodeToString(sum[:16])
}

func (r *redisStore) take(ctx context.Context, cs []charge) error {
	keys := make([]string, len(cs))
	args := make([]any, 0, 2*len(cs))
	for i := range cs {
		keys[i] = cs[i].rkey
		args = append(args, cs[i].cost, cs[i].rule.capacity)
	}
	cmd, err := r.run(ctx, takeScript, keys, args)
	if err != nil {
		return err
	}
	out, err := cmd.Int64Slice()
	if err != nil {
		return r.failed(fmt.Errorf("%w: script answer: %w", ErrUnavailable, err), "error")
	}
	if len(out) != len(cs)+1 {
		return r.failed(fmt.Errorf("%w: script returned %d values for %d keys", ErrUnavailable, len(out), len(cs)), "error")
	}
	for i := range cs {
		cs[i].d = out[i+1]
	}
	return nil
}

func (r *redisStore) adjust(ctx context.Context, c *charge, delta int64) error {
	_, err := r.run(ctx, adjustScript, []string{c.rkey}, []any{delta, c.rule.capacity})
	return err
}

// run makes one round trip within the deadline, through the breaker.
func (r *redisStore) run(ctx context.Context, s *redis.Script, keys []string, args []any) (*redis.Cmd, error) {
	if !r.admit() {
		r.metrics.StoreErrors.WithLabelValues("circuit_open").Inc()
		return nil, fmt.Errorf("%w: redis failed recently, next attempt in at most %v", ErrUnavailable, maxBackoff)
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	start := time.Now()
	cmd := s.Run(ctx, r.client, keys, args...)
	r.metrics.StoreDuration.Observe(time.Since(start).Seconds())
	if err := cmd.Err(); err != nil {
		reason := "error"
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			reason = "timeout"
		}
		return nil, r.failed(fmt.Errorf("%w: redis: %w", ErrUnavailable, err), reason)
	}
	r.recovered()
	return cmd, nil
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func (r *redisStore) admit() bool {
	at := r.retryAt.Load()
	if at == 0 {
		return true
	}
	now := time.Now().UnixNano()
	if now < at {
		return false
	}
	r.mu.Lock()
	next := now + int64(r.backoff)
	r.mu.Unlock()
	return r.retryAt.CompareAndSwap(at, next) // one probe per period
}

func (r *redisStore) failed(err error, reason string) error {
	r.metrics.StoreErrors.WithLabelValues(reason).Inc()
	r.mu.Lock()
	first := r.backoff == 0
	r.backoff = min(max(2*r.backoff, minBackoff), maxBackoff)
	wait := r.backoff/2 + rand.N(r.backoff/2+1) // jittered so replicas do not probe in step
	r.retryAt.Store(time.Now().Add(wait).UnixNano())
	r.mu.Unlock()
	if first {
		r.log.Error("rate limit store failing; requests are refused 503 or decided locally (redis.on_error) until it answers", "error", err)
	}
	return err
}

func (r *redisStore) recovered() {
	if r.retryAt.Load() == 0 {
		return
	}
	r.mu.Lock()
	r.backoff = 0
	r.retryAt.Store(0)
	r.mu.Unlock()
	r.log.Info("rate limit store answering again")
}
