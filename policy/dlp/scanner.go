package dlp

import (
	"iter"
	"math/bits"
	"regexp"
	"strings"
)

// Findings is the set of rules that matched: bit i is the scanner's rule i.
type Findings uint64

type rule struct {
	name   string
	deny   bool
	detect detector
}

// Scanner applies compiled rules. It is immutable and safe for concurrent
// use.
type Scanner struct {
	rules []rule
	deny  Findings // the rules whose action is deny
}

// Compile builds a Scanner from validated settings.
func Compile(s Settings) (*Scanner, error) {
	sc := &Scanner{}
	for i, r := range s.Rules {
		d := builtins[r.Detector]
		if r.Pattern != "" {
			re, err := regexp.Compile(r.Pattern)
			if err != nil {
				return nil, err
			}
			d = re.MatchString
		}
		deny := r.Action != ActionFlag
		if deny {
			sc.deny |= 1 << i
		}
		sc.rules = append(sc.rules, rule{name: r.Name, deny: deny, detect: d})
	}
	return sc, nil
}

// Scan runs every rule over texts. It stops at the first match of a
// denying rule: the request is refused whatever else it holds.
func (sc *Scanner) Scan(texts iter.Seq[string]) Findings {
	var f Findings
	for t := range texts {
		for i := range sc.rules {
			if f&(1<<i) == 0 && sc.rules[i].detect(t) {
				f |= 1 << i
				if sc.rules[i].deny {
					return f
				}
			}
		}
	}
	return f
}

// Denied names the denying rule among f, if any.
func (sc *Scanner) Denied(f Findings) (string, bool) {
	if d := f & sc.deny; d != 0 {
		return sc.rules[bits.TrailingZeros64(uint64(d))].name, true
	}
	return "", false
}

// Names lists the rules in f, in configuration order.
func (sc *Scanner) Names(f Findings) []string {
	var out []string
	for i := range sc.rules {
		if f&(1<<i) != 0 {
			out = append(out, sc.rules[i].name)
		}
	}
	return out
}

// Joined is Names joined with ",", for the audit record.
func (sc *Scanner) Joined(f Findings) string { return strings.Join(sc.Names(f), ",") }
