package examples_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/modelguard/modelguard/examples"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/test/testkit"
)

// rollout.yaml loads as shipped, beside the example policy and a signing
// key, and says what its comments say.
func TestRolloutExampleLoads(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, examples.Demo); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("rollout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := testkit.WriteFile(t, dir, "rollout.yaml", data)
	_, public := testkit.SigningKey(t)
	testkit.WriteFile(t, dir, "bundle-signing.pem", public)

	c, err := config.Load(path)
	if err != nil {
		t.Fatalf("rollout.yaml does not load: %v", err)
	}
	a := c.Authorization
	switch {
	case !a.Bundle.Configured() || a.PolicyDir != "":
		t.Errorf("the enforced policy is not the bundle alone: %+v", a)
	case a.Bundle.Signing.PublicKeyFile == "" || a.Bundle.PersistDir == "":
		t.Errorf("bundle without signing or persistence: %+v", a.Bundle)
	case !a.DryRun.Applies("llama-3.1-8b-instruct", "/v1/chat/completions") || !a.DryRun.Applies("", "/v1/embeddings"):
		t.Errorf("dry-run does not cover the model and path it names: %+v", a.DryRun)
	case a.DryRun.Applies("gpt-4o-mini", "/v1/chat/completions"):
		t.Error("dry-run covers an enforced model")
	case !a.Shadow.Configured() || filepath.Base(a.Shadow.PolicyDir) != "policy":
		t.Errorf("shadow policy: %+v", a.Shadow)
	}
}
