package test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/modelguard/modelguard/test/testkit"
)

// metricsListening finds the plugin server's metrics address in its log.
var metricsListening = regexp.MustCompile(`"msg":"kong plugin server metrics listening","address":"([^"]+)"`)

// TestKongMetricsAndReload: the plugin server started with
// MODELGUARD_METRICS_ADDRESS serves serve's metrics, and picks up an edit
// of its config.yaml without a restart; a broken edit is refused (counted)
// and the configuration in force stays; a change to the audit section is
// reported as needing a restart.
func TestKongMetricsAndReload(t *testing.T) {
	t.Setenv("MODELGUARD_METRICS_ADDRESS", "127.0.0.1:0")
	e := newEnv(t, envOptions{})
	k := newKongEnv(t, e, kongBinary(t))
	admin := map[string]string{"x-api-key": e.keys["admin-key"]}
	mystery := []byte(chatBody("mystery-model"))
	if r := k.do("POST", "/v1/chat/completions", admin, mystery); r.status != 403 {
		t.Fatalf("a model not configured: %d %s", r.status, r.body)
	}
	m := metricsListening.FindStringSubmatch(k.proc.Output())
	if m == nil {
		t.Fatalf("no metrics listener in the plugin server's log:\n%s", k.proc.Output())
	}
	base := "http://" + m[1]
	if n := scrape(t, base, `modelguard_decisions_total{gateway="kong",reason="model_not_configured",result="deny"}`); n != 1 {
		t.Errorf("decisions counted on the plugin server's metrics: %v, want 1", n)
	}

	path := filepath.Join(e.dir, "config.yaml")
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	testkit.ReplaceFile(t, e.dir, "config.yaml", string(cfg)+"unknown_model_status: 404\n")
	testkit.Eventually(t, "the edited configuration in force", func() bool {
		return k.do("POST", "/v1/chat/completions", admin, mystery).status == 404
	})

	testkit.ReplaceFile(t, e.dir, "config.yaml", string(cfg)+"unknown_model_status: 404\nbogus: 1\n")
	testkit.Eventually(t, "the broken configuration refused", func() bool {
		return scrape(t, base, `modelguard_config_reloads_total{outcome="refused"}`) == 1
	})
	if r := k.do("POST", "/v1/chat/completions", admin, mystery); r.status != 404 {
		t.Fatalf("a refused configuration changed the decision: %d", r.status)
	}

	audited := strings.Replace(string(cfg), "audit:\n", "audit:\n  body_sha256: true\n", 1)
	testkit.ReplaceFile(t, e.dir, "config.yaml", audited)
	testkit.Eventually(t, "the restart notice", func() bool {
		return strings.Contains(k.proc.Output(), `"needs_restart":["audit"]`)
	})
	if r := k.do("POST", "/v1/chat/completions", admin, mystery); r.status != 403 {
		t.Fatalf("the rest of the configuration did not apply: %d", r.status)
	}
}
