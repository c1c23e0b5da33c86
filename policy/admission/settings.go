package admission

import (
	"runtime"
	"time"

	"github.com/modelguard/modelguard/policy/field"
)

// Settings is the admission section of the configuration file, for the
// ext_authz server and the Kong plugin alike. DefaultSettings gives the
// value every absent key takes.
type Settings struct {
	// MaxInflightBodyBytes bounds the request bytes held by checks in
	// flight; default 256 MiB. The ext_authz server counts a whole
	// server.max_message_bytes for a message it is still reading (its size
	// is not known before), then the message's size; the configuration
	// therefore requires at least server.max_message_bytes.
	MaxInflightBodyBytes int `yaml:"max_inflight_body_bytes"`
	// MaxConcurrentChecks bounds the checks deciding at once (credential,
	// body checks, policy), so that CPU saturation queues briefly and then
	// sheds instead of running every check slowly into its timeout.
	// Default 0: four per CPU.
	MaxConcurrentChecks int `yaml:"max_concurrent_checks"`
	// MaxWait is how long a request waits for room; default 50ms, at most
	// 1s; 0 refuses at once.
	MaxWait time.Duration `yaml:"max_wait"`
}

// Defaults and limits of Settings.
const (
	DefaultMaxInflightBodyBytes = 256 << 20
	DefaultMaxWait              = 50 * time.Millisecond
	MaxWait                     = time.Second
	maxInflightBodyBytes        = 1 << 40
	maxConcurrentChecks         = 1 << 20
)

// DefaultSettings returns the settings of an absent admission section.
func DefaultSettings() Settings {
	return Settings{MaxInflightBodyBytes: DefaultMaxInflightBodyBytes, MaxWait: DefaultMaxWait}
}

// Validate checks the section on its own; errors are relative to it.
func (s Settings) Validate() []error {
	var errs field.List
	field.Range(&errs, "max_inflight_body_bytes", s.MaxInflightBodyBytes, 1, maxInflightBodyBytes)
	field.Range(&errs, "max_concurrent_checks", s.MaxConcurrentChecks, 0, maxConcurrentChecks)
	field.Range(&errs, "max_wait", s.MaxWait, 0, MaxWait)
	return errs
}

// Limits builds the limits the settings describe: checks deciding at once
// and request body bytes in flight (nil when MaxInflightBodyBytes is 0,
// as in settings built in code).
func (s Settings) Limits() (checks, bodies *Limit) {
	n := s.MaxConcurrentChecks
	if n == 0 {
		n = 4 * runtime.GOMAXPROCS(0)
	}
	checks = NewLimit(int64(n), s.MaxWait)
	if s.MaxInflightBodyBytes > 0 {
		bodies = NewLimit(int64(s.MaxInflightBodyBytes), s.MaxWait)
	}
	return checks, bodies
}
