package yamlerr

import (
	"errors"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestLocate(t *testing.T) {
	for name, tc := range map[string]struct {
		doc  string
		line int
		msg  string
	}{
		// yaml.v3 says line 1: the flow sequence's start, counted from 0.
		"unclosed flow sequence": {"a:\n  b: [1, 2\n  c: 3\n", 2, "did not find expected ',' or ']'"},
		"unclosed flow mapping":  {"x: 1\ny: 2\na: {b: 1\n", 3, "did not find expected ',' or '}'"},
		// yaml.v3 says line 2.
		"key indented short": {"a:\n  b: 1\n c: 2\n", 3, "did not find expected key"},
		// yaml.v3 says line 1.
		"sequence item in a mapping": {"a:\n  b: 1\n  - c\n", 3, "did not find expected key"},
		// yaml.v3 says line 2.
		"mapping key in a sequence": {"x: 1\na:\n  - b\n  c: 2\n", 4, "did not find expected '-' indicator"},
		// Scanner errors were right already and stay right.
		"mapping in a scalar": {"a:\n  b: 1\n  c: 2\n   d: 3\n", 4, "mapping values are not allowed in this context"},
		"tab":                 {"a:\n  b: 1\n\tc: 2\n", 3, "found a tab character that violates indentation"},
		"no final newline":    {"a: 1\nb: [1", 2, "did not find expected ',' or ']'"},
		"first line":          {"[1, 2\n", 1, "did not find expected ',' or ']'"},
	} {
		t.Run(name, func(t *testing.T) {
			var v any
			err := yaml.Unmarshal([]byte(tc.doc), &v)
			if err == nil {
				t.Fatal("the document parsed")
			}
			line, msg, ok := Locate([]byte(tc.doc), err)
			if !ok || line != tc.line || msg != tc.msg {
				t.Fatalf("Locate = %d, %q, %v; want %d, %q (yaml.v3 said %v)", line, msg, ok, tc.line, tc.msg, err)
			}
		})
	}
}

func TestLocateNotASyntaxError(t *testing.T) {
	var v struct{ A int }
	err := yaml.Unmarshal([]byte("a: x\n"), &v)
	if _, _, ok := Locate([]byte("a: x\n"), err); ok {
		t.Fatalf("a type error was located: %v", err)
	}
	if _, _, ok := Locate(nil, errors.New("open data.yaml: permission denied")); ok {
		t.Fatal("an I/O error was located")
	}
}

func TestLocateUnknownAnchor(t *testing.T) {
	doc := "x: 1\ny: 2\na: *foo\n"
	var v any
	err := yaml.Unmarshal([]byte(doc), &v)
	if line, _, ok := Locate([]byte(doc), err); !ok || line != 3 {
		t.Fatalf("Locate = %d, %v; want line 3 (%v)", line, ok, err)
	}
}
