package rego

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/test/testkit"
)

// examplePolicy is the example policy shipped with modelguard.
const examplePolicy = "../../examples/policy"

// exampleOPAEnvoy is the example policy written as for opa-envoy-plugin.
const exampleOPAEnvoy = "../../examples/opa-envoy"

// deadline bounds every wait for asynchronous reloads. It is generous: it
// only decides how long a broken build takes to fail, never a pass.
const deadline = 60 * time.Second

// writeFiles writes files under dir atomically (temporary hidden file, then
// rename), so a watcher never reads a half-written file.
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		testkit.ReplaceFile(t, dir, name, content)
	}
}

// policyDir is a new directory holding files.
func policyDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	return dir
}

// revisionOf is the revision files get, whatever directory holds them.
func revisionOf(t testing.TB, files map[string]string) string {
	t.Helper()
	snap, err := readPolicyDir(policyDir(t, files), false)
	if err != nil {
		t.Fatal(err)
	}
	return snap.revision()
}

// configMap lays out a directory the way the kubelet projects a ConfigMap:
// visible symlinks name -> ..data/name, ..data -> a timestamped directory,
// swapped by renaming a new symlink over ..data.
type configMap struct {
	dir     string
	n       int
	current string
}

func (c *configMap) publish(t testing.TB, files map[string]string) {
	t.Helper()
	c.n++
	ts := fmt.Sprintf("..2026_01_02_03_04_05.%09d", c.n)
	writeFiles(t, filepath.Join(c.dir, ts), files)
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(c.dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
	if c.current != "" {
		if err := os.RemoveAll(filepath.Join(c.dir, c.current)); err != nil {
			t.Fatal(err)
		}
	}
	c.current = ts
}

// reloadEvent is one OnReload call.
type reloadEvent struct {
	revision string
	err      error
}

// reloads returns Options whose OnReload calls arrive on the channel.
func reloads(ctx context.Context) (Options, <-chan reloadEvent) {
	ch := make(chan reloadEvent, 64)
	return Options{OnReload: func(revision string, err error) {
		select {
		case ch <- reloadEvent{revision, err}:
		case <-ctx.Done():
		}
	}}, ch
}

func nextReload(t testing.TB, ch <-chan reloadEvent) reloadEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(deadline):
		t.Fatalf("no reload within %v", deadline)
		return reloadEvent{}
	}
}

// waitRevision polls until the engine runs revision want.
func waitRevision(t testing.TB, e *Engine, want string) {
	t.Helper()
	testkit.Eventually(t, "revision "+want+" in force", func() bool { return e.Revision() == want })
}

// value parses a JSON or Rego literal into an AST value.
func value(t testing.TB, s string) ast.Value {
	t.Helper()
	term, err := ast.ParseTerm(s)
	if err != nil {
		t.Fatalf("parse %s: %v", s, err)
	}
	return term.Value
}

// requestInput is an input document shaped like the core's for a request.
func requestInput(t testing.TB, roles []string, method, path string, model map[string]any) ast.Value {
	t.Helper()
	in := map[string]any{
		"gateway": "envoy",
		"subject": map[string]any{
			"id":          "alice@example.com",
			"roles":       roles,
			"auth_method": "jwt",
			"key_id":      "",
			"issuer":      "https://idp.example.com",
			"claims": map[string]any{
				"sub": "alice@example.com", "iss": "https://idp.example.com",
				"aud": "modelguard", "exp": 1893456000, "roles": roles,
			},
		},
		"request": map[string]any{
			"id":     "3f1c2a0e-6d1b-4f7e-9b7a-2f0b8f2c9d11",
			"method": method,
			"path":   path,
			"query":  map[string]any{},
			"host":   "models.example.com",
			"scheme": "https",
			"headers": map[string]any{
				"content-type":   "application/json",
				"user-agent":     "OpenAI/Python 1.54.0",
				"accept":         "application/json",
				"content-length": "187",
				"x-request-id":   "3f1c2a0e-6d1b-4f7e-9b7a-2f0b8f2c9d11",
			},
			"source_address": "10.12.0.7:51234",
			"tls_principal":  "",
		},
	}
	if model != nil {
		in["model"] = model
	}
	v, err := ast.InterfaceToValue(in)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
