package ratelimit

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/modelguard/modelguard/policy/field"
)

// Settings is the rate_limits section of the configuration. No rules: no
// limits. Absent keys take DefaultSettings; Validate checks the result.
type Settings struct {
	// Store is "local" (default: in-process, one replica) or "redis"
	// (shared by every replica pointing at the same server).
	Store string `yaml:"store"`
	// Local bounds the in-process store (also the fallback of on_error: local).
	Local LocalSettings `yaml:"local"`
	// Redis configures the shared store; required with store: redis.
	Redis RedisSettings `yaml:"redis"`
	// QuotaAfter: a refusal whose retry is further away than this is
	// reported as insufficient_quota with x-should-retry: false rather than
	// as a rate limit the client should retry. Default 1m.
	QuotaAfter time.Duration `yaml:"quota_after"`
	// PromptCharsPerToken turns the prompt characters the body step counts
	// into a token estimate, rounded up. Default 4 (English text with
	// OpenAI's tokenizers); 1 over-counts almost any text, see Estimate.
	PromptCharsPerToken int `yaml:"prompt_chars_per_token"`
	// DefaultCompletionTokens is reserved for the completion of a request
	// that sets no max_tokens / max_completion_tokens when its model has no
	// limits.max_tokens either. Default 4096.
	DefaultCompletionTokens int `yaml:"default_completion_tokens"`
	// Rules are the limits. Every rule that matches a request applies; the
	// request is admitted only if all of them admit it.
	Rules []Rule `yaml:"rules"`
}

// LocalSettings bounds the in-process store.
type LocalSettings struct {
	// MaxKeys caps the keys held at once (idle keys are evicted first);
	// past it a request needing a new key is refused 503. Default 1,000,000
	// (under 200 MB).
	MaxKeys int `yaml:"max_keys"`
}

// RedisSettings configures the Redis (or Valkey) store.
type RedisSettings struct {
	// Address is host:port of the server.
	Address  string `yaml:"address"`
	Username string `yaml:"username"`
	// PasswordEnv names an environment variable holding the password.
	PasswordEnv string `yaml:"password_env"`
	DB          int    `yaml:"db"`
	// TLS connects with TLS (system roots).
	TLS bool `yaml:"tls"`
	// Timeout bounds the one round trip a request makes, including a
	// reconnection; default 50ms, between 1ms and 1s.
	Timeout time.Duration `yaml:"timeout"`
	// OnError is what a request gets when Redis fails or is slower than
	// Timeout: "deny" (default: 503, reason ratelimit_unavailable) or
	// "local" (decided by this replica's own in-process limits).
	OnError string `yaml:"on_error"`
	// KeyPrefix starts every key; default "modelguard:rl:".
	KeyPrefix string `yaml:"key_prefix"`
	// PoolSize is the connection pool size; default 10 per CPU.
	PoolSize int `yaml:"pool_size"`
}

// Rule is one limit: Requests or Tokens per Per, with a Burst, counted per
// Key, applied to the requests Match selects.
type Rule struct {
	// Name names the limit in logs, audit records and metrics; unique.
	Name string `yaml:"name"`
	// Requests admitted per window; exclusive with Tokens.
	Requests int `yaml:"requests"`
	// Tokens reserved per window (prompt estimate + completion cap);
	// exclusive with Requests.
	Tokens int `yaml:"tokens"`
	// Per is the window, from 1s to 31 days.
	Per time.Duration `yaml:"per"`
	// Burst is how much may be spent at once from a full allowance;
	// default (0) the whole amount. The allowance refills continuously at
	// amount/per (GCRA).
	Burst int `yaml:"burst"`
	// Key lists what the limit is counted per: subject, key_id, source,
	// model, role, class, claim:<name>. Empty: one shared limit.
	Key []string `yaml:"key"`
	// Match selects the requests the rule applies to; empty: all.
	Match Match `yaml:"match"`
}

// Match selects requests. Every non-empty field must match (and); within a
// field any value matches (or).
type Match struct {
	// Classes are limit classes the policy picks (a field of its result).
	Classes  []string `yaml:"classes"`
	Roles    []string `yaml:"roles"`
	Models   []string `yaml:"models"`
	Subjects []string `yaml:"subjects"`
	// Claims: each named claim (string, number or boolean, or an array of
	// them) must equal one of its values.
	Claims []ClaimMatch `yaml:"claims"`
}

// ClaimMatch is one claim a rule requires.
type ClaimMatch struct {
	Name   string   `yaml:"name"`
	Values []string `yaml:"values"`
}

// Defaults.
const (
	DefaultMaxKeys    = 1_000_000
	DefaultTimeout    = 50 * time.Millisecond
	DefaultKeyPrefix  = "modelguard:rl:"
	DefaultQuotaAfter = time.Minute
	// DefaultPromptCharsPerToken is the usual average for English text.
	DefaultPromptCharsPerToken = 4
	DefaultCompletionTokens    = 4096
)

// Bounds checked by Validate.
const (
	minPer     = time.Second
	maxPer     = 31 * 24 * time.Hour
	minTimeout = time.Millisecond
	maxTimeout = time.Second
	// maxUnits keeps GCRA arithmetic exact in Redis's Lua (doubles).
	maxUnits = 1 << 52
)

// DefaultSettings returns the value every absent key takes.
func DefaultSettings() Settings {
	return Settings{
		Store:                   "local",
		Local:                   LocalSettings{MaxKeys: DefaultMaxKeys},
		Redis:                   RedisSettings{Timeout: DefaultTimeout, OnError: "deny", KeyPrefix: DefaultKeyPrefix},
		QuotaAfter:              DefaultQuotaAfter,
		PromptCharsPerToken:     DefaultPromptCharsPerToken,
		DefaultCompletionTokens: DefaultCompletionTokens,
	}
}

