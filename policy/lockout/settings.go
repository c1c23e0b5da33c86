// Package lockout blocks a client address after repeated authentication
// failures: from that address, or against one key id, within a window.
// A locked address is refused for a cooling period before authentication
// is even tried. State is shared by every replica through the rate limits'
// Redis (rate_limits.store: redis), or held in process.
package lockout

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/modelguard/modelguard/policy/field"
)

// Settings is the lockout section of the configuration. MaxFailures 0
// (the default): no lockout.
type Settings struct {
	// MaxFailures is how many failed authentications within Window lock
	// the address out; 0 turns lockout off.
	MaxFailures int `yaml:"max_failures"`
	// Window is the period failures are counted over; default 5m.
	Window time.Duration `yaml:"window"`
	// Cooldown is how long a locked address is refused; default 15m.
	Cooldown time.Duration `yaml:"cooldown"`
	// Status is what a locked address gets: 429 (default, with
	// retry-after) or 403.
	Status int `yaml:"status"`
	// By lists what failures are counted per: source (the client address)
	// and key_id (an API key that exists but was refused: expired,
	// disabled). Default both. Either count reaching MaxFailures locks
	// out the address of the failing request.
	By []string `yaml:"by"`
	// MaxKeys bounds the in-process store (also the fallback of
	// rate_limits.redis.on_error: local); past it, failures of new
	// addresses are not counted (and logged). Default 100000.
	MaxKeys int `yaml:"max_keys"`
}

// Counting dimensions.
const (
	BySource = "source"
	ByKeyID  = "key_id"
)

// DefaultSettings returns the value every absent key takes.
func DefaultSettings() Settings {
	return Settings{
		Window:   5 * time.Minute,
		Cooldown: 15 * time.Minute,
		Status:   http.StatusTooManyRequests,
		By:       []string{BySource, ByKeyID},
		MaxKeys:  100_000,
	}
}

// Enabled reports whether lockout is on.
func (s Settings) Enabled() bool { return s.MaxFailures > 0 }

// orDefaults gives zero fields their defaults, for settings built in code.
func (s Settings) orDefaults() Settings {
	d := DefaultSettings()
	s.Window = cmp.Or(s.Window, d.Window)
	s.Cooldown = cmp.Or(s.Cooldown, d.Cooldown)
	s.Status = cmp.Or(s.Status, d.Status)
	s.MaxKeys = cmp.Or(s.MaxKeys, d.MaxKeys)
	if s.By == nil {
		s.By = d.By
	}
	return s
}

// Validate checks s. The errors are *field.Error relative to the section.
func (s Settings) Validate() []error {
	var errs field.List
	field.Range(&errs, "max_failures", s.MaxFailures, 0, 1_000_000)
	if !s.Enabled() {
		return errs
	}
	field.Range(&errs, "window", s.Window, time.Second, 24*time.Hour)
	field.Range(&errs, "cooldown", s.Cooldown, time.Second, 7*24*time.Hour)
	if s.Status != http.StatusTooManyRequests && s.Status != http.StatusForbidden {
		errs.Addf("status", "must be 429 or 403, got %d", s.Status)
	}
	if len(s.By) == 0 {
		errs.Addf("by", "must name source, key_id or both")
	}
	for i, b := range s.By {
		errs.OneOf(fmt.Sprintf("by[%d]", i), b, BySource, ByKeyID)
		if slices.Index(s.By, b) != i {
			errs.Addf("by", "%q is listed twice", b)
		}
	}
	field.Range(&errs, "max_keys", s.MaxKeys, 1024, 1<<26)
	return errs
}
