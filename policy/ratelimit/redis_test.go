package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/modelguard/modelguard/test/redisserver"
	"github.com/modelguard/modelguard/test/testkit"
)

// roundTrips counts commands sent to Redis.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

func TestRedisOneRoundTripForAllRules(t *testing.T) {
	srv := redisserver.Start(t)
	b := backend(t, srv.Addr, nil, "")
	rt := &roundTrips{}
	b.redis.client.AddHook(rt)
	l := limiter(b,
		Rule{Name: "a", Requests: 100, Per: time.Minute, Key: []string{"subject"}},
		Rule{Name: "b", Requests: 1000, Per: time.Hour, Key: []string{"subject", "model"}},
		Rule{Name: "c", Tokens: 100000, Per: time.Hour, Key: []string{"key_id"}},
	)
	check(t, l, Request{Subject: "s", Model: "m", KeyID: "k", Tokens: 10}) // loads the script (NOSCRIPT, then EVAL)
	rt.n.Store(0)
	for range 10 {
		if res := check(t, l, Request{Subject: "s", Model: "m", KeyID: "k", Tokens: 10}); !res.Allowed {
			t.Fatalf("%+v", res)
		}
	}
	if n := rt.n.Load(); n != 10 {
		t.Fatalf("%d round trips for 10 requests matching 3 rules", n)
	}
	// Keys expire when the allowance is whole again.
	keys, err := b.redis.client.Keys(context.Background(), DefaultKeyPrefix+"*").Result()
	if err != nil || len(keys) != 3 {
		t.Fatalf("keys %v, %v", keys, err)
	}
	for _, k := range keys {
		if ttl := b.redis.client.PTTL(context.Background(), k).Val(); ttl <= 0 || ttl > time.Hour+time.Second {
			t.Fatalf("%s: ttl %v", k, ttl)
		}
	}
}

// load runs checks from a few goroutines until stop, counting outcomes.
type load struct {
	ok, unavailable, other atomic.Int64
	stop                   chan struct{}
	done                   chan struct{}
}

func startLoad(l *Limiter) *load {
	ld := &load{stop: make(chan struct{}), done: make(chan struct{})}
	n := 4
	finished := make(chan struct{}, n)
	for g := range n {
		go func() {
			defer func() { finished <- struct{}{} }()
			var res Result
			for i := 0; ; i++ {
				select {
				case <-ld.stop:
					return
				default:
				}
				err := l.Check(context.Background(), &Request{Subject: string(rune('a' + g))}, &res)
				switch {
				case err == nil && res.Allowed:
					ld.ok.Add(1)
				case errors.Is(err, ErrUnavailable):
					ld.unavailable.Add(1)
				default:
					ld.other.Add(1)
				}
			}
		}()
	}
	go func() {
		for range n {
			<-finished
		}
		close(ld.done)
	}()
	return ld
}

func (ld *load) end() { close(ld.stop); <-ld.done }

func TestRedisFailsClosedAndRecovers(t *testing.T) {
	srv := redisserver.Start(t)
	// The deadline ends requests to the frozen server whatever it is; it
	// is not the default 50ms so that, on a machine loaded enough to
	// delay this process that long, reconnecting probes still succeed.
	s := Settings{Store: "redis", Redis: RedisSettings{Address: srv.Addr, Timeout: 250 * time.Millisecond}}
	b, err := Open(s, nil, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	l := limiter(b, Rule{Name: "r", Requests: 1_000_000, Per: time.Hour, Key: []string{"subject"}})
	ld := startLoad(l)
	defer ld.end()
	testkit.Eventually(t, "admissions", func() bool { return ld.ok.Load() > 50 })

	// Frozen: connections stay open and no answer comes. The deadline,
	// not the server, ends each request.
	srv.Pause()
	testkit.Eventually(t, "refusals", func() bool { return ld.unavailable.Load() > 20 })
	if testutil.ToFloat64(b.metrics.StoreErrors.WithLabelValues("timeout")) == 0 {
		t.Fatal("no request ended by the deadline")
	}
	var res Result
	if err := l.Check(context.Background(), &Request{Subject: "z"}, &res); !errors.Is(err, ErrUnavailable) || res.Allowed {
		t.Fatalf("while frozen: %v %+v", err, res)
	}
	srv.Resume()
	ok := ld.ok.Load()
	testkit.Eventually(t, "recovery after resume", func() bool { return ld.ok.Load() > ok+50 })

	// Killed mid-load, then back on the same port.
	srv.Stop()
	unavailable := ld.unavailable.Load()
	testkit.Eventually(t, "refusals while down", func() bool { return ld.unavailable.Load() > unavailable+20 })
	srv.Restart()
	ok = ld.ok.Load()
	testkit.Eventually(t, "recovery after restart", func() bool { return ld.ok.Load() > ok+50 })
	if n := ld.other.Load(); n != 0 {
		t.Fatalf("%d requests neither admitted nor refused as unavailable", n)
	}
}

func TestRedisFallbackToLocal(t *testing.T) {
	// Nothing listens: every round trip fails.
	l0, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l0.Addr().String()
	l0.Close()
	b := backend(t, addr, nil, "local")
	l := limiter(b, Rule{Name: "r", Requests: 2, Per: time.Hour})
	for i, want := range []bool{true, true, false} {
		if res := check(t, l, Request{}); res.Allowed != want || !res.Fallback {
			t.Fatalf("request %d: %+v, want allowed %v by local limits", i, res, want)
		}
	}
	if n := testutil.ToFloat64(b.metrics.Fallbacks); n != 3 {
		t.Fatalf("fallbacks counted: %v", n)
	}
}
