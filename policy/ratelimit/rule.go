package ratelimit

import (
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
)

// rule is a validated Rule ready for matching and counting. Quantities are
// in microseconds of GCRA "theoretical arrival time": one unit of the
// allowance (a request or a token) costs interval, and a key may run up to
// capacity ahead of now.
type rule struct {
	name     string
	tokens   bool  // a token budget; else a request limit
	amount   int64 // per window, for the x-ratelimit-limit-* headers
	interval int64 // µs per unit
	capacity int64 // µs: burst * interval
	burst    int64
	keys     []keyPart
	keyKind  string // "subject+model", for audit records; never the values
	match    Match
	counters *ruleCounters
}

type keyPart struct {
	kind  keyKind
	claim string
}

func compileRule(r Rule) *rule {
	amount := int64(r.amount())
	burst := int64(r.Burst)
	if burst == 0 {
		burst = amount
	}
	interval := r.Per.Microseconds() / amount
	c := &rule{
		name: r.Name, tokens: r.Tokens > 0, amount: amount,
		interval: interval, capacity: burst * interval, burst: burst,
		match: r.Match, keyKind: "global",
	}
	for _, k := range r.Key {
		kind, _ := parseKeyPart(k)
		c.keys = append(c.keys, keyPart{kind: kind, claim: strings.TrimPrefix(k, "claim:")})
	}
	if len(r.Key) > 0 {
		c.keyKind = strings.Join(r.Key, "+")
	}
	return c
}

// matches reports whether the rule applies to req.
func (r *rule) matches(req *Request) bool {
	m := &r.match
	if len(m.Classes) > 0 && !slices.Contains(m.Classes, req.Class) {
		return false
	}
	if len(m.Models) > 0 && !slices.Contains(m.Models, req.Model) {
		return false
	}
	if len(m.Subjects) > 0 && !slices.Contains(m.Subjects, req.Subject) {
		return false
	}
	if len(m.Roles) > 0 && r.matchedRole(req) == "" {
		return false
	}
	for _, c := range m.Claims {
		if !claimMatches(req.Claims[c.Name], c.Values) {
			return false
		}
	}
	return true
}

// matchedRole is the first of the caller's roles the rule names.
func (r *rule) matchedRole(req *Request) string {
	for _, role := range req.Roles {
		if slices.Contains(r.match.Roles, role) {
			return role
		}
	}
	return ""
}

func claimMatches(v any, want []string) bool {
	if list, ok := v.([]any); ok {
		for _, e := range list {
			if claimMatches(e, want) {
				return true
			}
		}
		return false
	}
	var buf [32]byte
	s, ok := claimString(buf[:0], v)
	return ok && slices.Contains(want, string(s))
}

// claimString appends a scalar claim's text form; JSON numbers are float64.
func claimString(b []byte, v any) ([]byte, bool) {
	switch v := v.(type) {
	case string:
		return append(b, v...), true
	case float64:
		return strconv.AppendFloat(b, v, 'f', -1, 64), true
	case bool:
		return strconv.AppendBool(b, v), true
	}
	return b, false
}

// appendKey appends the rule name and the request's key values to b, each
// length-prefixed so that no two different keys encode alike. A missing
// value (no claim, no key id) is empty: such callers share one count.
func (r *rule) appendKey(b []byte, req *Request) []byte {
	b = appendPart(b, r.name)
	for _, k := range r.keys {
		var v string
		switch k.kind {
		case keySubject:
			v = req.Subject
		case keyKeyID:
			v = req.KeyID
		case keySource:
			v = req.Source
		case keyModel:
			v = req.Model
		case keyClass:
			v = req.Class
		case keyRole:
			if len(r.match.Roles) > 0 {
				v = r.matchedRole(req)
			} else {
				// Every role, in order: callers with the same roles share a count.
				b = binary.AppendUvarint(b, uint64(len(req.Roles)))
				for _, role := range req.Roles {
					b = appendPart(b, role)
				}
				continue
			}
		case keyClaim:
			start := len(b)
			b = append(b, 0) // length placeholder, patched below
			b, _ = claimString(b, req.Claims[k.claim])
			if n := len(b) - start - 1; n < 0x80 {
				b[start] = byte(n)
			} else { // rare: redo with a full varint prefix
				s := string(b[start+1:])
				b = appendPart(b[:start], s)
			}
			continue
		}
		b = appendPart(b, v)
	}
	return b
}

func appendPart(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}
