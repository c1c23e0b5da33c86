package test

import (
	"maps"
	"net/http"
	"os"
	"testing"

	"github.com/modelguard/modelguard/test/kongharness"
)

// BenchmarkKongHarness drives access events through the Kong harness's
// socket protocol, one at a time, into an empty go-pdk plugin (the
// baseline: the protocol's own cost) and into modelguard, both built in
// this run. The harness answers PDK calls in Go, without Kong's Lua
// encoding, so the ratio shows the plugin's side: the core's work and its
// PDK round trips.
func BenchmarkKongHarness(b *testing.B) {
	e := newEnv(b, envOptions{})
	mg := newKongEnv(b, e, kongBinary(b))
	emptyBin := kongharness.Build(b, "github.com/modelguard/modelguard/test/kongharness/testdata/emptyplugin", "emptyplugin", raceFlags...)
	prefix, err := os.MkdirTemp("", "kong")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(prefix) })
	emptyProc := kongharness.Start(b, emptyBin, prefix)
	empty := kongharness.New(emptyProc.Socket, "emptyplugin")
	b.Cleanup(empty.Close)

	allowed := benchChat(map[string]string{"x-api-key": e.keys["alice-key"]})
	denied := benchChat(nil)
	mgPlugin := mg.front.Plugin()
	emptyPlugin := kongharness.PluginConf{ID: "0e8b8c1a-9d55-4f57-a3b6-6f0f5c1e2d3a", Seq: 1, Config: map[string]any{}}

	run := func(b *testing.B, k *kongharness.Kong, pc kongharness.PluginConf, req kongharness.Request, exit, withLog bool) {
		events, calls := 0, 0
		for b.Loop() {
			x := kongharness.NewExchange(req)
			out := k.HandleEvent(pc, "access", x)
			if out.Err != nil || out.Exited != exit {
				b.Fatalf("access: %+v", out)
			}
			events++
			if withLog {
				x.Status = http.StatusOK
				if out := k.HandleEvent(pc, "log", x); out.Err != nil {
					b.Fatalf("log: %+v", out)
				}
				events++
			}
			calls += x.CallCount("access") + x.CallCount("log")
		}
		b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
		b.ReportMetric(float64(calls)/float64(b.N), "pdk_calls/op")
	}
	b.Run("empty", func(b *testing.B) { run(b, empty, emptyPlugin, allowed, false, false) })
	b.Run("modelguard_allow", func(b *testing.B) { run(b, mg.kong, mgPlugin, allowed, false, false) })
	// Without the acl groups (plugin config groups: false; the consumer is
	// off by default).
	lean := mgPlugin
	lean.Config = maps.Clone(mgPlugin.Config)
	lean.Config["groups"] = false
	lean.ID, lean.Seq = "5c1d0e2f-3a4b-4c5d-8e6f-708192a3b4c5", mgPlugin.Seq+1
	b.Run("modelguard_allow_lean", func(b *testing.B) { run(b, mg.kong, lean, allowed, false, false) })
	b.Run("modelguard_deny", func(b *testing.B) { run(b, mg.kong, mgPlugin, denied, true, false) })
	// A whole request: its access and log events.
	b.Run("modelguard_allow_with_log", func(b *testing.B) { run(b, mg.kong, mgPlugin, allowed, false, true) })
}

// benchChat is a chat completion request as Kong receives it, with
// headers h.
func benchChat(h map[string]string) kongharness.Request {
	hdr := http.Header{
		"Host": {"models.local"}, "Content-Type": {"application/json"}, "User-Agent": {"OpenAI/Python 1.54.0"},
		"X-Request-Id": {"bench"}, "Accept": {"application/json"},
	}
	for k, v := range h {
		hdr.Set(k, v)
	}
	return kongharness.Request{Method: "POST", Scheme: "https", Host: "models.local", Path: "/v1/chat/completions", Header: hdr,
		Body: []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}],"max_tokens":64}`), ClientIP: "10.0.0.7"}
}

// BenchmarkKongSettle measures what settlement adds to the plugin's side
// of one request through the Kong harness, with a token budget that
// applies: access and log events with settlement off, then access,
// response (reading a JSON usage and refunding) and log with -settle. What
// Kong's buffering costs the client (no byte before the model's last) is
// not in it.
func BenchmarkKongSettle(b *testing.B) {
	const limits = "rate_limits:\n  rules:\n    - {name: tpm, tokens: 1000000, per: 1s, key: [key_id]}\n"
	bin := kongBinary(b)
	answer := &kongharness.ServiceResponse{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: []byte(`{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}`)}
	for _, c := range []struct {
		name string
		args []string
	}{{"settle_off", nil}, {"settle_on", []string{"-settle"}}} {
		e := newEnv(b, envOptions{rateLimits: limits})
		k := newKongEnv(b, e, bin, c.args...)
		pc, req := k.front.Plugin(), benchChat(map[string]string{"x-api-key": e.keys["alice-key"]})
		settle := len(c.args) > 0
		b.Run(c.name, func(b *testing.B) {
			calls := 0
			for b.Loop() {
				x := kongharness.NewExchange(req)
				if out := k.kong.HandleEvent(pc, "access", x); out.Err != nil || out.Exited {
					b.Fatalf("access: %+v", out)
				}
				x.Status = http.StatusOK
				if settle {
					x.Service = answer
					if out := k.kong.HandleEvent(pc, "response", x); out.Err != nil {
						b.Fatalf("response: %+v", out)
					}
				}
				if out := k.kong.HandleEvent(pc, "log", x); out.Err != nil {
					b.Fatalf("log: %+v", out)
				}
				calls += x.CallCount("access") + x.CallCount("response") + x.CallCount("log")
			}
			b.ReportMetric(float64(calls)/float64(b.N), "pdk_calls/op")
		})
	}
}
