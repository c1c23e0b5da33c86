package schema

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// parse decodes a sample body the way package body hands it over: numbers
// as json.Number, one value, nothing after it.
func parse(t testing.TB, s string) any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("sample is not JSON: %v", err)
	}
	if _, err := d.Token(); err != io.EOF {
		t.Fatalf("sample has data after the value")
	}
	return v
}

// mustCompile compiles the built-ins plus files.
func mustCompile(t testing.TB, files map[string]string) *Set {
	t.Helper()
	s, err := Compile(files)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

// asViolation returns err as a *Violation or fails the test.
func asViolation(t *testing.T, err error) *Violation {
	t.Helper()
	if err == nil {
		t.Fatalf("valid, want a violation")
	}
	var v *Violation
	if !errors.As(err, &v) {
		t.Fatalf("error %v (%T) is not a *Violation", err, err)
	}
	return v
}
