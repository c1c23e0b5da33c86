package ratelimit

import (
	"maps"
	"testing"
	"time"
)

func TestEstimate(t *testing.T) {
	l := Settings{PromptCharsPerToken: 4, DefaultCompletionTokens: 1000}
	lim := (&Backend{metrics: NewMetrics(nil)}).Limiter(l)
	tests := []struct {
		chars      int
		completion int64
		completes  bool
		want       int64
	}{
		{0, 0, true, 1000},
		{1, 0, true, 1001},
		{8, 50, true, 52},
		{9, 50, true, 53},
		{9, 50, false, 3},
	}
	for _, tt := range tests {
		if got := lim.Estimate(tt.chars, tt.completion, tt.completes); got != tt.want {
			t.Errorf("Estimate(%d, %d, %v) = %d, want %d", tt.chars, tt.completion, tt.completes, got, tt.want)
		}
	}
}

func TestHeadersAndError(t *testing.T) {
	clock := &fakeClock{}
	l := limiter(backend(t, "local", clock, ""),
		Rule{Name: "rpm", Requests: 60, Per: time.Minute},
		Rule{Name: "tpm", Tokens: 1000, Per: time.Minute},
		Rule{Name: "daily", Requests: 2, Per: 24 * time.Hour, Match: Match{Classes: []string{"free"}}},
	)
	tests := []struct {
		name      string
		req       Request
		want      map[string]string
		typ, code string
		reason    string
	}{
		{"allowed", Request{Tokens: 400}, map[string]string{
			"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s",
			"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "600", "x-ratelimit-reset-tokens": "24s",
		}, "", "", ""},
		{"tokens refused", Request{Tokens: 700}, map[string]string{
			"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s",
			"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "600", "x-ratelimit-reset-tokens": "24s",
			"retry-after": "6", "retry-after-ms": "6000",
		}, "tokens", "rate_limit_exceeded", "rate_limited_tokens"},
		{"free tier", Request{Class: "free"}, nil, "", "", ""},
		{"free tier again", Request{Class: "free"}, nil, "", "", ""},
		{"quota", Request{Class: "free"}, map[string]string{
			"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "24h0m0s",
			"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "600", "x-ratelimit-reset-tokens": "24s",
			"retry-after": "43200", "retry-after-ms": "43200000", "x-should-retry": "false",
		}, "insufficient_quota", "insufficient_quota", "rate_limited_requests"},
	}
	for _, tt := range tests {
		res := check(t, l, tt.req)
		got := map[string]string{}
		res.Headers(func(k, v string) { got[k] = v })
		if tt.want != nil && !maps.Equal(got, tt.want) {
			t.Errorf("%s: headers %v, want %v", tt.name, got, tt.want)
		}
		if tt.typ == "" {
			if !res.Allowed {
				t.Errorf("%s: refused", tt.name)
			}
			continue
		}
		typ, code, msg := res.Error()
		if res.Allowed || typ != tt.typ || code != tt.code || msg == "" || res.Reason() != tt.reason {
			t.Errorf("%s: %v %s %s %q %s", tt.name, res.Allowed, typ, code, msg, res.Reason())
		}
	}
}
