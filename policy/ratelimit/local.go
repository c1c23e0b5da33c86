package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

const (
	shardCount = 256
	// sweepEvery is how often a shard drops its idle keys (those whose
	// allowance is whole again: forgetting them changes nothing).
	sweepEvery = 10 * time.Second
)

// localStore keeps one theoretical arrival time per key in sharded maps.
// Keys are 128-bit maphash values under a per-process random seed, so a
// caller cannot aim collisions at another caller's key.
type localStore struct {
	seed1, seed2 maphash.Seed
	now          func() int64 // µs, monotonic, > 0
	maxKeys      int64
	keys         atomic.Int64 // held in all shards; changes only when a key is added or dropped
	shards       [shardCount]localShard
}

type localShard struct {
	mu        sync.Mutex
	tat       map[[2]uint64]int64
	nextSweep int64
	_         [32]byte // keep shards on separate cache lines
}

// newLocalStore makes a store for maxKeys keys; now is the clock (nil:
// the process's monotonic clock).
func newLocalStore(maxKeys int, now func() int64) *localStore {
	if now == nil {
		start := time.Now()
		now = func() int64 { return time.Since(start).Microseconds() + 1 }
	}
	s := &localStore{seed1: maphash.MakeSeed(), seed2: maphash.MakeSeed(), now: now, maxKeys: int64(maxKeys)}
	for i := range s.shards {
		s.shards[i].tat = make(map[[2]uint64]int64)
	}
	return s
}

func (s *localStore) prepare(c *charge, key []byte) {
	c.key = [2]uint64{maphash.Bytes(s.seed1, key), maphash.Bytes(s.seed2, key)}
}

func (s *localStore) shard(c *charge) uint8 { return uint8(c.key[0]) }

// take locks the shards of all charges in ascending order (no deadlock
// between requests), decides every charge, and writes only if all admit.
func (s *localStore) take(_ context.Context, cs []charge) error {
	var buf [8]uint8
	idx := buf[:0]
	for i := range cs {
		idx = insertSorted(idx, s.shard(&cs[i]))
	}
	now := s.now()
	for _, i := range idx {
		sh := &s.shards[i]
		sh.mu.Lock()
		if now >= sh.nextSweep {
			s.sweep(sh, now)
		}
	}
	defer func() {
		for _, i := range idx {
			s.shards[i].mu.Unlock()
		}
	}()
	ok := true
	for i := range cs {
		c := &cs[i]
		sh := &s.shards[s.shard(c)]
		tat, found := sh.tat[c.key]
		if !found && s.keys.Load()+int64(i) >= s.maxKeys {
			if s.sweep(sh, now); s.keys.Load()+int64(i) >= s.maxKeys {
				return fmt.Errorf("%w: local store holds its maximum of keys", ErrUnavailable)
			}
		}
		tat = max(tat, now)
		c.d = tat - now
		if c.refused() {
			ok = false
		}
	}
	if !ok {
		return nil
	}
	for i := range cs {
		c := &cs[i]
		if c.d+c.cost > 0 {
			m := s.shards[s.shard(c)].tat
			if _, found := m[c.key]; !found {
				s.keys.Add(1)
			}
			m[c.key] = now + c.d + c.cost
		}
	}
	return nil
}

func (s *localStore) adjust(_ context.Context, c *charge, delta int64) error {
	sh := &s.shards[s.shard(c)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := s.now()
	old, found := sh.tat[c.key]
	base := max(old, now)
	tat := base + delta
	if delta > 0 {
		tat = max(base, min(tat, now+c.rule.capacity))
	}
	switch {
	case tat > now:
		if !found {
			s.keys.Add(1)
		}
		sh.tat[c.key] = tat
	case found:
		delete(sh.tat, c.key)
		s.keys.Add(-1)
	}
	return nil
}

// sweep drops a shard's idle keys; the caller holds its lock.
func (s *localStore) sweep(sh *localShard, now int64) {
	for k, tat := range sh.tat {
		if tat <= now {
			delete(sh.tat, k)
			s.keys.Add(-1)
		}
	}
	sh.nextSweep = now + sweepEvery.Microseconds()
}

// len is the number of keys held.
func (s *localStore) len() int { return int(s.keys.Load()) }

// insertSorted adds v to the ascending set a.
func insertSorted(a []uint8, v uint8) []uint8 {
	i := 0
	for i < len(a) && a[i] < v {
		i++
	}
	if i < len(a) && a[i] == v {
		return a
	}
	a = append(a, 0)
	copy(a[i+1:], a[i:])
	a[i] = v
	return a
}
