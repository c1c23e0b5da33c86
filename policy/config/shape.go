package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Resolved YAML tags, as yaml.Node.ShortTag returns them.
const (
	nullTag  = "!!null"
	strTag   = "!!str"
	intTag   = "!!int"
	boolTag  = "!!bool"
	mergeTag = "!!merge"
)

var (
	configType   = reflect.TypeFor[Config]()
	durationType = reflect.TypeFor[time.Duration]()
)

// shape checks the document against the Config types before it is decoded,
// so that unknown keys, duplicate keys and wrong types are reported with
// their dotted path, and it indexes every known node by that path for
// Locate and for telling explicit values from defaults.
type shape struct {
	name  string // file name for messages
	index map[string]entry
	errs  []error
}

func newShape(name string) *shape {
	return &shape{name: name, index: make(map[string]entry)}
}

func (s *shape) fail(line int, path, format string, args ...any) {
	fe := &FieldError{Path: path, Err: fmt.Errorf(format, args...)}
	s.errs = append(s.errs, &locatedError{
		msg: s.name + ":" + strconv.Itoa(line) + ": " + fe.Error(),
		err: fe,
	})
}

// walk checks node n (the value of key, nil for list items and the root)
// against type t and records it at path.
func (s *shape) walk(path string, key, n *yaml.Node, t reflect.Type) {
	// Errors point at the key, or at the list item itself: where the value
	// is used, not where an alias's anchor is.
	line := n.Line
	if key != nil {
		line = key.Line
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	s.index[path] = entry{key: key, value: n}
	if isNull(n) {
		return // null is "unset": the zero value, then the default
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != strTag {
			s.fail(line, path, "expected a duration with a unit such as 30s or 5m, got %s", describe(n))
		} else if _, err := time.ParseDuration(n.Value); err != nil {
			s.fail(line, path, "invalid duration %q: write a number with a unit such as 500ms, 30s or 5m", n.Value)
		}
	case t.Kind() == reflect.Pointer:
		s.walk(path, key, n, t.Elem())
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			s.fail(line, path, "expected a mapping of keys to values, got %s", describe(n))
			return
		}
		s.mapping(path, n, t, &merging{seen: make(map[string]bool), done: make(map[*yaml.Node]bool)})
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			s.fail(line, path, "expected a list, got %s", describe(n))
			return
		}
		for i, item := range n.Content {
			s.walk(path+"["+strconv.Itoa(i)+"]", nil, item, t.Elem())
		}
	case t.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			s.fail(line, path, "expected a string, got %s", describe(n))
		}
	case t.Kind() == reflect.Int:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != intTag {
			s.fail(line, path, "expected an integer, got %s", describe(n))
		}
	case t.Kind() == reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != boolTag {
			s.fail(line, path, "expected true or false, got %s", describe(n))
		}
	}
}

// merging tracks one struct's mapping and the mappings merged into it.
type merging struct {
	seen map[string]bool     // keys already taken
	done map[*yaml.Node]bool // mappings already merged: keeps nested merges linear
}

// mapping checks the keys of mapping n against struct t. Keys written in n
// win over keys merged in with "<<", and earlier merges over later ones, as
// in YAML and yaml.v3.
func (s *shape) mapping(path string, n *yaml.Node, t reflect.Type, m *merging) {
	if m.done[n] {
		return
	}
	m.done[n] = true
	fields, names := yamlFields(t)
	first := make(map[string]int) // key -> line, to find duplicates
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			s.fail(k.Line, path, "keys must be names, got %s", describe(k))
			continue
		}
		p := join(path, k.Value)
		if l, dup := first[k.Value]; dup {
			s.fail(k.Line, p, "duplicate key (first at line %d)", l)
			continue
		}
		first[k.Value] = k.Line
		if k.Value == "<<" && k.ShortTag() == mergeTag {
			merges = append(merges, v)
			continue
		}
		ft, ok := fields[k.Value]
		if !ok {
			s.index[p] = entry{key: k, value: v}
			s.fail(k.Line, p, "unknown key; valid keys here: %s", strings.Join(names, ", "))
			continue
		}
		if m.seen[k.Value] {
			continue
		}
		m.seen[k.Value] = true
		s.walk(p, k, v, ft)
	}
	for _, v := range merges {
		line := v.Line
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		var maps []*yaml.Node
		switch v.Kind {
		case yaml.MappingNode:
			maps = []*yaml.Node{v}
		case yaml.SequenceNode:
			maps = v.Content
		}
		for _, mm := range maps {
			if mm.Kind == yaml.AliasNode {
				mm = mm.Alias
			}
			if mm.Kind != yaml.MappingNode {
				maps = nil
				break
			}
			s.mapping(path, mm, t, m)
		}
		if maps == nil {
			s.fail(line, join(path, "<<"), "a merge needs a mapping or a list of mappings, got %s", describe(v))
		}
	}
}

// yamlFields maps the YAML keys of struct t to field types; names lists the
// keys in declaration order for messages.
func yamlFields(t reflect.Type) (map[string]reflect.Type, []string) {
	fields := make(map[string]reflect.Type, t.NumField())
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // yaml.v3's rule for untagged fields
		}
		fields[name] = f.Type
		names = append(names, name)
	}
	return fields, names
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == nullTag
}

// describe names what a node holds, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	switch n.ShortTag() {
	case strTag:
		return fmt.Sprintf("the string %q", v)
	case intTag:
		return "the integer " + v
	case "!!float":
		return "the number " + v
	case boolTag:
		return "the boolean " + v
	default:
		return fmt.Sprintf("%s %q", n.ShortTag(), v)
	}
}
