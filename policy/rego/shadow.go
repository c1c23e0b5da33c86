package rego

import (
	"cmp"
	"context"
	"errors"

	"github.com/modelguard/modelguard/policy/bundle"
	"github.com/modelguard/modelguard/policy/field"
)

// Shadow is a second policy, from a directory or a bundle service,
// evaluated beside the enforced one: the authorization.shadow section. Its
// answer never changes the decision; disagreements are counted and
// recorded. This is how a new policy is tried on real traffic before it is
// enforced.
type Shadow struct {
	PolicyDir string          `yaml:"policy_dir"`
	Bundle    bundle.Settings `yaml:"bundle"`
	// Query defaults to the enforced policy's.
	Query string `yaml:"query"`
}

// Configured reports whether a shadow policy is set.
func (s Shadow) Configured() bool { return s.PolicyDir != "" || s.Bundle.Configured() }

func (s Shadow) validate(baseDir string) []error {
	var errs field.List
	if !s.Configured() {
		if s.Query != "" {
			errs.Addf("query", "set without shadow.policy_dir or shadow.bundle")
		}
		return errs
	}
	Source{PolicyDir: s.PolicyDir, Bundle: s.Bundle}.validate(&errs, "", baseDir)
	if s.Query != "" {
		if _, err := parseQuery(s.Query); err != nil {
			errs = append(errs, &field.Error{Path: "query", Err: err})
		}
	}
	return errs
}

// OpenShadow opens the shadow policy of s like Open opens the enforced
// one, with the same timeout; nil when none is configured. Its errors are
// relative to the authorization section ("shadow.policy_dir").
func OpenShadow(ctx context.Context, s Settings, baseDir string, opts Options) (*Engine, error) {
	s = s.orDefaults()
	sh := s.Shadow
	if !sh.Configured() {
		return nil, nil
	}
	if errs := sh.validate(baseDir); len(errs) > 0 {
		return nil, field.Under("shadow", errors.Join(errs...))
	}
	// The enforced policy's timeout and decision cache settings, a cache of
	// its own.
	s.PolicyDir, s.Bundle, s.Query = sh.PolicyDir, sh.Bundle, cmp.Or(sh.Query, s.Query)
	e, err := open(ctx, s, baseDir, opts)
	if err != nil {
		return nil, field.Under("shadow", err)
	}
	return e, nil
}

// Inputs are the optional input members the policy now deciding reads
// (none before the first).
func (e *Engine) Inputs() Inputs {
	if p := e.current.Load(); p != nil {
		return p.reads.inputs
	}
	return 0
}
