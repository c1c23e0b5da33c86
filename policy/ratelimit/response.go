package ratelimit

import (
	"strconv"
	"time"
)

// Estimate is what a request reserves from token budgets: its prompt,
// promptChars / prompt_chars_per_token rounded up, plus the largest
// completion it may produce. completion is the request's max_tokens (or
// max_completion_tokens), else its model's limits.max_tokens, else 0 for
// the default_completion_tokens; completes is false for operations that
// produce no completion (embeddings).
//
// The prompt part is an estimate: tokenizers average about 4 characters a
// token on English text, fewer on code and other scripts (about 1 for
// Chinese or Japanese). prompt_chars_per_token: 1 over-counts almost any
// text and makes the reservation an upper bound.
func (l *Limiter) Estimate(promptChars int, completion int64, completes bool) int64 {
	prompt := (int64(max(promptChars, 0)) + l.charsPerToken - 1) / l.charsPerToken
	if !completes {
		return prompt
	}
	if completion <= 0 {
		completion = l.defaultCompletion
	}
	return prompt + completion
}

// Reason is the operator-facing code of a refusal.
func (r *Result) Reason() string {
	if r.refusedTokens {
		return "rate_limited_tokens"
	}
	return "rate_limited_requests"
}

// Error is the OpenAI error type, code and client message of a refusal:
// what OpenAI's own API answers, so that SDKs retry rate limits and do not
// retry an exhausted quota.
func (r *Result) Error() (typ, code, message string) {
	if r.Quota {
		return "insufficient_quota", "insufficient_quota", "quota exceeded for this period"
	}
	if r.refusedTokens {
		return "tokens", "rate_limit_exceeded", "rate limit reached for tokens"
	}
	return "requests", "rate_limit_exceeded", "rate limit reached for requests"
}

// Headers calls set with OpenAI's rate limit headers for the tightest
// limits that applied (x-ratelimit-{limit,remaining,reset}-{requests,
// tokens}) and, on a refusal, retry-after (seconds, rounded up),
// retry-after-ms, and x-should-retry: false for an exhausted quota.
func (r *Result) Headers(set func(name, value string)) {
	window(set, &r.Requests, "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
	window(set, &r.Tokens, "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")
	if r.Allowed || !r.Matched() {
		return
	}
	set("retry-after", strconv.FormatInt(int64((r.RetryAfter+time.Second-1)/time.Second), 10))
	set("retry-after-ms", strconv.FormatInt(int64((r.RetryAfter+time.Millisecond-1)/time.Millisecond), 10))
	if r.Quota {
		set("x-should-retry", "false")
	}
}

func window(set func(name, value string), w *Window, limit, remaining, reset string) {
	if w.Limit == 0 {
		return
	}
	set(limit, strconv.FormatInt(w.Limit, 10))
	set(remaining, strconv.FormatInt(w.Remaining, 10))
	// OpenAI's form: "1s", "6m0s", "20ms".
	set(reset, w.Reset.Round(time.Millisecond).String())
}
