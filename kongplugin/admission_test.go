package kongplugin

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/modelguard/modelguard/policy"
)

// TestAccessShedsWhenBodyBudgetFull: while the body budget is taken, the
// access phase answers 503 overloaded with retry-after before reading the
// body; once it is free, requests pass again.
func TestAccessShedsWhenBodyBudgetFull(t *testing.T) {
	f := newFixture(t, false)
	f.write(t, "config.yaml", `server: {max_message_bytes: 1048576}
authentication:
  api_keys: {file: keys.yaml}
authorization:
  policy_dir: policy
  query: data.modelguard.authz.decision
  timeout: 2s
models:
  - {name: gpt-4o-mini, operation: chat}
admission: {max_inflight_body_bytes: 1048576, max_wait: 0s}
audit: {output: "off"}
`)
	path := filepath.Join(f.dir, "config.yaml")
	c := f.config(path)
	st := f.plugin.coreFor(path).get()
	if st.err != nil {
		t.Fatal(st.err)
	}
	key := map[string]string{"x-api-key": f.keys["alice-key"]}

	if !st.engine.ReserveBody(context.Background(), 1<<20) {
		t.Fatal("could not take the whole budget")
	}
	env := run(t, c, "POST", "/v1/chat/completions", key, chat)
	assertDenied(t, env, 503, "server_error")
	if env.ClientRes.Headers.Get("retry-after") == "" {
		t.Errorf("no retry-after: %v", env.ClientRes.Headers)
	}
	if ev := f.lastDecision(t); ev.Reason != policy.ReasonOverloaded || ev.Status != 503 {
		t.Errorf("audited %+v, want reason %s", ev, policy.ReasonOverloaded)
	}

	st.engine.ReleaseBody(1 << 20)
	if env := run(t, c, "POST", "/v1/chat/completions", key, chat); env.ClientRes.Status != 200 {
		t.Fatalf("after release: status %d, body %s", env.ClientRes.Status, env.ClientRes.Body)
	}
}
