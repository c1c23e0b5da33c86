package rego

import (
	"os"
	"path/filepath"
	"time"

	"github.com/modelguard/modelguard/policy/bundle"
	"github.com/modelguard/modelguard/policy/field"
)

// Settings configure an Engine: the authorization section.
type Settings struct {
	// PolicyDir holds .rego and data (.json/.yaml) files; watched for
	// changes. Relative to the configuration's directory. Exactly one of
	// PolicyDir and Bundle is set.
	PolicyDir string `yaml:"policy_dir"`
	// Bundle loads the policy from an OPA bundle service instead
	// (policy/bundle owns its settings).
	Bundle bundle.Settings `yaml:"bundle"`
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
	// DryRun lets requests the policy denies through, recording what it
	// would have answered (see DryRun).
	DryRun DryRun `yaml:"dry_run"`
	// Shadow is a second policy evaluated beside this one, never
	// affecting the answer (see Shadow).
	Shadow Shadow `yaml:"shadow"`
}

// Source is where a policy comes from: a directory or a bundle service.
type Source struct {
	PolicyDir string
	Bundle    bundle.Settings
}

// Source returns the enforced policy's source.
func (s Settings) Source() Source { return Source{PolicyDir: s.PolicyDir, Bundle: s.Bundle} }

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
	s := Settings{Bundle: bundle.DefaultSettings(), Input: ShapeModelguard, Query: DefaultQuery, Timeout: DefaultTimeout,
		DecisionCache: CacheSettings{Enabled: true, Size: DefaultCacheSize},
		Shadow:        Shadow{Bundle: bundle.DefaultSettings()}}
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
	s.Bundle = s.Bundle.OrDefaults()
	s.Shadow.Bundle = s.Shadow.Bundle.OrDefaults()
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
	if s.PolicyDir == "" && !s.Bundle.Configured() {
		errs.Addf("policy_dir", "required: the directory holding the .rego policies (or bundle.url, an OPA bundle service)")
	} else {
		s.Source().validate(&errs, "", baseDir)
	}
	if s.Input != ShapeModelguard && s.Input != ShapeOPAEnvoy {
		errs.Addf("input", "%q: want %s or %s", s.Input, ShapeModelguard, ShapeOPAEnvoy)
	}
	if _, err := parseQuery(s.Query); err != nil {
		errs = append(errs, &field.Error{Path: "query", Err: err})
	}
	field.Range(&errs, "timeout", s.Timeout, MinTimeout, MaxTimeout)
	errs = append(errs, field.Within("decision_cache", s.DecisionCache.validate())...)
	errs = append(errs, field.Within("dry_run", s.DryRun.validate())...)
	errs = append(errs, field.Within("shadow", s.Shadow.validate(baseDir))...)
	return errs
}

// validate checks a configured source; paths are under prefix.
func (src Source) validate(errs *field.List, prefix, baseDir string) {
	switch {
	case src.PolicyDir != "" && src.Bundle.Configured():
		errs.Addf(prefix+"bundle.url", "set either policy_dir or bundle, not both: one policy source per configuration")
	case src.Bundle.Configured():
		*errs = append(*errs, field.Within(prefix+"bundle", src.Bundle.Validate(baseDir))...)
	default:
		if st, err := os.Stat(resolve(src.PolicyDir, baseDir)); err != nil {
			*errs = append(*errs, &field.Error{Path: prefix + "policy_dir", Err: err})
		} else if !st.IsDir() {
			errs.Addf(prefix+"policy_dir", "%s is not a directory", resolve(src.PolicyDir, baseDir))
		}
	}
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
