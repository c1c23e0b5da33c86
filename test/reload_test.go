package test

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/modelguard/modelguard/test/testkit"
	"github.com/modelguard/modelguard/test/testkit/demo"
)

// TestServeReloadsConfig: a running "modelguard serve" picks up an edit of
// its configuration file, refuses a broken one (counted, the last good one
// stays) and reloads on SIGHUP.
func TestServeReloadsConfig(t *testing.T) {
	bin := buildBinary(t)
	dir := demo.Dir(t)
	keys := demo.WriteKeys(t, dir, "mg_test_", demo.Alice)
	writeServeConfig(t, dir, "")
	s := startServe(t, bin, dir+"/config.yaml")
	check := func() string {
		out, _ := exec.Command(bin, "check", "-server", s.grpc, "-H", "x-api-key: "+keys["alice-key"],
			"-d", `{"model":"llama-3.1-8b-instruct","messages":[{"role":"user","content":"hi"}]}`,
			"POST", "/v1/chat/completions").CombinedOutput()
		return string(out)
	}
	if out := check(); !strings.HasPrefix(out, "DENY 403  reason=model_not_configured") {
		t.Fatalf("before the edit: %s", out)
	}
	const loopback = "server:\n  grpc_address: 127.0.0.1:0\n  admin_address: 127.0.0.1:0\n"
	llama := "  - {name: llama-3.1-8b-instruct, operation: chat}\n"
	testkit.ReplaceFile(t, dir, "config.yaml", loopback+demo.Config+llama)
	testkit.Eventually(t, "the edited configuration in force", func() bool { return strings.HasPrefix(check(), "ALLOW 200") })

	testkit.ReplaceFile(t, dir, "config.yaml", loopback+demo.Config+llama+"bogus: 1\n")
	testkit.Eventually(t, "the broken configuration refused", func() bool {
		return s.metric(t, `modelguard_config_reloads_total{outcome="refused"}`) == 1
	})
	if out := check(); !strings.HasPrefix(out, "ALLOW 200") {
		t.Fatalf("a refused configuration changed the decision: %s", out)
	}

	ok := s.metric(t, `modelguard_config_reloads_total{outcome="ok"}`)
	testkit.ReplaceFile(t, dir, "config.yaml", loopback+demo.Config+llama)
	testkit.Eventually(t, "the fixed configuration reloaded", func() bool {
		return s.metric(t, `modelguard_config_reloads_total{outcome="ok"}`) == ok+1
	})
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the reload on SIGHUP", func() bool {
		return s.metric(t, `modelguard_config_reloads_total{outcome="ok"}`) == ok+2
	})
	if out := check(); !strings.HasPrefix(out, "ALLOW 200") {
		t.Fatalf("after SIGHUP: %s", out)
	}
}
