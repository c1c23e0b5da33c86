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
	// Query evaluated for each request, default data.modelguard.authz.allow;
	// a reference starting with "data.".
	// Its result is a boolean or an object {allow, status, reason, message, headers}.
	Query string `yaml:"query"`
	// Timeout for one evaluation, default 100ms, between 1ms and 10s.
	Timeout time.Duration `yaml:"timeout"`
	// DecisionCache keeps the decisions of cacheable policies; see
	// CacheSettings. Off when built in code and left zero.
	DecisionCache CacheSettings `yaml:"decision_cache"`
}

// Defaults and limits of Settings.
const (
	DefaultQuery   = "data.modelguard.authz.allow"
	DefaultTimeout = 100 * time.Millisecond
	MinTimeout     = time.Millisecond
	MaxTimeout     = 10 * time.Second
)

// DefaultSettings returns the value every absent key takes.
func DefaultSettings() Settings {
	return Settings{Query: DefaultQuery, Timeout: DefaultTimeout, DecisionCache: CacheSettings{Enabled: true, Size: DefaultCacheSize}}
}

// orDefaults gives zero fields their defaults, for settings built in code;
// the configuration file applies DefaultSettings to absent keys only, so
// that an explicit zero is refused by Validate.
func (s Settings) orDefaults() Settings {
	def := DefaultSettings()
	if s.Query == "" {
		s.Query = def.Query
	}
	if s.Timeout == 0 {
		s.Timeout = def.Timeout
	}
	return s
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
