package lockout

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/modelguard/modelguard/policy/ratelimit"
)

// ErrUnavailable is returned when the shared store cannot answer and
// rate_limits.redis.on_error is deny.
var ErrUnavailable = errors.New("lockout store unavailable")

// Trip says what locked an address out, for the audit record and metric.
type Trip struct {
	Source string // the address locked out
	KeyID  string // the key id whose failures tripped it, with By key_id
	By     string // BySource or ByKeyID
}

// Options are a Guard's collaborators; all are optional.
type Options struct {
	Logger *slog.Logger
	// Shared is the rate limits' Redis; nil keeps state in process.
	Shared *ratelimit.Shared
	// OnLockout is called once when an address is locked out.
	OnLockout func(Trip)
	// Now is the local store's clock; nil means time.Now.
	Now func() time.Time
}

// Guard counts authentication failures and answers whether an address is
// locked out. It is safe for concurrent use.
type Guard struct {
	s         Settings
	bySource  bool
	byKey     bool
	shared    *ratelimit.Shared
	local     *localStore
	log       *slog.Logger
	onLockout func(Trip)
	metrics   *Metrics
}

// New builds a Guard for validated, enabled settings.
func New(s Settings, m *Metrics, opts Options) *Guard {
	s = s.orDefaults()
	g := &Guard{s: s, shared: opts.Shared, log: opts.Logger, onLockout: opts.OnLockout, metrics: m}
	for _, b := range s.By {
		g.bySource = g.bySource || b == BySource
		g.byKey = g.byKey || b == ByKeyID
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.metrics == nil {
		g.metrics = NewMetrics(nil)
	}
	if g.shared == nil || g.shared.Fallback {
		now := opts.Now
		if now == nil {
			now = time.Now
		}
		g.local = newLocalStore(s.MaxKeys, now)
	}
	return g
}

// Status is the status a locked-out address gets.
func (g *Guard) Status() int { return g.s.Status }

// Locked reports how long the address (as the gateway gives it, "ip:port"
// or "ip") stays locked out: 0 when it is not. With a shared store that
// fails and on_error deny, the error wraps ErrUnavailable.
func (g *Guard) Locked(ctx context.Context, address string) (time.Duration, error) {
	src, ok := host(address)
	if !ok {
		return 0, nil // nothing to key on; the IP lists judge unusable addresses
	}
	if g.shared != nil {
		cmd, err := g.shared.Run(ctx, lockedScript, []string{g.redisKey("lock", src.String())})
		if err == nil {
			ms, err := cmd.Int64()
			if err != nil {
				return 0, fmt.Errorf("%w: script answer: %w", ErrUnavailable, err)
			}
			return time.Duration(max(ms, 0)) * time.Millisecond, nil
		}
		if g.local == nil {
			return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		g.log.Warn("lockout store failing: decided locally (rate_limits.redis.on_error: local)", "error", err)
	}
	return g.local.locked(src), nil
}

// Failed counts one failed authentication from address, against keyID
// when the credential named an existing key ("" otherwise), and locks
// the address out when a count reaches MaxFailures.
func (g *Guard) Failed(ctx context.Context, address, keyID string) error {
	src, ok := host(address)
	if !ok {
		return nil
	}
	if !g.byKey {
		keyID = ""
	}
	var by string
	if g.shared != nil {
		keys := []string{g.redisKey("lock", src.String()), g.redisKey("src", src.String())}
		if keyID != "" {
			keys = append(keys, g.redisKey("key", keyID))
		}
		cmd, err := g.shared.Run(ctx, failedScript, keys, g.s.MaxFailures, g.s.Window.Milliseconds(), g.s.Cooldown.Milliseconds(), g.bySource)
		switch {
		case err == nil:
			n, err := cmd.Int64()
			if err != nil {
				return fmt.Errorf("%w: script answer: %w", ErrUnavailable, err)
			}
			by = [...]string{"", BySource, ByKeyID}[min(max(n, 0), 2)]
		case g.local == nil:
			g.metrics.StoreErrors.Inc()
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		default:
			g.log.Warn("lockout store failing: failure counted locally (rate_limits.redis.on_error: local)", "error", err)
		}
		if err == nil {
			g.tripped(by, src, keyID)
			return nil
		}
	}
	by, err := g.local.failed(src, keyID, g.s, g.bySource)
	if err != nil {
		g.metrics.StoreErrors.Inc()
		return err
	}
	g.tripped(by, src, keyID)
	return nil
}

func (g *Guard) tripped(by string, src netip.Addr, keyID string) {
	if by == "" {
		return
	}
	g.metrics.Lockouts.WithLabelValues(by).Inc()
	if by != ByKeyID {
		keyID = ""
	}
	if g.onLockout != nil {
		g.onLockout(Trip{Source: src.String(), KeyID: keyID, By: by})
	}
}

// redisKey names a key: the rate limits' prefix, "lockout", the kind and
// a hash of the value (no address or key id is stored in clear). The
// kinds share the hash tag {lockout}: one script touches them together,
// so on Redis Cluster they must share a slot.
func (g *Guard) redisKey(kind, value string) string {
	sum := sha256.Sum256([]byte(value))
	return g.shared.Prefix + "{lockout}:" + kind + ":" + hex.EncodeToString(sum[:16])
}

// host is the address without its port, unmapped and without zone.
func host(address string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(address); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if a, err := netip.ParseAddr(address); err == nil {
		return a.Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}

// lockedScript returns the milliseconds the lock KEYS[1] has left (<= 0:
// none).
var lockedScript = redis.NewScript(`return redis.call('PTTL', KEYS[1])`)

// failedScript counts one failure in KEYS[2] (per source, when ARGV[4] is
// 1) and KEYS[3] (per key id, when present), each expiring ARGV[2] ms
// after its first failure, and sets the lock KEYS[1] for ARGV[3] ms when
// a count reaches ARGV[1]. It returns 1 (source) or 2 (key id) when it
// set the lock, else 0. The source count restarts at a lockout, so an
// address gets MaxFailures attempts again after its cooldown.
var failedScript = redis.NewScript(`
local max = tonumber(ARGV[1])
local function count(k)
  local n = redis.call('INCR', k)
  if n == 1 then redis.call('PEXPIRE', k, ARGV[2]) end
  return n
end
local by = 0
if ARGV[4] == '1' and count(KEYS[2]) >= max then by = 1 end
if KEYS[3] and count(KEYS[3]) >= max and by == 0 then by = 2 end
if by == 0 then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('SET', KEYS[1], '1', 'PX', ARGV[3], 'NX') then return by end
return 0
`)

// Metrics are the lockout's Prometheus collectors.
type Metrics struct {
	Lockouts    *prometheus.CounterVec // by (source, key_id)
	StoreErrors prometheus.Counter
}

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Lockouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelguard_lockouts_total",
			Help: "Client addresses locked out after failed authentications, by what tripped the lockout (source, key_id).",
		}, []string{"by"}),
		StoreErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modelguard_lockout_store_errors_total",
			Help: "Authentication failures the lockout store could not count (Redis failing, local store full).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Lockouts, m.StoreErrors)
	}
	return m
}

