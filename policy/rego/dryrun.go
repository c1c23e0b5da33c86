package rego

import (
	"slices"
	"strconv"
	"strings"

	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/models"
)

// DryRun says which requests the policy decides without enforcing: the
// authorization.dry_run section. A denial (or an error) of the policy on
// such a request is recorded as "would_deny" with the policy's reason and
// the request goes on. Only the policy's answer is lifted: an
// authentication failure, a body or model check, a rate limit, overload,
// the audit trail or no policy at all (policy_unavailable) still deny, as
// every step other than the policy is not being tried out.
type DryRun struct {
	// All puts every request in dry-run.
	All bool `yaml:"all"`
	// Models are configured model names whose requests are in dry-run.
	Models []string `yaml:"models"`
	// Paths are request paths in dry-run: an entry ending in "/" covers
	// every path under it, others match exactly. A request path matches
	// only in its normal form (no escapes, dot or empty segments, "\" or
	// ";"): another spelling is enforced, so that no spelling of an
	// enforced route can slip into dry-run.
	Paths []string `yaml:"paths"`
}

// Enabled reports whether any request can be in dry-run.
func (d DryRun) Enabled() bool { return d.All || len(d.Models) > 0 || len(d.Paths) > 0 }

// Applies reports whether a request for model (the configured model's
// name, "" for none) at path is in dry-run.
func (d DryRun) Applies(model, path string) bool {
	if d.All || (model != "" && slices.Contains(d.Models, model)) {
		return true
	}
	if len(d.Paths) == 0 || !models.Canonical(path) {
		return false
	}
	for _, p := range d.Paths {
		if p == path || (strings.HasSuffix(p, "/") && strings.HasPrefix(path, p)) {
			return true
		}
	}
	return false
}

// validate checks the section; that Models name configured models is a
// rule across sections, checked by the configuration.
func (d DryRun) validate() []error {
	var errs field.List
	for i, m := range d.Models {
		if m == "" {
			errs.Addf("models["+strconv.Itoa(i)+"]", "must not be empty")
		}
	}
	for i, p := range d.Paths {
		if !strings.HasPrefix(p, "/") || !models.Canonical(p) {
			errs.Addf("paths["+strconv.Itoa(i)+"]", "%q is not a path in normal form (starting with /, without escapes, dot or empty segments, \\ or ;)", p)
		}
	}
	return errs
}
