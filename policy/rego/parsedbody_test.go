package rego

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestParsedBodyDetection(t *testing.T) {
	tests := []struct {
		name, module string
		want         bool
	}{
		{"no body", `package modelguard.authz
allow if input.subject.id == "a"`, false},
		{"reads parsed_body", `package modelguard.authz
allow if input.parsed_body.temperature < 1`, true},
		{"reads all of input", `package modelguard.authz
allow if count(input) > 0`, true},
		{"computed key", `package modelguard.authz
allow if { some k; input[k] }`, true},
		{"body facts only", `package modelguard.authz
allow if input.body.max_tokens < 100`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(tc.module), 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := Compile(context.Background(), dir, "")
			if err != nil {
				t.Fatal(err)
			}
			if p.ParsedBody() != tc.want {
				t.Fatalf("ParsedBody() = %v, want %v", p.ParsedBody(), tc.want)
			}
		})
	}
}
