// Package ratelimit enforces request limits and token budgets before a
// request reaches the model: GCRA (one timestamp per key, exact burst and
// rate), reservations made at admission so concurrent bursts never
// overshoot, rules matched on role, model, subject, claim or a class the
// policy picks, and counts kept in-process or in Redis (one atomic script
// per request, the server's clock). It knows nothing of gateways or of the
// configuration file: the core passes a Request and reads a Result.
package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"
)

// ErrUnavailable is returned when the store cannot decide within its
// deadline (Redis down or slow, local store full). The caller denies (503,
// reason ratelimit_unavailable) unless the operator chose on_error: local,
// in which case Check never returns it for Redis failures.
var ErrUnavailable = errors.New("rate limit store unavailable")

// Request is what the limits look at.
type Request struct {
	Subject string
	KeyID   string // API key id; "" for JWTs
	Source  string // client address, without port
	Model   string
	Roles   []string
	Class   string         // the limit class the policy picked; "" if none
	Claims  map[string]any // JWT claims; nil for API keys
	// Tokens is what the request reserves from token budgets: its prompt
	// estimate plus the largest completion it may produce.
	Tokens int64
}

// Window describes one limit for the x-ratelimit-* headers.
type Window struct {
	Limit     int64         // amount per window; 0 when no such limit applied
	Remaining int64         // units left now
	Reset     time.Duration // until the allowance is whole again
}

// Result is the outcome of Check. Reuse one per goroutine (its buffers are
// kept) to stay allocation-free.
type Result struct {
	Allowed bool
	// Rule names the limit that refused, KeyKind what it is counted per
	// ("subject+model", "global"): never the key's values.
	Rule    string
	KeyKind string
	// RetryAfter is when the refused request could first be admitted.
	RetryAfter time.Duration
	// Quota: the refusal lasts longer than quota_after, or the request
	// could never fit; clients should not retry (insufficient_quota).
	Quota bool
	// Requests and Tokens are the tightest request and token limits that
	// applied, for the response headers.
	Requests, Tokens Window
	// Reserved is the tokens this admitted request holds (see Hold).
	Reserved int64
	// Fallback: Redis failed and the replica's own limits decided.
	Fallback bool

	refusedTokens bool // the refusing rule is a token budget
	charges       []charge
	key           []byte
}

// Matched reports whether any limit applied.
func (r *Result) Matched() bool { return len(r.charges) > 0 }

// charge is one matching rule's part of a decision.
type charge struct {
	rule *rule
	cost int64     // µs of allowance this request takes
	key  [2]uint64 // local store key
	rkey string    // Redis key
	// Set by the store: the key's theoretical arrival time minus now,
	// before this request (charged only if every rule admitted).
	d int64
}

func (c *charge) refused() bool { return c.d+c.cost > c.rule.capacity }

// store keeps the counts. take decides all charges atomically: if any
// refuses, none is charged. adjust moves one key by delta µs (a refund is
// negative), never below "full" and, charging, never past its capacity.
type store interface {
	prepare(c *charge, key []byte)
	take(ctx context.Context, cs []charge) error
	adjust(ctx context.Context, c *charge, delta int64) error
}

// Limiter applies one configuration's rules. It is immutable: a reload
// builds a new one on the same Backend, so counts survive reloads.
type Limiter struct {
	rules             []*rule
	b                 *Backend
	quotaAfter        time.Duration
	charsPerToken     int64
	defaultCompletion int64
}

// Enabled reports whether any rule is configured.
func (l *Limiter) Enabled() bool { return l != nil && len(l.rules) > 0 }

// KeysBySource reports whether a rule counts per client address (key
// "source"): only then does Check read Request.Source, which a gateway may
// have to fetch.
func (l *Limiter) KeysBySource() bool {
	for _, r := range l.rules {
		for _, k := range r.keys {
			if k.kind == keySource {
				return true
			}
		}
	}
	return false
}

