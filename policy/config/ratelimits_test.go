package config

import (
	"testing"
	"time"
)

func TestRateLimitValidation(t *testing.T) {
	limits := func(lines ...string) string {
		return doc(append([]string{okAuth, okPolicy, "rate_limits:"}, lines...)...)
	}
	runErrorCases(t, []errorCase{
		{"store unknown", limits("  store: memcached"), nil,
			[]string{`config.yaml:4: rate_limits.store: "memcached" is not one of local, redis`}},
		{"redis without address", limits("  store: redis"), nil,
			[]string{`config.yaml:3: rate_limits.redis.address: must be host:port with store: redis`}},
		{"on_error unknown", limits("  redis: {address: \"127.0.0.1:6379\", on_error: allow}"), nil,
			[]string{`config.yaml:4: rate_limits.redis.on_error: "allow" is not one of deny, local`}},
		{"both amounts", limits("  rules:", "    - {name: a, requests: 1, tokens: 5, per: 1m}"), nil,
			[]string{`config.yaml:5: rate_limits.rules[0]: exactly one of requests and tokens must be set`}},
		{"window too short", limits("  rules:", "    - name: a", "      requests: 10", "      per: 10ms"), nil,
			[]string{`config.yaml:7: rate_limits.rules[0].per: must be between 1s and 744h0m0s`}},
		{"key unknown", limits("  rules:", "    - name: a", "      requests: 10", "      per: 1m", "      key: [subject, tenant]"), nil,
			[]string{`config.yaml:8: rate_limits.rules[0].key[1]: "tenant" is not one of subject, key_id, source, model, role, class, claim:<name>`}},
		{"duplicate names", limits("  rules:", "    - {name: a, requests: 1, per: 1m}", "    - {name: a, requests: 2, per: 1m}"), nil,
			[]string{`config.yaml:6: rate_limits.rules[1].name: "a" is used by another rule`}},
		{"unknown key", limits("  rules:", "    - {name: a, requests: 1, per: 1m, window: 1m}"), nil,
			[]string{`config.yaml:5: rate_limits.rules[0].window: unknown key`}},
	})
}

func TestRateLimitDefaults(t *testing.T) {
	c := mustParse(t, doc(okAuth, okPolicy, "rate_limits:", "  rules:", "    - name: rpm", "      requests: 60", "      per: 1m",
		"      match: {claims: [{name: tier, values: [free]}]}"))
	s := c.RateLimits
	if s.Store != "local" || s.Redis.Timeout != 50*time.Millisecond || s.Redis.OnError != "deny" || len(s.Rules) != 1 || s.Rules[0].Match.Claims[0].Values[0] != "free" {
		t.Fatalf("%+v", s)
	}
}
