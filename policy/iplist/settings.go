package iplist

import (
	"fmt"
	"path/filepath"

	"github.com/modelguard/modelguard/policy/field"
)

// Settings is the ip_lists section of the configuration. No lists: no
// address check.
type Settings struct {
	// Lists are checked in order before authentication. An address in any
	// deny list is refused; when there is at least one allow list, an
	// address in none of them is refused too. Deny wins over allow.
	Lists []ListSettings `yaml:"lists"`
}

// ListSettings is one list file.
type ListSettings struct {
	// Name names the list in decisions, audit records, logs and metrics;
	// unique.
	Name string `yaml:"name"`
	// File holds one IPv4 or IPv6 address or CIDR prefix per line ("#"
	// starts a comment); it reloads when it changes.
	File string `yaml:"file"`
	// Action is "deny" or "allow".
	Action string `yaml:"action"`
}

// Actions.
const (
	ActionDeny  = "deny"
	ActionAllow = "allow"
)

// Validate checks s; files are resolved against dir. The errors are
// *field.Error relative to the section ("lists[1].file").
func (s Settings) Validate(dir string) []error {
	var errs field.List
	seen := map[string]bool{}
	for i, l := range s.Lists {
		p := fmt.Sprintf("lists[%d]", i)
		errs.UniqueName(p+".name", l.Name, "list", seen)
		errs.OneOf(p+".action", l.Action, ActionDeny, ActionAllow)
		if l.File == "" {
			errs.Addf(p+".file", "required")
		} else if err := field.CheckFile(resolve(dir, l.File)); err != nil {
			errs = append(errs, &field.Error{Path: p + ".file", Err: err})
		}
	}
	return errs
}

func resolve(dir, f string) string {
	if filepath.IsAbs(f) || dir == "" {
		return f
	}
	return filepath.Join(dir, f)
}
