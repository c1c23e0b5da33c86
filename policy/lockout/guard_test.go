package lockout

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/redisserver"
	"github.com/modelguard/modelguard/test/redisserver/redisstore"
)

// trips records OnLockout calls.
type trips struct {
	mu sync.Mutex
	l  []Trip
}

func (t *trips) add(tr Trip) { t.mu.Lock(); defer t.mu.Unlock(); t.l = append(t.l, tr) }
func (t *trips) all() []Trip { t.mu.Lock(); defer t.mu.Unlock(); return slices.Clone(t.l) }

// stores runs f against the local store and against a real redis-server
// shared by two guards (two replicas).
func stores(t *testing.T, s Settings, f func(t *testing.T, a, b *Guard, tr *trips)) {
	t.Run("local", func(t *testing.T) {
		tr := &trips{}
		g := New(s, nil, Options{OnLockout: tr.add})
		f(t, g, g, tr)
	})
	t.Run("redis", func(t *testing.T) {
		srv := redisserver.Start(t)
		tr := &trips{}
		a := New(s, nil, Options{Shared: redisstore.Shared(t, srv.Addr, "deny"), OnLockout: tr.add})
		b := New(s, nil, Options{Shared: redisstore.Shared(t, srv.Addr, "deny"), OnLockout: tr.add})
		f(t, a, b, tr)
	})
}

