package ratelimit

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/modelguard/modelguard/policy/field"
)

func TestValidate(t *testing.T) {
	ok := Rule{Name: "rpm", Requests: 60, Per: time.Minute, Key: []string{"subject", "claim:tenant"}}
	tests := []struct {
		name string
		edit func(s *Settings)
		path string // "" when valid
		msg  string
	}{
		{"valid", func(s *Settings) {}, "", ""},
		{"valid redis", func(s *Settings) { s.Store, s.Redis.Address = "redis", "127.0.0.1:6379" }, "", ""},
		{"store", func(s *Settings) { s.Store = "memcached" }, "store", "not one of local, redis"},
		{"redis address", func(s *Settings) { s.Store = "redis" }, "redis.address", "host:port"},
		{"timeout", func(s *Settings) { s.Redis.Timeout = 5 * time.Second }, "redis.timeout", "between"},
		{"on_error", func(s *Settings) { s.Redis.OnError = "allow" }, "redis.on_error", "not one of deny, local"},
		{"max_keys", func(s *Settings) { s.Local.MaxKeys = 10 }, "local.max_keys", "must be between 1024"},
		{"name", func(s *Settings) { s.Rules[0].Name = "Bad Name" }, "rules[0].name", "a-z"},
		{"duplicate name", func(s *Settings) { s.Rules = append(s.Rules, ok) }, "rules[1].name", "another rule"},
		{"both amounts", func(s *Settings) { s.Rules[0].Tokens = 5 }, "rules[0]", "exactly one of requests and tokens"},
		{"no amount", func(s *Settings) { s.Rules[0].Requests = 0 }, "rules[0]", "exactly one"},
		{"negative burst", func(s *Settings) { s.Rules[0].Burst = -1 }, "rules[0]", "burst"},
		{"too fast", func(s *Settings) { s.Rules[0].Requests, s.Rules[0].Per = 2_000_000, time.Second }, "rules[0]", "more than one a microsecond"},
		{"short window", func(s *Settings) { s.Rules[0].Per = time.Millisecond }, "rules[0].per", "between 1s"},
		{"long window", func(s *Settings) { s.Rules[0].Per = 40 * 24 * time.Hour }, "rules[0].per", "between"},
		{"key part", func(s *Settings) { s.Rules[0].Key = []string{"tenant"} }, "rules[0].key[0]", "not one of"},
		{"key twice", func(s *Settings) { s.Rules[0].Key = []string{"model", "model"} }, "rules[0].key[1]", "twice"},
		{"empty match", func(s *Settings) { s.Rules[0].Match.Roles = []string{""} }, "rules[0].match.roles[0]", "empty"},
		{"empty claim", func(s *Settings) { s.Rules[0].Match.Claims = []ClaimMatch{{Name: "org"}} }, "rules[0].match.claims[0]", "must be set"},
	}
	for _, tt := range tests {
		s := DefaultSettings()
		s.Rules = []Rule{ok}
		tt.edit(&s)
		errs := s.Validate()
		if tt.path == "" {
			if len(errs) != 0 {
				t.Errorf("%s: %v", tt.name, errs)
			}
			continue
		}
		var fe *field.Error
		if len(errs) != 1 || !errors.As(errs[0], &fe) || fe.Path != tt.path || !strings.Contains(fe.Err.Error(), tt.msg) {
			t.Errorf("%s: got %v, want one error at %s containing %q", tt.name, errs, tt.path, tt.msg)
		}
	}
}

// The defaults validate, and settings built in code get the same ones.
func TestDefaults(t *testing.T) {
	s := DefaultSettings()
	if errs := s.Validate(); len(errs) != 0 {
		t.Fatal(errs)
	}
	if got := (Settings{}).orDefaults(); !reflect.DeepEqual(got, s) {
		t.Fatalf("orDefaults %+v, DefaultSettings %+v", got, s)
	}
}
