package config

import (
	"errors"

	"github.com/modelguard/modelguard/policy/ratelimit"
)

// rateLimits places the ratelimit package's own validation errors under
// the rate_limits key so that they are reported with their line.
func (v *validator) rateLimits(s *ratelimit.Settings) {
	for _, err := range s.Validate() {
		var fe *ratelimit.FieldError
		if errors.As(err, &fe) {
			err = &FieldError{Path: "rate_limits." + fe.Path, Err: fe.Err}
		}
		v.errs = append(v.errs, err)
	}
}
