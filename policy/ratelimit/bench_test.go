package ratelimit

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/redisserver"
)

// benchRules match every request: a request limit per subject, one per
// subject and model, and a token budget per key id. Large enough never to
// refuse, so every iteration charges.
var benchRules = []Rule{
	{Name: "rpm", Requests: 1_000_000, Per: time.Second, Key: []string{"subject"}},
	{Name: "per-model", Requests: 1_000_000, Per: time.Second, Key: []string{"subject", "model"}},
	{Name: "tokens", Tokens: 1_000_000, Per: time.Second, Key: []string{"key_id"}},
}

func benchCheck(b *testing.B, l *Limiter) {
	subjects := make([]string, 1024)
	for i := range subjects {
		subjects[i] = "user-" + strconv.Itoa(i)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var res Result
		req := Request{Model: "gpt-4o-mini", Roles: []string{"chat-user"}, Tokens: 1}
		for pb.Next() {
			i := next.Add(1)
			req.Subject, req.KeyID = subjects[i%1024], subjects[(i/7)%1024]
			if err := l.Check(context.Background(), &req, &res); err != nil || !res.Allowed {
				b.Fatal(err, res.Rule)
			}
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	b.Run("no-limits", func(b *testing.B) {
		benchCheck(b, limiter(backendB(b, "local")))
	})
	for _, n := range []int{1, 3} {
		b.Run("local-"+strconv.Itoa(n)+"-rules", func(b *testing.B) {
			benchCheck(b, limiter(backendB(b, "local"), benchRules[:n]...))
		})
	}
	b.Run("redis-3-rules", func(b *testing.B) {
		srv := redisserver.Start(b)
		bk := backendB(b, srv.Addr)
		rt := &roundTrips{}
		bk.redis.client.AddHook(rt)
		l := limiter(bk, benchRules...)
		var res Result
		l.Check(context.Background(), &Request{}, &res) // load the script
		rt.n.Store(0)
		benchCheck(b, l)
		b.ReportMetric(float64(rt.n.Load())/float64(b.N), "roundtrips/op")
	})
}

func backendB(b *testing.B, store string) *Backend {
	s := Settings{Store: "local"}
	if store != "local" {
		s = Settings{Store: "redis", Redis: RedisSettings{Address: store, Timeout: time.Second}}
	}
	bk, err := Open(s, nil, quiet)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bk.Close() })
	return bk
}

// fillLocal holds n active keys (an hour's limit each) and returns the
// heap they take.
func fillLocal(n int) (bytes uint64, s *localStore) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s = newLocalStore(n, nil)
	l := &Limiter{b: &Backend{local: s, metrics: NewMetrics(nil)}, quotaAfter: time.Minute}
	r := compileRule(Rule{Name: "r", Requests: 10, Per: time.Hour, Key: []string{"subject"}})
	r.counters = l.b.metrics.forRule("r")
	l.rules = []*rule{r}
	var res Result
	req := Request{}
	buf := make([]byte, 0, 16)
	for i := range n {
		buf = strconv.AppendInt(buf[:0], int64(i), 36)
		req.Subject = string(buf)
		if err := l.Check(context.Background(), &req, &res); err != nil {
			panic(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	return after.HeapAlloc - before.HeapAlloc, s
}

func BenchmarkLocalMemory(b *testing.B) {
	for range b.N {
		bytes, s := fillLocal(1_000_000)
		b.ReportMetric(float64(bytes)/(1<<20), "MB/1M-keys")
		b.ReportMetric(float64(bytes)/float64(s.len()), "B/key")
	}
}

func TestLocalMillionKeysUnder200MB(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a million keys")
	}
	bytes, s := fillLocal(1_000_000)
	if s.len() != 1_000_000 {
		t.Fatalf("only %d keys held", s.len())
	}
	if bytes > 200<<20 {
		t.Fatalf("a million keys take %d MB", bytes>>20)
	}
	t.Logf("%d keys: %d MB", s.len(), bytes>>20)
}
