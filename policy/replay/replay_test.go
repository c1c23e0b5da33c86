package replay

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/redisserver"
	"github.com/modelguard/modelguard/test/redisserver/redisstore"
)

func first(t *testing.T, s *Store, v string, until time.Time) bool {
	t.Helper()
	ok, err := s.FirstUse(context.Background(), v, until)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestFirstUse: a value is accepted once within its lifetime, by any
// replica on the same Redis, and again once it has expired.
func TestFirstUse(t *testing.T) {
	srv := redisserver.Start(t)
	for _, tc := range []struct {
		name string
		a, b *Store
	}{
		{"local", nil, nil},
		{"redis, two replicas", New(redisstore.Shared(t, srv.Addr, "deny"), nil), New(redisstore.Shared(t, srv.Addr, "deny"), nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.a == nil {
				tc.a = New(nil, nil)
				tc.b = tc.a
			}
			soon := time.Now().Add(time.Hour)
			if !first(t, tc.a, "iss\x00j1", soon) || first(t, tc.b, "iss\x00j1", soon) || first(t, tc.a, "iss\x00j1", soon) {
				t.Fatal("want j1 accepted exactly once")
			}
			if !first(t, tc.b, "iss\x00j2", soon) {
				t.Fatal("another value refused")
			}
		})
	}
}

func TestLocalExpiry(t *testing.T) {
	s := New(nil, nil)
	now := time.Unix(1e9, 0)
	s.now = func() time.Time { return now }
	until := now.Add(time.Minute)
	if !first(t, s, "v", until) || first(t, s, "v", until) {
		t.Fatal("first use")
	}
	now = now.Add(2 * time.Minute)
	if !first(t, s, "v", now.Add(time.Minute)) {
		t.Fatal("an expired value is still remembered")
	}
}

func TestLocalFull(t *testing.T) {
	s := New(nil, nil)
	s.local.maxKeys = 2
	until := time.Now().Add(time.Hour)
	first(t, s, "a", until)
	first(t, s, "b", until)
	if _, err := s.FirstUse(context.Background(), "c", until); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("full store: %v", err)
	}
}

func TestRedisDown(t *testing.T) {
	srv := redisserver.Start(t)
	deny := New(redisstore.Shared(t, srv.Addr, "deny"), nil)
	local := New(redisstore.Shared(t, srv.Addr, "local"), nil)
	srv.Stop()
	until := time.Now().Add(time.Hour)
	if _, err := deny.FirstUse(context.Background(), "x", until); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("on_error deny: %v", err)
	}
	if !first(t, local, "x", until) || first(t, local, "x", until) {
		t.Fatal("on_error local: want the local store to decide")
	}
}
