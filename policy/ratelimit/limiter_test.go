package ratelimit

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelguard/modelguard/test/redisserver"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fakeClock is a local store clock the test moves by hand.
type fakeClock struct{ us atomic.Int64 }

func (c *fakeClock) now() int64              { return c.us.Load() }
func (c *fakeClock) advance(d time.Duration) { c.us.Add(d.Microseconds()) }

// backend opens a store for rules: "local" (with clock, if given) or a
// Redis address.
func backend(t *testing.T, store string, clock *fakeClock, onError string) *Backend {
	t.Helper()
	s := Settings{Store: "local"}
	if store != "local" {
		// A generous deadline: 200 goroutines open connections at once under -race.
		s = Settings{Store: "redis", Redis: RedisSettings{Address: store, OnError: onError, Timeout: time.Second}}
	}
	b, err := Open(s, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if clock != nil {
		clock.us.Store(1)
		b.local = newLocalStore(DefaultMaxKeys, clock.now)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func limiter(b *Backend, rules ...Rule) *Limiter {
	return b.Limiter(Settings{Rules: rules})
}

func check(t *testing.T, l *Limiter, req Request) Result {
	t.Helper()
	var res Result
	if err := l.Check(context.Background(), &req, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// stores runs f against the local store and a real Redis.
func stores(t *testing.T, f func(t *testing.T, b func() *Backend)) {
	t.Run("local", func(t *testing.T) {
		b := backend(t, "local", nil, "")
		f(t, func() *Backend { return b })
	})
	t.Run("redis", func(t *testing.T) {
		srv := redisserver.Start(t)
		f(t, func() *Backend { return backend(t, srv.Addr, nil, "") })
	})
}

// concurrently runs n Check calls at once (spread over limiters) and
// returns which were admitted.
func concurrently(t *testing.T, ls []*Limiter, reqs []Request) []bool {
	t.Helper()
	admitted := make([]bool, len(reqs))
	var start, done sync.WaitGroup
	start.Add(1)
	errs := make(chan error, len(reqs))
	for i := range reqs {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			var res Result
			if err := ls[i%len(ls)].Check(context.Background(), &reqs[i], &res); err != nil {
				errs <- err
				return
			}
			admitted[i] = res.Allowed
		}()
	}
	start.Done()
	done.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return admitted
}

func TestBurstNeverOvershoots(t *testing.T) {
	const K, N = 37, 200
	stores(t, func(t *testing.T, open func() *Backend) {
		// Two backends on one Redis are two modelguard replicas.
		r := Rule{Name: "rpm", Requests: K, Per: time.Hour, Key: []string{"subject"}}
		ls := []*Limiter{limiter(open(), r), limiter(open(), r)}
		reqs := make([]Request, N)
		for i := range reqs {
			reqs[i] = Request{Subject: "alice"}
		}
		n := 0
		for _, ok := range concurrently(t, ls, reqs) {
			if ok {
				n++
			}
		}
		if n != K {
			t.Fatalf("admitted %d of %d, want exactly %d", n, N, K)
		}
		if res := check(t, ls[0], Request{Subject: "bob"}); !res.Allowed || res.Requests.Remaining != K-1 {
			t.Fatalf("another subject: %+v, want admitted with %d remaining", res, K-1)
		}
	})
}

func TestTokenBudgetMixedSizesNeverOvershoots(t *testing.T) {
	const budget, N = 5000, 200
	stores(t, func(t *testing.T, open func() *Backend) {
		r := Rule{Name: "tpd", Tokens: budget, Per: 24 * time.Hour, Key: []string{"key_id"}}
		ls := []*Limiter{limiter(open(), r), limiter(open(), r)}
		reqs := make([]Request, N)
		for i := range reqs {
			reqs[i] = Request{KeyID: "k1", Tokens: int64(1 + (i*37)%120)}
		}
		admitted := concurrently(t, ls, reqs)
		var sum int64
		for i, ok := range admitted {
			if ok {
				sum += reqs[i].Tokens
			}
		}
		if sum > budget {
			t.Fatalf("admitted %d tokens of a %d budget", sum, budget)
		}
		// The budget only shrinks, so a refused request did not fit at
		// the end either; one that fits now was refused wrongly.
		for i, ok := range admitted {
			if !ok && reqs[i].Tokens <= budget-sum {
				t.Fatalf("refused %d tokens with %d left", reqs[i].Tokens, budget-sum)
			}
		}
		res := check(t, ls[0], Request{KeyID: "k1"})
		if res.Tokens.Remaining != budget-sum {
			t.Fatalf("remaining %d, want %d", res.Tokens.Remaining, budget-sum)
		}
	})
}

func TestWindowResets(t *testing.T) {
	clock := &fakeClock{}
	l := limiter(backend(t, "local", clock, ""), Rule{Name: "r", Requests: 2, Per: time.Minute})
	for i, want := range []bool{true, true, false} {
		if res := check(t, l, Request{}); res.Allowed != want {
			t.Fatalf("request %d: allowed %v", i, res.Allowed)
		}
	}
	res := check(t, l, Request{})
	if res.RetryAfter != 30*time.Second || res.Quota || res.Rule != "r" || res.KeyKind != "global" {
		t.Fatalf("refusal %+v, want retry after 30s (one request per 30s refills)", res)
	}
	clock.advance(30 * time.Second)
	if res := check(t, l, Request{}); !res.Allowed || res.Requests.Remaining != 0 {
		t.Fatalf("after 30s: %+v, want one admitted", res)
	}
	clock.advance(time.Minute)
	if res := check(t, l, Request{}); !res.Allowed || res.Requests.Remaining != 1 || res.Requests.Reset != 30*time.Second {
		t.Fatalf("after the window: %+v, want whole allowance again", res)
	}
}

func TestRedisWindowResets(t *testing.T) {
	srv := redisserver.Start(t)
	// Below the 1s minimum of Validate, to keep the test short.
	l := limiter(backend(t, srv.Addr, nil, ""), Rule{Name: "r", Requests: 3, Per: 300 * time.Millisecond})
	for i := range 4 {
		if res := check(t, l, Request{}); res.Allowed != (i < 3) {
			t.Fatalf("request %d: %+v", i, res)
		}
	}
	time.Sleep(350 * time.Millisecond)
	if res := check(t, l, Request{}); !res.Allowed || res.Requests.Remaining != 2 {
		t.Fatalf("after the window: %+v", res)
	}
}

func TestRulesAreAtomic(t *testing.T) {
	stores(t, func(t *testing.T, open func() *Backend) {
		l := limiter(open(),
			Rule{Name: "wide", Requests: 100, Per: time.Hour},
			Rule{Name: "narrow", Requests: 2, Per: time.Hour, Key: []string{"subject", "model"}, Match: Match{Models: []string{"big"}}},
		)
		for range 5 {
			check(t, l, Request{Subject: "a", Model: "big"})
		}
		// Three refusals by "narrow" charged nothing to "wide".
		res := check(t, l, Request{Subject: "a", Model: "small"})
		if !res.Allowed || res.Requests.Remaining != 97 {
			t.Fatalf("%+v: want wide at 97 (only admitted requests charged)", res)
		}
		res = check(t, l, Request{Subject: "a", Model: "big"})
		if res.Allowed || res.Rule != "narrow" || res.KeyKind != "subject+model" {
			t.Fatalf("%+v: want refused by narrow", res)
		}
		if res := check(t, l, Request{Subject: "b", Model: "big"}); !res.Allowed {
			t.Fatalf("other subject refused: %+v", res)
		}
	})
}

func TestSettleRefundsAndCharges(t *testing.T) {
	stores(t, func(t *testing.T, open func() *Backend) {
		b := open()
		l := limiter(b, Rule{Name: "t", Tokens: 1000, Per: 24 * time.Hour}, Rule{Name: "r", Requests: 10, Per: time.Hour})
		res := check(t, l, Request{Tokens: 600})
		if !res.Allowed || res.Reserved != 600 || res.Tokens.Remaining != 400 {
			t.Fatalf("%+v", res)
		}
		held := l.Hold(&res)
		if r := check(t, l, Request{Tokens: 500}); r.Allowed {
			t.Fatal("500 tokens admitted with 400 left")
		}
		if err := held.Settle(context.Background(), 100); err != nil {
			t.Fatal(err)
		}
		// A repeated settlement (a repeated response phase) changes nothing.
		if err := held.Settle(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		held.Keep("no_usage")
		r := check(t, l, Request{Tokens: 500})
		if !r.Allowed || r.Tokens.Remaining != 400 {
			t.Fatalf("after refunding 500: %+v", r)
		}
		if err := l.Hold(&r).Settle(context.Background(), 800); err != nil { // overrun: 300 more
			t.Fatal(err)
		}
		if r := check(t, l, Request{}); r.Tokens.Remaining != 100 {
			t.Fatalf("after an overrun: %d left, want 100", r.Tokens.Remaining)
		}
		// An overrun larger than what is left empties the budget: the
		// balance never goes negative.
		r = check(t, l, Request{Tokens: 50})
		if err := l.Hold(&r).Settle(context.Background(), 5000); err != nil {
			t.Fatal(err)
		}
		if r := check(t, l, Request{Tokens: 1}); r.Allowed || r.Tokens.Remaining != 0 || r.RetryAfter > 24*time.Hour/1000+time.Second {
			t.Fatalf("after a capped overrun: %+v, want refused with 0 left and one token's wait", r)
		}
		if got := testutil.ToFloat64(b.metrics.Settlements.WithLabelValues("settled")); got != 3 {
			t.Errorf("settlements counted %v, want 3", got)
		}
		if got := testutil.ToFloat64(b.metrics.Settlements.WithLabelValues("no_usage")); got != 0 {
			t.Errorf("a settled reservation was also kept: %v", got)
		}
		if got := testutil.ToFloat64(b.metrics.SettledTokens.WithLabelValues("t", "refunded")); got != 500 {
			t.Errorf("refunded %v tokens, want 500", got)
		}
	})
}

func TestSettleNeverRefundsPastAWholeAllowance(t *testing.T) {
	stores(t, func(t *testing.T, open func() *Backend) {
		l := limiter(open(), Rule{Name: "t", Tokens: 1000, Per: time.Hour})
		res := check(t, l, Request{Tokens: 300})
		held := l.Hold(&res)
		// Another request's refund, or the refill, returned the allowance
		// meanwhile: settling 0 of 300 must not leave 1300.
		r := check(t, l, Request{Tokens: 200})
		if err := l.Hold(&r).Settle(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		if err := held.Settle(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		if err := held.Settle(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		if r := check(t, l, Request{Tokens: 1000}); !r.Allowed || r.Tokens.Remaining != 0 {
			t.Fatalf("after refunds: %+v, want exactly the whole allowance", r)
		}
		if r := check(t, l, Request{Tokens: 1}); r.Allowed {
			t.Fatal("admitted beyond the allowance after refunds")
		}
	})
}

func TestHoldOnlyTokenBudgets(t *testing.T) {
	b := backend(t, "local", nil, "")
	l := limiter(b, Rule{Name: "r", Requests: 10, Per: time.Hour})
	res := check(t, l, Request{Tokens: 100})
	if v := l.Hold(&res); v != nil {
		t.Fatalf("held %d tokens with no token budget", v.Tokens())
	}
	l = limiter(b, Rule{Name: "t", Tokens: 10, Per: time.Hour})
	res = check(t, l, Request{Tokens: 100})
	if v := l.Hold(&res); res.Allowed || v != nil {
		t.Fatalf("a refused request holds a reservation: %+v", res)
	}
	res = check(t, l, Request{Tokens: 4})
	v := l.Hold(&res)
	if v == nil || v.Tokens() != 4 {
		t.Fatalf("held %+v, want 4 tokens", v)
	}
	v.Keep("no_usage")
	v.Keep("no_response")
	if err := v.Settle(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if r := check(t, l, Request{Tokens: 7}); r.Allowed {
		t.Fatal("a kept reservation was refunded")
	}
	if got := testutil.ToFloat64(b.metrics.Settlements.WithLabelValues("no_usage")); got != 1 {
		t.Errorf("no_usage counted %v, want 1", got)
	}
	if got := testutil.ToFloat64(b.metrics.Settlements.WithLabelValues("no_response")); got != 0 {
		t.Errorf("no_response counted %v for an already kept reservation", got)
	}
}

func TestRefusals(t *testing.T) {
	clock := &fakeClock{}
	l := limiter(backend(t, "local", clock, ""),
		Rule{Name: "daily", Tokens: 1000, Per: 24 * time.Hour, Key: []string{"subject"}},
		Rule{Name: "rpm", Requests: 60, Per: time.Minute, Burst: 1, Key: []string{"subject"}},
	)
	tests := []struct {
		name      string
		req       Request
		advance   time.Duration
		allowed   bool
		rule      string
		quota     bool
		retry     time.Duration
		remaining [2]int64 // requests, tokens
	}{
		{"admitted", Request{Subject: "a", Tokens: 400}, 0, true, "", false, 0, [2]int64{0, 600}},
		{"burst of one", Request{Subject: "a", Tokens: 1}, 0, false, "rpm", false, time.Second, [2]int64{0, 600}},
		{"next second", Request{Subject: "a", Tokens: 500}, time.Second, true, "", false, 0, [2]int64{0, 100}},
		{"budget needs a day", Request{Subject: "a", Tokens: 600}, time.Second, false, "daily", true, 43200 * time.Second, [2]int64{1, 100}},
		{"never fits", Request{Subject: "b", Tokens: 1001}, 0, false, "daily", true, 24 * time.Hour, [2]int64{1, 1000}},
	}
	for _, tt := range tests {
		clock.advance(tt.advance)
		res := check(t, l, tt.req)
		if res.Allowed != tt.allowed || res.Rule != tt.rule || res.Quota != tt.quota {
			t.Fatalf("%s: %+v", tt.name, res)
		}
		if !tt.allowed && (res.RetryAfter < tt.retry-5*time.Second || res.RetryAfter > tt.retry) {
			t.Fatalf("%s: retry after %v, want about %v", tt.name, res.RetryAfter, tt.retry)
		}
		if got := [2]int64{res.Requests.Remaining, res.Tokens.Remaining}; got != tt.remaining {
			t.Fatalf("%s: remaining %v, want %v", tt.name, got, tt.remaining)
		}
		if res.Requests.Limit != 60 || res.Tokens.Limit != 1000 {
			t.Fatalf("%s: limits %d, %d", tt.name, res.Requests.Limit, res.Tokens.Limit)
		}
	}
}

func TestMatchingAndKeys(t *testing.T) {
	gold := Rule{Name: "gold", Requests: 1, Per: time.Hour, Key: []string{"claim:tenant"}, Match: Match{Classes: []string{"gold"}}}
	eng := Rule{Name: "eng", Requests: 1, Per: time.Hour, Key: []string{"role"}, Match: Match{Roles: []string{"eng"}, Claims: []ClaimMatch{{Name: "org", Values: []string{"acme", "42"}}}}}
	src := Rule{Name: "src", Requests: 1, Per: time.Hour, Key: []string{"source", "model"}, Match: Match{Subjects: []string{"svc"}}}
	tests := []struct {
		name  string
		rule  Rule
		first Request
		other Request // after first: counted apart (admitted) or together (refused)
		apart bool
		skip  Request // not matched by the rule
	}{
		{"class and claim key", gold, Request{Class: "gold", Claims: map[string]any{"tenant": "t1"}}, Request{Class: "gold", Claims: map[string]any{"tenant": "t2"}}, true, Request{Class: "silver"}},
		{"same tenant", gold, Request{Class: "gold", Subject: "x", Claims: map[string]any{"tenant": 7.0}}, Request{Class: "gold", Subject: "y", Claims: map[string]any{"tenant": 7.0}}, false, Request{}},
		{"role and claim match", eng, Request{Roles: []string{"x", "eng"}, Claims: map[string]any{"org": "acme"}}, Request{Roles: []string{"eng"}, Claims: map[string]any{"org": []any{42.0}}}, false, Request{Roles: []string{"eng"}, Claims: map[string]any{"org": "other"}}},
		{"source and model", src, Request{Subject: "svc", Source: "10.0.0.1", Model: "m"}, Request{Subject: "svc", Source: "10.0.0.1", Model: "n"}, true, Request{Subject: "other"}},
	}
	for _, tt := range tests {
		l := limiter(backend(t, "local", nil, ""), tt.rule)
		if res := check(t, l, tt.first); !res.Allowed || !res.Matched() {
			t.Fatalf("%s: first %+v", tt.name, res)
		}
		if res := check(t, l, tt.other); res.Allowed != tt.apart {
			t.Fatalf("%s: second admitted %v, want %v", tt.name, res.Allowed, tt.apart)
		}
		if res := check(t, l, tt.skip); res.Matched() || !res.Allowed {
			t.Fatalf("%s: unmatched request %+v", tt.name, res)
		}
	}
}

func TestLocalEvictsIdleKeysAndCaps(t *testing.T) {
	clock := &fakeClock{}
	b := backend(t, "local", clock, "")
	b.local = newLocalStore(1024, clock.now)
	l := limiter(b, Rule{Name: "r", Requests: 1, Per: time.Second, Key: []string{"subject"}})
	// Subjects whose keys share one shard: evicting from it is what must
	// make room.
	var subjects []string
	for i := 0; len(subjects) < 2048; i++ {
		req := Request{Subject: strconv.Itoa(i)}
		c := charge{rule: l.rules[0]}
		b.local.prepare(&c, l.rules[0].appendKey(nil, &req))
		if b.local.shard(&c) == 0 {
			subjects = append(subjects, req.Subject)
		}
	}
	try := func(subject string) (Result, error) {
		var res Result
		err := l.Check(context.Background(), &Request{Subject: subject}, &res)
		return res, err
	}
	for _, s := range subjects[:1024] {
		if res, err := try(s); err != nil || !res.Allowed {
			t.Fatalf("filling: %v %+v", err, res)
		}
	}
	if _, err := try(subjects[1024]); !errors.Is(err, ErrUnavailable) || testutil.ToFloat64(b.metrics.StoreErrors.WithLabelValues("full")) != 1 {
		t.Fatalf("past max_keys: %v", err)
	}
	// Once idle (their second is over), the keys make room for new ones.
	clock.advance(time.Second)
	for _, s := range subjects[1024:] {
		if res, err := try(s); err != nil || !res.Allowed {
			t.Fatalf("new key after the old ones went idle: %v %+v", err, res)
		}
	}
	if n := b.local.len(); n != 1024 {
		t.Fatalf("%d keys held, want 1024", n)
	}
}

// TestKeysBySource: only rules counted per client address make a gateway
// fetch it.
func TestKeysBySource(t *testing.T) {
	b := backend(t, "local", nil, "")
	perSubject := Rule{Name: "s", Requests: 10, Per: time.Minute, Key: []string{"subject"}}
	perSource := Rule{Name: "ip", Requests: 10, Per: time.Minute, Key: []string{"subject", "source"}}
	if limiter(b, perSubject).KeysBySource() {
		t.Error("a per-subject limit reads the source")
	}
	if !limiter(b, perSubject, perSource).KeysBySource() {
		t.Error("a per-source limit does not read the source")
	}
}
