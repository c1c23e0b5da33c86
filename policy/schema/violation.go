package schema

import (
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// Violation is why a body does not match its schema. Neither field ever
// holds text taken from the body: Pointer holds array indexes and member
// names the schemas define, with Placeholder for names the caller chose
// (metadata or logit_bias keys: "/metadata/*"), and Rule names the keyword
// and the schema's side of it ("enum", "required: model", "type: want
// string", "maximum: want <= 2"). The jsonschema messages are not used
// because some quote the value (enum, const, pattern, format).
type Violation struct {
	// Pointer is the RFC 6901 JSON pointer of the offending value, e.g.
	// "/messages/0/role"; "" is the whole body.
	Pointer string
	// Rule is a short keyword-level description of what failed.
	Rule string
}

// Error returns "<pointer>: <rule>", with "(root)" for the empty pointer.
func (v *Violation) Error() string {
	if v.Pointer == "" {
		return "(root): " + v.Rule
	}
	return v.Pointer + ": " + v.Rule
}

// violationOf reduces a jsonschema error tree to the one failure most
// useful to the caller. A failed anyOf or if/then reports every branch; the
// deepest failure is the most specific (a bad content part type rather than
// "content is not a string"). Among equally deep failures, one other than
// "type" wins (type failures mostly come from anyOf branches whose shape
// does not apply), then the smallest pointer, so that the answer does not
// depend on the order the validator visits object members in. When only
// type failures remain, those at the chosen pointer are merged ("type: want
// string or array").
//
// doc is the body validated, to tell indexes from member names; named
// reports the names that may be shown.
func violationOf(e *jsonschema.ValidationError, doc any, named func(string) bool) *Violation {
	var leaves []*jsonschema.ValidationError
	collectLeaves(e, &leaves) // at least e itself
	best := leaves[0]
	bestPtr := pointer(best.InstanceLocation, doc, named)
	for _, l := range leaves[1:] {
		p := pointer(l.InstanceLocation, doc, named)
		dl, db := len(l.InstanceLocation), len(best.InstanceLocation)
		switch {
		case dl != db:
			if dl < db {
				continue
			}
		case isType(l) != isType(best):
			if isType(l) {
				continue
			}
		case p >= bestPtr:
			continue
		}
		best, bestPtr = l, p
	}
	if !isType(best) {
		return &Violation{Pointer: bestPtr, Rule: rule(best.ErrorKind)}
	}
	var want []string
	for _, l := range leaves {
		if t, ok := l.ErrorKind.(*kind.Type); ok && pointer(l.InstanceLocation, doc, named) == bestPtr {
			for _, w := range t.Want {
				if !slices.Contains(want, w) {
					want = append(want, w)
				}
			}
		}
	}
	return &Violation{Pointer: bestPtr, Rule: "type: want " + strings.Join(want, " or ")}
}

// collectLeaves gathers the failures without causes. A propertyNames
// failure is kept whole: its causes describe a member name, at the object's
// location, and would read as a failure of the object itself.
func collectLeaves(e *jsonschema.ValidationError, out *[]*jsonschema.ValidationError) {
	if _, ok := e.ErrorKind.(*kind.PropertyNames); ok || len(e.Causes) == 0 {
		*out = append(*out, e)
		return
	}
	for _, c := range e.Causes {
		collectLeaves(c, out)
	}
}

func isType(e *jsonschema.ValidationError) bool {
	_, ok := e.ErrorKind.(*kind.Type)
	return ok
}

// rule renders an error kind from the schema's side only. Kinds that carry
// the instance (Enum.Got, Const.Got, Pattern.Got, Format.Got,
// AdditionalProperties.Properties, PropertyNames.Property, ...) are reduced
// to their keyword.
func rule(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Type:
		return "type: want " + strings.Join(k.Want, " or ")
	case *kind.Required:
		return "required: " + strings.Join(k.Missing, ", ")
	case *kind.DependentRequired:
		return "dependentRequired: " + k.Prop + " needs " + strings.Join(k.Missing, ", ")
	case *kind.Dependency:
		return "dependencies: " + k.Prop + " needs " + strings.Join(k.Missing, ", ")
	case *kind.Minimum:
		return "minimum: want >= " + ratString(k.Want)
	case *kind.Maximum:
		return "maximum: want <= " + ratString(k.Want)
	case *kind.ExclusiveMinimum:
		return "exclusiveMinimum: want > " + ratString(k.Want)
	case *kind.ExclusiveMaximum:
		return "exclusiveMaximum: want < " + ratString(k.Want)
	case *kind.MultipleOf:
		return "multipleOf: want a multiple of " + ratString(k.Want)
	case *kind.MinItems:
		return "minItems: want >= " + strconv.Itoa(k.Want)
	case *kind.MaxItems:
		return "maxItems: want <= " + strconv.Itoa(k.Want)
	case *kind.MinLength:
		return "minLength: want >= " + strconv.Itoa(k.Want)
	case *kind.MaxLength:
		return "maxLength: want <= " + strconv.Itoa(k.Want)
	case *kind.MinProperties:
		return "minProperties: want >= " + strconv.Itoa(k.Want)
	case *kind.MaxProperties:
		return "maxProperties: want <= " + strconv.Itoa(k.Want)
	case *kind.MinContains:
		return "minContains: want >= " + strconv.Itoa(k.Want)
	case *kind.MaxContains:
		return "maxContains: want <= " + strconv.Itoa(k.Want)
	case *kind.AdditionalProperties:
		return "additionalProperties: not allowed"
	case *kind.AdditionalItems:
		return "additionalItems: not allowed"
	case *kind.FalseSchema:
		return "not allowed"
	case *kind.OneOf:
		if len(k.Subschemas) > 1 {
			return "oneOf: more than one matched"
		}
		return "oneOf: none matched"
	case *kind.Format:
		return "format: want " + k.Want
	case *kind.Not:
		return "not"
	case *kind.InvalidJsonValue:
		return "not a JSON value"
	}
	// The remaining kinds name only their keyword (enum, const, pattern,
	// uniqueItems, propertyNames, contains, not, content*), and every kind's
	// KeywordPath holds schema keywords, never instance data.
	if kw := k.KeywordPath(); len(kw) > 0 {
		return kw[0]
	}
	return "invalid"
}

func ratString(r *big.Rat) string {
	if r.IsInt() {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// pointer builds an RFC 6901 JSON pointer from the reference tokens of a
// location in doc, with Placeholder for member names named refuses.
func pointer(tokens []string, doc any, named func(string) bool) string {
	if len(tokens) == 0 {
		return ""
	}
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		switch d := doc.(type) {
		case []any:
			i, _ := strconv.Atoi(t)
			if i >= 0 && i < len(d) {
				doc = d[i]
			}
		case map[string]any:
			doc = d[t]
			if !named(t) {
				t = Placeholder
			}
		default: // not reached for locations the validator reports
			if !named(t) {
				t = Placeholder
			}
		}
		if strings.ContainsAny(t, "~/") {
			t = strings.ReplaceAll(t, "~", "~0")
			t = strings.ReplaceAll(t, "/", "~1")
		}
		b.WriteString(t)
	}
	return b.String()
}
