package reload

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/test/testkit"
	"github.com/modelguard/modelguard/test/testkit/demo"
)

// chat is an allowed caller's chat request for model.
func chat(key, model string) *policy.Request {
	return &policy.Request{
		Method: "POST", Path: "/v1/chat/completions", Host: "models.local",
		Headers: map[string]string{"x-api-key": key, "content-type": "application/json"},
		Body:    []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`),
	}
}

// TestReload: a changed file is swapped in (the new model is served), a
// broken one is refused with its line and the engine in force stays, a
// change to a section read once is reported as needing a restart, and
// each attempt is counted and audited.
func TestReload(t *testing.T) {
	dir := demo.Dir(t)
	keys := demo.WriteKeys(t, dir, "mg_test_", demo.Alice)
	path := testkit.WriteFile(t, dir, "config.yaml", demo.Config)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var events testkit.EventLog[audit.Event]
	var logs testkit.SyncBuffer
	m := metrics.New(nil)
	opts := policy.Options{Audit: &events}
	live, err := New(t.Context(), cfg, Options{
		Build: func(ctx context.Context, cfg *config.Config) (*policy.Engine, error) {
			return policy.New(ctx, cfg, opts)
		},
		Fixed:   []string{"server", "audit", "log", "admission"},
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Metrics: m, Audit: &events, Grace: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Watch(t.Context()); err != nil {
		t.Fatal(err)
	}
	llama := chat(keys["alice-key"], "llama-3.1-8b-instruct")
	if d := live.Decide(t.Context(), llama); d.Allow || d.Reason != "model_not_configured" {
		t.Fatalf("before the reload: %+v", d)
	}
	reloads := func(outcome string) float64 { return testutil.ToFloat64(m.ConfigReloads.WithLabelValues(outcome)) }

	// A new model, through the file watch.
	testkit.ReplaceFile(t, dir, "config.yaml", demo.Config+"  - {name: llama-3.1-8b-instruct, operation: chat}\n")
	testkit.Eventually(t, "the new model served", func() bool { return live.Decide(t.Context(), llama).Allow })
	if reloads("ok") != 1 {
		t.Errorf("ok reloads = %v, want 1", reloads("ok"))
	}

	// A broken file is refused with its line; the engine in force stays.
	testkit.ReplaceFile(t, dir, "config.yaml", demo.Config+"  - {name: llama-3.1-8b-instruct, operation: chat}\nbogus: 1\n")
	testkit.Eventually(t, "the refusal", func() bool { return reloads("refused") == 1 })
	if !strings.Contains(logs.String(), "config.yaml:10: bogus: unknown key") {
		t.Errorf("the refusal does not name file:line:\n%s", logs.String())
	}
	if !live.Decide(t.Context(), llama).Allow {
		t.Error("a refused configuration changed the decision")
	}

	// A section read once: reported, the rest applies. Reload also works
	// without a change on disk (SIGHUP).
	testkit.ReplaceFile(t, dir, "config.yaml", "log: {level: debug}\n"+demo.Config)
	testkit.Eventually(t, "the reload", func() bool { return reloads("ok") == 2 })
	if live.Decide(t.Context(), llama).Allow {
		t.Error("the model removed from the file is still served")
	}
	if err := live.Reload(t.Context()); err != nil || reloads("ok") != 3 {
		t.Fatalf("forced reload: %v, %v ok", err, reloads("ok"))
	}
	var kinds []string
	for _, e := range events.Filter(func(e audit.Event) bool { return e.Kind == audit.KindConfigReload }) {
		kinds = append(kinds, e.Outcome+" "+e.Detail)
	}
	if len(kinds) != 4 || kinds[0] != "ok " || !strings.HasPrefix(kinds[1], "refused ") || !strings.Contains(kinds[1], "config.yaml:10: bogus") ||
		kinds[2] != "ok needs restart: [log] (the running values stay)" || kinds[3] != "ok " {
		t.Errorf("config_reload records: %q", kinds)
	}
}

func TestChanged(t *testing.T) {
	parse := func(extra string) *config.Config {
		t.Helper()
		dir := demo.Dir(t)
		demo.WriteKeys(t, dir, "mg_test_", demo.Alice)
		c, err := config.Load(testkit.WriteFile(t, dir, "config.yaml", extra+demo.Config))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	base := parse("")
	all := []string{"server", "audit", "log", "admission"}
	for extra, want := range map[string]string{
		"":                                    "[]",
		"server: {grpc_address: 0.0.0.0:1}\n": "[server]",
		"audit: {output: off}\n":              "[audit]",
		"admission: {max_wait: 1ms}\n":        "[admission]",
		"log: {format: text}\nserver: {admin_address: off}\n": "[server log]",
	} {
		if got := Changed(base, parse(extra), all); fmtList(got) != want {
			t.Errorf("%q: Changed = %v, want %s", extra, got, want)
		}
	}
}

func fmtList(s []string) string { return "[" + strings.Join(s, " ") + "]" }