// Check decides req. It returns ErrUnavailable (wrapped) when the store
// fails and the operator did not choose a fallback; res is then refused.
func (l *Limiter) Check(ctx context.Context, req *Request, res *Result) error {
	res.reset()
	never := false
	for _, r := range l.rules {
		if !r.matches(req) {
			continue
		}
		c := charge{rule: r, cost: r.interval}
		if r.tokens {
			if req.Tokens > r.burst {
				never = true // could never fit: refuse without touching the store
				c.cost = r.capacity + 1
			} else {
				c.cost = max(req.Tokens, 0) * r.interval
			}
		}
		res.key = r.appendKey(res.key[:0], req)
		l.b.prepare(&c, res.key)
		res.charges = append(res.charges, c)
	}
	if len(res.charges) == 0 {
		res.Allowed = true
		return nil
	}
	if never {
		l.finish(req, res, true)
		return nil
	}
	fallback, err := l.b.take(ctx, res.charges)
	if err != nil {
		res.Allowed = false
		return err
	}
	res.Fallback = fallback
	l.finish(req, res, false)
	return nil
}

// finish turns the store's answers into the result and counts them.
func (l *Limiter) finish(req *Request, res *Result, never bool) {
	res.Allowed = true
	var retry int64
	for i := range res.charges {
		c := &res.charges[i]
		if c.refused() {
			res.Allowed = false
			wait := c.d + c.cost - c.rule.capacity
			if never && c.cost > c.rule.capacity {
				wait = c.rule.capacity
				res.Quota = true
			}
			if wait >= retry {
				retry, res.Rule, res.KeyKind, res.refusedTokens = wait, c.rule.name, c.rule.keyKind, c.rule.tokens
			}
		}
	}
	for i := range res.charges {
		c := &res.charges[i]
		d := max(c.d, 0)
		if res.Allowed {
			d += c.cost
		}
		w := Window{Limit: c.rule.amount, Remaining: max(c.rule.capacity-d, 0) / c.rule.interval, Reset: time.Duration(d) * time.Microsecond}
		target := &res.Requests
		if c.rule.tokens {
			target = &res.Tokens
		}
		if target.Limit == 0 || w.Remaining < target.Remaining || (w.Remaining == target.Remaining && w.Reset > target.Reset) {
			*target = w
		}
		l.b.metrics.count(c, res.Allowed, req.Tokens)
	}
	if res.Allowed {
		if res.Tokens.Limit > 0 {
			res.Reserved = max(req.Tokens, 0)
		}
		return
	}
	res.RetryAfter = time.Duration(retry) * time.Microsecond
	if res.RetryAfter > l.quotaAfter {
		res.Quota = true
	}
}

// Hold returns what the admitted request res holds of token budgets, for
// a gateway that will learn the real usage and Settle it; nil when it
// holds nothing. It copies what it needs: res may be reused.
func (l *Limiter) Hold(res *Result) *Reservation {
	if !res.Allowed || res.Reserved == 0 {
		return nil
	}
	v := &Reservation{b: l.b, tokens: res.Reserved, fallback: res.Fallback}
	for _, c := range res.charges {
		if c.rule.tokens {
			v.charges = append(v.charges, c)
		}
	}
	return v
}

// Reservation is the tokens an admitted request reserved at admission.
// It ends once: settled to the real usage, or kept as the charge. Later
// calls change nothing, so a repeated response phase cannot refund twice.
type Reservation struct {
	b        *Backend
	tokens   int64
	fallback bool // decided by the local store: settle there
	charges  []charge
	done     atomic.Bool
}

// Tokens is what the request reserved.
func (v *Reservation) Tokens() int64 { return v.tokens }