// localStore keeps counts and locks in process, bounded by maxKeys.
type localStore struct {
	mu        sync.Mutex
	now       func() time.Time
	maxKeys   int
	entries   map[localKey]*entry
	nextSweep time.Time
}

// localKey is a count per source or key id, or a source's lock.
type localKey struct {
	kind  byte // 's' source count, 'k' key id count, 'l' lock
	addr  netip.Addr
	keyID string
}

type entry struct {
	n       int
	expires time.Time
}

func newLocalStore(maxKeys int, now func() time.Time) *localStore {
	return &localStore{now: now, maxKeys: maxKeys, entries: make(map[localKey]*entry)}
}

func (s *localStore) locked(src netip.Addr) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[localKey{kind: 'l', addr: src}]; e != nil {
		return max(e.expires.Sub(s.now()), 0)
	}
	return 0
}

var errFull = errors.New("lockout: local store full")

func (s *localStore) failed(src netip.Addr, keyID string, set Settings, bySource bool) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.sweep(now)
	count := func(k localKey) (int, error) {
		e := s.entries[k]
		if e == nil || !now.Before(e.expires) {
			if e == nil && len(s.entries) >= s.maxKeys {
				return 0, errFull
			}
			e = &entry{expires: now.Add(set.Window)}
			s.entries[k] = e
		}
		e.n++
		return e.n, nil
	}
	by := ""
	if bySource {
		n, err := count(localKey{kind: 's', addr: src})
		if err != nil {
			return "", err
		}
		if n >= set.MaxFailures {
			by = BySource
		}
	}
	if keyID != "" {
		n, err := count(localKey{kind: 'k', keyID: keyID})
		if err != nil {
			return "", err
		}
		if n >= set.MaxFailures && by == "" {
			by = ByKeyID
		}
	}
	if by == "" {
		return "", nil
	}
	delete(s.entries, localKey{kind: 's', addr: src})
	lock := localKey{kind: 'l', addr: src}
	if l := s.entries[lock]; l != nil && now.Before(l.expires) {
		return "", nil // already locked
	}
	s.entries[lock] = &entry{expires: now.Add(set.Cooldown)}
	return by, nil
}

// sweep drops expired entries, at most once a second.
func (s *localStore) sweep(now time.Time) {
	if now.Before(s.nextSweep) {
		return
	}
	s.nextSweep = now.Add(time.Second)
	for k, e := range s.entries {
		if !now.Before(e.expires) {
			delete(s.entries, k)
		}
	}
}