func locked(t *testing.T, g *Guard, addr string) bool {
	t.Helper()
	d, err := g.Locked(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	return d > 0
}

func fail(t *testing.T, g *Guard, addr, keyID string) {
	t.Helper()
	if err := g.Failed(context.Background(), addr, keyID); err != nil {
		t.Fatal(err)
	}
}

func TestLockoutBySource(t *testing.T) {
	stores(t, Settings{MaxFailures: 3}, func(t *testing.T, a, b *Guard, tr *trips) {
		ctx := context.Background()
		fail(t, a, "192.0.2.1:1000", "")
		fail(t, b, "192.0.2.1:1001", "") // another replica, another port: the same source
		if locked(t, a, "192.0.2.1:1") {
			t.Fatal("locked after 2 of 3 failures")
		}
		fail(t, a, "[::ffff:192.0.2.1]:1002", "") // the mapped form is the same address
		for _, g := range []*Guard{a, b} {
			d, err := g.Locked(ctx, "192.0.2.1:5")
			if err != nil || d <= 0 || d > 15*time.Minute {
				t.Fatalf("after 3 failures: locked for %v, %v", d, err)
			}
		}
		if locked(t, b, "192.0.2.2:1") {
			t.Fatal("another source is locked out too")
		}
		if got := tr.all(); len(got) != 1 || got[0] != (Trip{Source: "192.0.2.1", By: BySource}) {
			t.Fatalf("lockouts reported: %+v", got)
		}
	})
}

func TestLockoutByKeyID(t *testing.T) {
	stores(t, Settings{MaxFailures: 3}, func(t *testing.T, a, b *Guard, tr *trips) {
		fail(t, a, "198.51.100.1:1", "k-alice")
		fail(t, b, "198.51.100.2:1", "k-alice")
		fail(t, a, "198.51.100.3:1", "k-bob")
		if locked(t, a, "198.51.100.2:1") {
			t.Fatal("locked too early")
		}
		fail(t, b, "198.51.100.3:1", "k-alice") // the third failure against k-alice
		if !locked(t, a, "198.51.100.3:1") || locked(t, a, "198.51.100.1:1") || locked(t, b, "198.51.100.2:1") {
			t.Fatal("want exactly the source of the failure that reached the key's limit locked out")
		}
		if got := tr.all(); len(got) != 1 || got[0] != (Trip{Source: "198.51.100.3", KeyID: "k-alice", By: ByKeyID}) {
			t.Fatalf("lockouts reported: %+v", got)
		}
	})
}

func TestLockoutBySourceOnly(t *testing.T) {
	stores(t, Settings{MaxFailures: 2, By: []string{BySource}}, func(t *testing.T, a, b *Guard, tr *trips) {
		fail(t, a, "203.0.113.1:1", "k")
		fail(t, a, "203.0.113.2:1", "k")
		if locked(t, a, "203.0.113.2:1") || len(tr.all()) != 0 {
			t.Fatal("key id counted with by: [source]")
		}
	})
}

func TestLockoutCooldownLocal(t *testing.T) {
	now := time.Unix(1e9, 0)
	g := New(Settings{MaxFailures: 2, Window: time.Minute, Cooldown: 10 * time.Minute}, nil, Options{Now: func() time.Time { return now }})
	fail(t, g, "192.0.2.9:1", "")
	now = now.Add(2 * time.Minute) // the first failure left the window
	fail(t, g, "192.0.2.9:1", "")
	if locked(t, g, "192.0.2.9:1") {
		t.Fatal("failures outside one window locked out")
	}
	fail(t, g, "192.0.2.9:1", "")
	if d, _ := g.Locked(context.Background(), "192.0.2.9:1"); d != 10*time.Minute {
		t.Fatalf("locked for %v, want the cooldown", d)
	}
	now = now.Add(10 * time.Minute)
	if locked(t, g, "192.0.2.9:1") {
		t.Fatal("still locked after the cooldown")
	}
	fail(t, g, "192.0.2.9:1", "") // the count restarted at the lockout
	if locked(t, g, "192.0.2.9:1") {
		t.Fatal("one failure after the cooldown locked out again")
	}
}

func TestLocalStoreFull(t *testing.T) {
	g := New(Settings{MaxFailures: 5, MaxKeys: 1024}, nil, Options{})
	var err error
	for i := 0; err == nil && i < 2000; i++ {
		err = g.Failed(context.Background(), "10.0."+itoa(i/256)+"."+itoa(i%256)+":1", "")
	}
	if err == nil || !strings.Contains(err.Error(), "full") {
		t.Fatalf("a full store: %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestRedisDown: with on_error deny, a lockout check that Redis cannot
// answer is an error (the engine denies 503); with on_error local, the
// replica decides alone.
func TestRedisDown(t *testing.T) {
	srv := redisserver.Start(t)
	deny := New(Settings{MaxFailures: 1}, nil, Options{Shared: redisstore.Shared(t, srv.Addr, "deny")})
	local := New(Settings{MaxFailures: 1}, nil, Options{Shared: redisstore.Shared(t, srv.Addr, "local")})
	srv.Stop()
	ctx := context.Background()
	if _, err := deny.Locked(ctx, "192.0.2.1:1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("on_error deny: %v", err)
	}
	if err := deny.Failed(ctx, "192.0.2.1:1", ""); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("on_error deny, failure: %v", err)
	}
	if err := local.Failed(ctx, "192.0.2.1:1", ""); err != nil {
		t.Fatal(err)
	}
	if d, err := local.Locked(ctx, "192.0.2.1:1"); err != nil || d <= 0 {
		t.Fatalf("on_error local: %v %v", d, err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		s    Settings
		want string
	}{
		{DefaultSettings(), ""},
		{func() Settings { s := DefaultSettings(); s.MaxFailures = 5; return s }(), ""},
		{func() Settings { s := DefaultSettings(); s.MaxFailures = 5; s.Status = 401; return s }(), "status: must be 429 or 403"},
		{func() Settings { s := DefaultSettings(); s.MaxFailures = 5; s.By = []string{"subject"}; return s }(), `by[0]: "subject" is not one of`},
		{func() Settings { s := DefaultSettings(); s.MaxFailures = 5; s.By = []string{}; return s }(), "by: must name"},
		{func() Settings { s := DefaultSettings(); s.MaxFailures = 5; s.Window = 0; return s }(), "window: must be between"},
		{func() Settings { s := DefaultSettings(); s.MaxFailures = -1; return s }(), "max_failures: must be between"},
	} {
		var got []string
		for _, e := range tc.s.Validate() {
			got = append(got, e.Error())
		}
		if j := strings.Join(got, "; "); tc.want == "" && j != "" || !strings.Contains(j, tc.want) {
			t.Errorf("%+v: %q, want %q", tc.s, j, tc.want)
		}
	}
}

// BenchmarkLocked is the per-request cost of the lockout: one lookup of
// the client address, in process and in Redis (a round trip on loopback).
func BenchmarkLocked(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, g *Guard) {
		b.ReportAllocs()
		for b.Loop() {
			if d, err := g.Locked(ctx, "192.0.2.1:5000"); d != 0 || err != nil {
				b.Fatal(d, err)
			}
		}
	}
	b.Run("local", func(b *testing.B) { run(b, New(Settings{MaxFailures: 10}, nil, Options{})) })
	b.Run("redis", func(b *testing.B) {
		srv := redisserver.Start(b)
		run(b, New(Settings{MaxFailures: 10}, nil, Options{Shared: redisstore.Shared(b, srv.Addr, "deny")}))
	})
}