// Settle corrects every token budget the request was charged to from the
// reservation to used, the tokens the model reports: the unused part is
// refunded (never past a whole allowance), an overrun is charged (never
// past an empty one: the balance does not go negative). A store failure
// leaves the reservation as the charge.
func (v *Reservation) Settle(ctx context.Context, used int64) error {
	if !v.done.CompareAndSwap(false, true) {
		return nil
	}
	used = max(used, 0)
	var errs []error
	for i := range v.charges {
		c := &v.charges[i]
		countSettled(c, used-v.tokens)
		if used == v.tokens {
			continue
		}
		if err := v.b.adjust(ctx, c, (used-v.tokens)*c.rule.interval, v.fallback); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		v.b.metrics.Settlements.WithLabelValues("error").Inc()
		return err
	}
	v.b.metrics.Settlements.WithLabelValues("settled").Inc()
	return nil
}

// Keep ends the reservation as the charge, counted under reason
// (no_usage: the response reported none; no_response: no response was
// seen).
func (v *Reservation) Keep(reason string) {
	if v.done.CompareAndSwap(false, true) {
		v.b.metrics.Settlements.WithLabelValues(reason).Inc()
	}
}

func (r *Result) reset() {
	charges, key := r.charges[:0], r.key
	clear(r.charges[:cap(r.charges)]) // drop rule pointers and keys of the last use
	*r = Result{charges: charges, key: key}
}

// Backend owns the stores and their connections; it lives across reloads.
type Backend struct {
	local    *localStore // the store, or the fallback of on_error: local
	redis    *redisStore // nil with store: local
	fallback bool
	metrics  *Metrics
	log      *slog.Logger
}

// Open creates the stores for validated settings (zero fields take their
// defaults). Redis is not required to be up: requests fail (or fall back)
// until it is.
func Open(s Settings, m *Metrics, log *slog.Logger) (*Backend, error) {
	s = s.orDefaults()
	if m == nil {
		m = NewMetrics(nil)
	}
	b := &Backend{metrics: m, log: log, fallback: s.Redis.OnError == "local"}
	if s.Store == "local" || b.fallback {
		b.local = newLocalStore(s.Local.MaxKeys, nil)
	}
	if s.Store == "redis" {
		r, err := newRedisStore(s.Redis, m, log)
		if err != nil {
			return nil, err
		}
		b.redis = r
	}
	return b, nil
}

// Close releases the Redis connections.
func (b *Backend) Close() error {
	if b.redis != nil {
		return b.redis.client.Close()
	}
	return nil
}

// Limiter compiles the rules of validated settings (zero fields take their
// defaults).
func (b *Backend) Limiter(s Settings) *Limiter {
	s = s.orDefaults()
	l := &Limiter{b: b, quotaAfter: s.QuotaAfter, charsPerToken: int64(s.PromptCharsPerToken), defaultCompletion: int64(s.DefaultCompletionTokens)}
	for _, r := range s.Rules {
		c := compileRule(r)
		c.counters = b.metrics.forRule(c.name)
		l.rules = append(l.rules, c)
	}
	return l
}

func (b *Backend) prepare(c *charge, key []byte) {
	if b.local != nil {
		b.local.prepare(c, key)
	}
	if b.redis != nil {
		b.redis.prepare(c, key)
	}
}

// take decides on the primary store; with on_error: local, a Redis
// failure is decided by the local store instead (fallback true).
func (b *Backend) take(ctx context.Context, cs []charge) (fallback bool, err error) {
	if b.redis == nil {
		if err = b.local.take(ctx, cs); err != nil {
			b.metrics.StoreErrors.WithLabelValues("full").Inc()
		}
		return false, err
	}
	err = b.redis.take(ctx, cs)
	if err == nil || !b.fallback {
		return false, err
	}
	b.metrics.Fallbacks.Inc() // the caller logs each such decision
	return true, b.local.take(ctx, cs)
}

func (b *Backend) adjust(ctx context.Context, c *charge, delta int64, fallback bool) error {
	if b.redis == nil || fallback {
		return b.local.adjust(ctx, c, delta)
	}
	return b.redis.adjust(ctx, c, delta)
}