// orDefaults gives zero fields their defaults, for settings built in code;
// the configuration file applies DefaultSettings to absent keys only, so
// that an explicit zero is refused by Validate.
func (s Settings) orDefaults() Settings {
	def := DefaultSettings()
	s.Store = cmp.Or(s.Store, def.Store)
	s.Local.MaxKeys = cmp.Or(s.Local.MaxKeys, def.Local.MaxKeys)
	s.Redis.Timeout = cmp.Or(s.Redis.Timeout, def.Redis.Timeout)
	s.Redis.OnError = cmp.Or(s.Redis.OnError, def.Redis.OnError)
	s.Redis.KeyPrefix = cmp.Or(s.Redis.KeyPrefix, def.Redis.KeyPrefix)
	s.QuotaAfter = cmp.Or(s.QuotaAfter, def.QuotaAfter)
	s.PromptCharsPerToken = cmp.Or(s.PromptCharsPerToken, def.PromptCharsPerToken)
	s.DefaultCompletionTokens = cmp.Or(s.DefaultCompletionTokens, def.DefaultCompletionTokens)
	return s
}

// Validate checks s. The errors are *field.Error relative to the section
// ("rules[2].per").
func (s Settings) Validate() []error {
	var errs field.List
	errs.OneOf("store", s.Store, "local", "redis")
	if s.Store == "redis" {
		if _, port, err := net.SplitHostPort(s.Redis.Address); err != nil || port == "" {
			errs.Addf("redis.address", "must be host:port with store: redis")
		}
	}
	field.Range(&errs, "local.max_keys", s.Local.MaxKeys, 1024, 1<<30)
	field.Range(&errs, "redis.timeout", s.Redis.Timeout, minTimeout, maxTimeout)
	errs.OneOf("redis.on_error", s.Redis.OnError, "deny", "local")
	field.Range(&errs, "redis.pool_size", s.Redis.PoolSize, 0, 10000)
	field.Range(&errs, "redis.db", s.Redis.DB, 0, 10000)
	field.Range(&errs, "quota_after", s.QuotaAfter, 0, maxPer)
	field.Range(&errs, "prompt_chars_per_token", s.PromptCharsPerToken, 1, 16)
	field.Range(&errs, "default_completion_tokens", s.DefaultCompletionTokens, 1, 1<<30)
	seen := map[string]bool{}
	for i, r := range s.Rules {
		p := fmt.Sprintf("rules[%d]", i)
		errs.UniqueName(p+".name", r.Name, "rule", seen)
		if err := r.validateAmount(); err != nil {
			errs = append(errs, &field.Error{Path: p, Err: err})
		}
		field.Range(&errs, p+".per", r.Per, minPer, maxPer)
		for j, k := range r.Key {
			kp := fmt.Sprintf("%s.key[%d]", p, j)
			if _, err := parseKeyPart(k); err != nil {
				errs = append(errs, &field.Error{Path: kp, Err: err})
			} else if slices.Index(r.Key, k) != j {
				errs.Addf(kp, "%q is listed twice", k)
			}
		}
		r.Match.validate(p+".match", &errs)
	}
	return errs
}

func (r *Rule) validateAmount() error {
	if (r.Requests > 0) == (r.Tokens > 0) || r.Requests < 0 || r.Tokens < 0 {
		return errors.New("exactly one of requests and tokens must be set, and positive")
	}
	amount := r.amount()
	if r.Per >= minPer && int64(amount) > r.Per.Microseconds() {
		return fmt.Errorf("%d per %v is more than one a microsecond", amount, r.Per)
	}
	if r.Burst < 0 {
		return errors.New("burst must not be negative")
	}
	if r.Per >= minPer && r.Burst > 0 && float64(r.Burst)*float64(r.Per.Microseconds()/int64(amount)) > maxUnits {
		return errors.New("burst is too large")
	}
	return nil
}

func (r *Rule) amount() int { return max(r.Requests, r.Tokens) }

func (m *Match) validate(path string, errs *field.List) {
	for name, list := range map[string][]string{"classes": m.Classes, "roles": m.Roles, "models": m.Models, "subjects": m.Subjects} {
		for j, v := range list {
			if v == "" {
				errs.Addf(fmt.Sprintf("%s.%s[%d]", path, name, j), "must not be empty")
			}
		}
	}
	for j, c := range m.Claims {
		if c.Name == "" || len(c.Values) == 0 {
			errs.Addf(fmt.Sprintf("%s.claims[%d]", path, j), "name and values must be set")
		}
	}
}

// keyKind is one part of a rule's key.
type keyKind uint8

const (
	keySubject keyKind = iota
	keyKeyID
	keySource
	keyModel
	keyRole
	keyClass
	keyClaim
)

func parseKeyPart(s string) (keyKind, error) {
	switch s {
	case "subject":
		return keySubject, nil
	case "key_id":
		return keyKeyID, nil
	case "source":
		return keySource, nil
	case "model":
		return keyModel, nil
	case "role":
		return keyRole, nil
	case "class":
		return keyClass, nil
	}
	if name, ok := strings.CutPrefix(s, "claim:"); ok && name != "" {
		return keyClaim, nil
	}
	return 0, fmt.Errorf("%q is not one of subject, key_id, source, model, role, class, claim:<name>", s)
}
