// Package dlp finds data that must not be sent to a model in the prompt
// text of a request (chat message contents, completion prompts,
// embeddings inputs): credentials of the major providers, private keys,
// JWTs, payment card numbers, and operator RE2 patterns. Each rule either
// denies the request (400, naming the rule, never the match) or lets it
// through flagged (audit record and metric).
package dlp

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/modelguard/modelguard/policy/field"
)

// Settings is the dlp section of the configuration. No rules: no scan.
type Settings struct {
	Rules []RuleSettings `yaml:"rules"`
}

// RuleSettings is one rule: a built-in Detector or an operator Pattern.
type RuleSettings struct {
	// Name names the rule in the client's 400, audit records, logs and
	// metrics; unique.
	Name string `yaml:"name"`
	// Detector is a built-in detector (see Detectors); exclusive with
	// Pattern.
	Detector string `yaml:"detector"`
	// Pattern is an RE2 regular expression (Go's regexp syntax).
	Pattern string `yaml:"pattern"`
	// Action is "deny" (default: 400) or "flag" (allowed, recorded).
	Action string `yaml:"action"`
}

// Actions.
const (
	ActionDeny = "deny"
	ActionFlag = "flag"
)

// maxRules bounds the rules (Findings is a bit set).
const maxRules = 64

// Detectors lists the built-in detector ids.
func Detectors() []string {
	ids := make([]string, 0, len(builtins))
	for id := range builtins {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Validate checks s. The errors are *field.Error relative to the section.
// A rule's absent action is deny: the configuration loader leaves it
// empty and Compile reads it so.
func (s Settings) Validate() []error {
	var errs field.List
	if len(s.Rules) > maxRules {
		errs.Addf("rules", "at most %d rules, got %d", maxRules, len(s.Rules))
	}
	seen := map[string]bool{}
	for i, r := range s.Rules {
		p := fmt.Sprintf("rules[%d]", i)
		errs.UniqueName(p+".name", r.Name, "rule", seen)
		switch {
		case (r.Detector == "") == (r.Pattern == ""):
			errs.Addf(p, "set exactly one of detector and pattern")
		case r.Detector != "":
			if _, ok := builtins[r.Detector]; !ok {
				errs.Addf(p+".detector", "%q is not one of %s", r.Detector, strings.Join(Detectors(), ", "))
			}
		default:
			if _, err := regexp.Compile(r.Pattern); err != nil {
				errs.Addf(p+".pattern", "not an RE2 expression: %v", err)
			}
		}
		if r.Action != "" {
			errs.OneOf(p+".action", r.Action, ActionDeny, ActionFlag)
		}
	}
	return errs
}
