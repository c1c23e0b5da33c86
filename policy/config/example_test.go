package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// loadExample loads example.yaml from a copy in a fixture directory that
// holds the files it names, with the environment variables it names set.
func loadExample(t *testing.T) *Config {
	t.Helper()
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := fixture(t)
	path := filepath.Join(dir, "modelguard.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MODELGUARD_BATCH_PEM", "-----BEGIN PUBLIC KEY-----\n")
	t.Setenv("MODELGUARD_PARTNER_SECRET", strings.Repeat("p", 32))
	t.Setenv("MODELGUARD_AUDIT_KEY", strings.Repeat("a", 32))
	t.Setenv("MODELGUARD_AUDIT_TOKEN", "audit-token")
	t.Setenv("MODELGUARD_INTROSPECTION_SECRET", "introspection-secret")
	c, err := Load(path)
	if err != nil {
		t.Fatalf("example.yaml does not load: %v", err)
	}
	return c
}

func TestExampleLoads(t *testing.T) {
	c := loadExample(t)
	iss := c.Authentication.JWT.Issuers
	if len(iss) != 3 {
		t.Fatalf("%d issuers, want 3", len(iss))
	}
	// The second issuer takes the JWKS settings merged from the first.
	if iss[1].JWKSRefreshInterval != time.Hour || iss[1].JWKSFetchTimeout != 5*time.Second {
		t.Errorf("merged JWKS settings: %+v", iss[1])
	}
	if iss[2].Leeway != 0 {
		t.Errorf("partner leeway = %v, want the explicit 0s", iss[2].Leeway)
	}
}

// The example documents every key: each key of the Config types appears in
// it at least once (in some list item for keys under lists).
func TestExampleHasEveryKey(t *testing.T) {
	c := loadExample(t)
	index := regexp.MustCompile(`\[\d+\]`)
	present := make(map[string]bool)
	for p := range c.src.index {
		present[index.ReplaceAllString(p, "[]")] = true
	}
	var missing []string
	for _, p := range keyPaths("", configType) {
		if !present[p] {
			missing = append(missing, p)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("example.yaml lacks keys:\n%s", strings.Join(missing, "\n"))
	}
}

// keyPaths lists the dotted paths of every key under type t, with "[]" for
// list items.
func keyPaths(prefix string, t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	switch {
	case t == durationType:
	case t.Kind() == reflect.Struct:
		fields, names := yamlFields(t)
		for _, name := range names {
			p := join(prefix, name)
			out = append(out, p)
			out = append(out, keyPaths(p, fields[name])...)
		}
	case t.Kind() == reflect.Slice:
		out = append(out, keyPaths(prefix+"[]", t.Elem())...)
	}
	return out
}
