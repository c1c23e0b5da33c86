package policy

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/ratelimit"
	"github.com/modelguard/modelguard/policy/rego"
	"github.com/modelguard/modelguard/test/testkit"
)

// limitedEngine is testEngine with rate limits on the real local store (or
// the Redis at s.Redis.Address).
func limitedEngine(t *testing.T, a authorizer, s ratelimit.Settings) (*Engine, *testkit.EventLog[audit.Event]) {
	t.Helper()
	e, rec := testEngine(t, a)
	b, err := ratelimit.Open(s, e.metrics.RateLimit, e.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	e.limiter = b.Limiter(s)
	e.modelMaxTokens = map[string]int64{"gpt-4o-mini": 1000}
	return e, rec
}

func classPolicy(class string) authorizer {
	return authzFunc(func(context.Context, ast.Value) (rego.Result, error) {
		return rego.Result{Allow: true, RateLimitClass: class, Revision: "r1"}, nil
	})
}

func header(d *Decision, name string) string {
	for _, h := range d.ResponseHeaders {
		if h.Name == name {
			return h.Value
		}
	}
	return ""
}

func TestRateLimitedDecisions(t *testing.T) {
	alice := map[string]string{"x-api-key": "mg_alice"}
	// The chat body: "Hi" (1 token) + max_tokens 64 = 65 tokens reserved.
	tests := []struct {
		name     string
		rules    []ratelimit.Rule
		policy   authorizer
		n        int // requests before the one checked
		status   int
		reason   string
		body     string
		headers  map[string]string
		auditKey string
	}{
		{"allowed carries the headers", []ratelimit.Rule{{Name: "rpm", Requests: 60, Per: time.Minute, Key: []string{"subject"}}}, allowAll, 0,
			200, "allowed", "", map[string]string{"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s"}, ""},
		{"request limit", []ratelimit.Rule{{Name: "rpm", Requests: 2, Per: time.Minute, Key: []string{"subject", "model"}}}, allowAll, 2,
			429, "rate_limited_requests", `{"error":{"message":"rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}`,
			map[string]string{"x-ratelimit-remaining-requests": "0", "retry-after": "30", "x-should-retry": ""}, "subject+model"},
		{"token budget", []ratelimit.Rule{{Name: "tpm", Tokens: 100, Per: time.Minute, Key: []string{"key_id"}}}, allowAll, 1,
			429, "rate_limited_tokens", `{"error":{"message":"rate limit reached for tokens","type":"tokens","code":"rate_limit_exceeded"}}`,
			map[string]string{"x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "35", "retry-after": "18"}, "key_id"},
		{"daily quota", []ratelimit.Rule{{Name: "daily", Tokens: 100, Per: 24 * time.Hour}}, allowAll, 1,
			429, "rate_limited_tokens", `{"error":{"message":"quota exceeded for this period","type":"insufficient_quota","code":"insufficient_quota"}}`,
			map[string]string{"x-should-retry": "false"}, "global"},
		{"class picked by the policy", []ratelimit.Rule{{Name: "free", Requests: 1, Per: time.Hour, Match: ratelimit.Match{Classes: []string{"free"}}}}, classPolicy("free"), 1,
			429, "rate_limited_requests", "", nil, "global"},
		{"other class: rule not applied", []ratelimit.Rule{{Name: "free", Requests: 1, Per: time.Hour, Match: ratelimit.Match{Classes: []string{"free"}}}}, classPolicy("gold"), 3,
			200, "allowed", "", map[string]string{"x-ratelimit-limit-requests": ""}, ""},
	}
	for _, tt := range tests {
		e, rec := limitedEngine(t, tt.policy, ratelimit.Settings{Rules: tt.rules})
		for range tt.n {
			if d := e.Decide(context.Background(), chat(alice)); !d.Allow {
				t.Fatalf("%s: early request denied: %s", tt.name, d.Reason)
			}
		}
		d := e.Decide(context.Background(), chat(alice))
		if d.Status != tt.status || d.Reason != tt.reason {
			t.Fatalf("%s: %d %s, want %d %s", tt.name, d.Status, d.Reason, tt.status, tt.reason)
		}
		if tt.body != "" && string(d.Body()) != tt.body {
			t.Errorf("%s: body %s", tt.name, d.Body())
		}
		for k, v := range tt.headers {
			if got := header(d, k); got != v {
				t.Errorf("%s: %s = %q, want %q", tt.name, k, got, v)
			}
		}
		events := rec.Events()
		ev := events[len(events)-1]
		if ev.RateLimitKey != tt.auditKey || (tt.auditKey != "" && ev.RateLimit != tt.rules[0].Name) {
			t.Errorf("%s: audit names limit %q key %q", tt.name, ev.RateLimit, ev.RateLimitKey)
		}
	}
}

func TestPolicyDenialChargesNoLimit(t *testing.T) {
	allow := true
	policy := authzFunc(func(context.Context, ast.Value) (rego.Result, error) {
		return rego.Result{Allow: allow, Revision: "r1"}, nil
	})
	e, _ := limitedEngine(t, policy, ratelimit.Settings{Rules: []ratelimit.Rule{{Name: "r", Requests: 1, Per: time.Hour}}})
	allow = false
	for range 3 {
		if d := e.Decide(context.Background(), chat(map[string]string{"x-api-key": "mg_alice"})); d.Status != 403 {
			t.Fatalf("%d %s", d.Status, d.Reason)
		}
	}
	allow = true
	if d := e.Decide(context.Background(), chat(map[string]string{"x-api-key": "mg_alice"})); !d.Allow {
		t.Fatalf("first allowed request refused: %s", d.Reason)
	}
}

func TestRateLimitStoreDownFailsClosed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: every round trip fails
	rules := []ratelimit.Rule{{Name: "r", Requests: 10, Per: time.Minute}}
	for _, tt := range []struct {
		onError string
		status  int
		reason  string
		log     string // logged for every such decision, with its id
	}{{"deny", 503, "ratelimit_unavailable", "rate limits could not be decided: denied"}, {"local", 200, "allowed", "rate limits decided locally: redis unavailable"}} {
		e, _ := limitedEngine(t, allowAll, ratelimit.Settings{Store: "redis", Redis: ratelimit.RedisSettings{Address: addr, OnError: tt.onError}, Rules: rules})
		logs := &testkit.SyncBuffer{}
		e.log = slog.New(slog.NewTextHandler(logs, nil))
		for range 2 {
			d := e.Decide(context.Background(), chat(map[string]string{"x-api-key": "mg_alice"}))
			if d.Status != tt.status || d.Reason != tt.reason {
				t.Fatalf("on_error %s: %d %s, want %d %s", tt.onError, d.Status, d.Reason, tt.status, tt.reason)
			}
			if !strings.Contains(logs.String(), "decision_id="+d.ID) {
				t.Fatalf("on_error %s: decision %s not logged: %s", tt.onError, d.ID, logs)
			}
		}
		if n := strings.Count(logs.String(), tt.log); n != 2 {
			t.Fatalf("on_error %s: %q logged %d times for 2 decisions: %s", tt.onError, tt.log, n, logs)
		}
		d := e.Decide(context.Background(), chat(map[string]string{"x-api-key": "mg_alice"}))
		if tt.status == 503 && string(d.Body()) != `{"error":{"message":"service unavailable","type":"server_error","code":"service_unavailable"}}` {
			t.Fatalf("body %s", d.Body())
		}
	}
}

func TestHoldReservations(t *testing.T) {
	rules := []ratelimit.Rule{{Name: "tpm", Tokens: 100, Per: time.Hour}}
	alice := map[string]string{"x-api-key": "mg_alice"}
	for _, hold := range []bool{false, true} {
		e, _ := limitedEngine(t, allowAll, ratelimit.Settings{Rules: rules})
		e.holdLimits = hold
		d := e.Decide(context.Background(), chat(alice)) // 65 tokens reserved
		if !d.Allow {
			t.Fatalf("hold %v: %d %s", hold, d.Status, d.Reason)
		}
		if (d.Reservation != nil) != hold {
			t.Fatalf("hold %v: reservation %v", hold, d.Reservation)
		}
		if !hold {
			continue
		}
		if d.Reservation.Tokens() != 65 {
			t.Fatalf("reserved %d, want 65", d.Reservation.Tokens())
		}
		if d := e.Decide(context.Background(), chat(alice)); d.Allow {
			t.Fatal("a second 65-token request fit a 100-token budget")
		}
		if err := d.Reservation.Settle(context.Background(), 5); err != nil {
			t.Fatal(err)
		}
		if d := e.Decide(context.Background(), chat(alice)); !d.Allow {
			t.Fatalf("refused after the first request settled at 5 tokens: %s", d.Reason)
		}
	}
}
