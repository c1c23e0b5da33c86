// Package certid maps the identity of a client certificate, as the
// gateway verified it (Envoy's source.principal: the URI SAN such as a
// SPIFFE ID, else the DNS SAN, else the subject), to a subject and roles:
// mTLS between the client and the gateway as an authentication method of
// its own.
package certid

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/modelguard/modelguard/policy/field"
)

// Settings is authentication.client_certs: the principals that
// authenticate, each mapped to a subject and roles. Empty: off.
type Settings []Mapping

// Mapping is one principal, or every principal under a prefix.
type Mapping struct {
	// Principal matches exactly; exclusive with Prefix.
	Principal string `yaml:"principal"`
	// Prefix matches every principal that starts with it (say
	// "spiffe://cluster.local/ns/tenants/"); the longest prefix wins.
	Prefix string `yaml:"prefix"`
	// Subject is the caller's subject; default the principal itself.
	Subject string `yaml:"subject"`
	// Roles are the caller's roles.
	Roles []string `yaml:"roles"`
}

// Validate checks s. The errors are *field.Error relative to the section.
func (s Settings) Validate() []error {
	var errs field.List
	seen := map[string]int{}
	for i, m := range s {
		p := fmt.Sprintf("[%d]", i)
		key := m.Principal + "\x00" + m.Prefix
		switch {
		case (m.Principal == "") == (m.Prefix == ""):
			errs.Addf(p, "set exactly one of principal and prefix")
		default:
			if first, dup := seen[key]; dup {
				errs.Addf(p, "same principal or prefix as [%d]", first)
			}
			seen[key] = i
		}
		// Subject and roles become upstream header values.
		if m.Subject != "" && !httpguts.ValidHeaderFieldValue(m.Subject) {
			errs.Addf(p+".subject", "holds characters not allowed in a header value")
		}
		for j, r := range m.Roles {
			if r == "" || strings.Contains(r, ",") || !httpguts.ValidHeaderFieldValue(r) {
				errs.Addf(fmt.Sprintf("%s.roles[%d]", p, j), "must be non-empty, without commas or characters not allowed in a header value")
			}
		}
	}
	return errs
}

// Identity is a mapped caller.
type Identity struct {
	Subject string
	Roles   []string
}

// Map looks principals up. It is immutable.
type Map struct {
	exact    map[string]*Identity
	prefixes []prefix // longest first
}

type prefix struct {
	prefix string
	m      Mapping
}

// New builds a Map from validated settings.
func New(s Settings) *Map {
	mp := &Map{exact: map[string]*Identity{}}
	for _, m := range s {
		if m.Principal != "" {
			mp.exact[m.Principal] = &Identity{Subject: or(m.Subject, m.Principal), Roles: m.Roles}
			continue
		}
		mp.prefixes = append(mp.prefixes, prefix{m.Prefix, m})
	}
	// Longest prefix first, so the most specific mapping wins.
	slices.SortStableFunc(mp.prefixes, func(a, b prefix) int { return len(b.prefix) - len(a.prefix) })
	return mp
}

// Lookup maps a principal; false when none matches (or it is empty, or
// holds characters a header value cannot: the subject may be the
// principal itself).
func (mp *Map) Lookup(principal string) (*Identity, bool) {
	if principal == "" {
		return nil, false
	}
	if id, ok := mp.exact[principal]; ok {
		return id, true
	}
	for _, p := range mp.prefixes {
		if strings.HasPrefix(principal, p.prefix) && httpguts.ValidHeaderFieldValue(principal) {
			return &Identity{Subject: or(p.m.Subject, principal), Roles: p.m.Roles}, true
		}
	}
	return nil, false
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
