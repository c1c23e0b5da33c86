package rego

import (
	"os"
	"path/filepath"
	"time"

	"github.com/modelguard/modelguard/policy/field"
)

// Settings configure an Engine: the authorization section.
type Settings struct {
	// PolicyDir holds .rego and data (.json/.yaml) files; watched for
	// changes. Required; relative to the configuration's directory.
	PolicyDir string `yaml:"policy_dir"`
	// Input is the shape of the input document: ShapeModelguard (the
	// default) or ShapeOPAEnvoy, the one opa-envoy-plugin builds.
	Input string `yaml:"input"`
	// Query evaluated for each request, a reference starting with "data.";
	// default DefaultQuery, or DefaultOPAEnvoyQuery with input opa-envoy.
	// Its result is a boolean or an object (see the package documentation).
	Query string `yaml:"query"`
	// Timeout for one evaluation, default 100ms, between 1ms and 10s.
	Timeout time.Duration `yaml:"timeout"`
	// DecisionCache keeps the decisions of cacheable policies; see
	// CacheSettings. Off when built in code and left zero.
	DecisionCache CacheSettings `yaml:"decision_cache"`
}

// Defaults and limits of Settings.
const (
	DefaultQuery = "data.modelguard.authz.allow"
	// DefaultOPAEnvoyQuery is opa-envoy-plugin's default decision path.
	DefaultOPAEnvoyQuery = "data.envoy.authz.allow"
	DefaultTimeout       = 100 * time.Millisecond
	MinTimeout           = time.Millisecond
	MaxTimeout           = 10 * time.Second
)

// Values of Settings.Input.
const (
	ShapeModelguard = "modelguard"
	ShapeOPAEnvoy   = "opa-envoy"
)

// DefaultSettings returns the value every absent key takes.
func DefaultSettings() Settings { return DefaultSettingsFor("") }

// DefaultSettingsFor returns the value every absent key takes when the
// input key says input ("" when absent): the default query follows it.
func DefaultSettingsFor(input string) Settings {
	s := Settings{Input: ShapeModelguard, Query: DefaultQuery, Timeout: DefaultTimeout,
		DecisionCache: CacheSettings{Enabled: true, Size: DefaultCacheSize}}
	if input == ShapeOPAEnvoy {
		s.Query = DefaultOPAEnvoyQuery
	}
	return s
}

// orDefaults gives zero fields their defaults, for settings built in code;
// the configuration file applies DefaultSettings to absent keys only, so
// that an explicit zero is refused by Validate.
func (s Settings) orDefaults() Settings {
	def := DefaultSettingsFor(s.Input)
	if s.Input == "" {
		s.Input = def.Input
	}
	if s.Query == "" {
		s.Query = def.Query
	}
	if s.Timeout == 0 {
		s.Timeout = def.Timeout
	}
	return s
}

// orQuery is query, or s's query when query is "".
func (s Settings) orQuery(query string) string {
	if query == "" {
		return s.Query
	}
	return query
}

// Validate checks s; the policy directory resolves against baseDir. The
// errors are *field.Error relative to the section ("timeout").
func (s Settings) Validate(baseDir string) []error {
	var errs field.List
	if s.PolicyDir == "" {
		errs.Addf("policy_dir", "required: the directory holding the .rego policies")
	} else if st, err := os.Stat(resolve(s.PolicyDir, baseDir)); err != nil {
		errs = append(errs, &field.Error{Path: "policy_dir", Err: err})
	} else if !st.IsDir() {
		errs.Addf("policy_dir", "%s is not a directory", resolve(s.PolicyDir, baseDir))
	}
	if s.Input != ShapeModelguard && s.Input != ShapeOPAEnvoy {
		errs.Addf("input", "%q: want %s or %s", s.Input, ShapeModelguard, ShapeOPAEnvoy)
	}
	if _, err := parseQuery(s.Query); err != nil {
		errs = append(errs, &field.Error{Path: "query", Err: err})
	}
	field.Range(&errs, "timeout", s.Timeout, MinTimeout, MaxTimeout)
	errs = append(errs, field.Within("decision_cache", s.DecisionCache.validate())...)
	return errs
}

// resolve joins a relative dir to baseDir.
func resolve(dir, baseDir string) string {
	if filepath.IsAbs(dir) {
		return filepath.Clean(dir)
	}
	return filepath.Join(baseDir, dir)
}

// dirError places an error about the policy directory's content at its field.
func dirError(err error) error { return &field.Error{Path: "policy_dir", Err: err} }
