package test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/modelguard/modelguard/test/kongharness"
	"github.com/modelguard/modelguard/test/redisserver"
)

// modelUpstream answers chat completions as OpenAI does: JSON with a usage
// object, or, for stream: true, server-sent events ending with a usage
// chunk when stream_options.include_usage is set. Every completion
// reports usedTokens; a request with the header x-no-usage gets none. It
// gzips when the client accepts it and sends x-gzip.
func modelUpstream(usedTokens int) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Stream        bool `json:"stream"`
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &req)
		usage := fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, usedTokens/2, usedTokens-usedTokens/2, usedTokens)
		if r.Header.Get("x-no-usage") != "" {
			usage = "null"
		}
		var out bytes.Buffer
		if req.Stream {
			w.Header().Set("content-type", "text/event-stream")
			for _, word := range []string{"Hello", " there"} {
				fmt.Fprintf(&out, "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}],\"usage\":null}\n\n", word)
			}
			if req.StreamOptions.IncludeUsage {
				fmt.Fprintf(&out, "data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":%s}\n\n", usage)
			}
			out.WriteString("data: [DONE]\n\n")
		} else {
			w.Header().Set("content-type", "application/json")
			fmt.Fprintf(&out, `{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"}}],"usage":%s}`, usage)
		}
		if r.Header.Get("x-gzip") != "" && strings.Contains(r.Header.Get("accept-encoding"), "gzip") {
			w.Header().Set("content-encoding", "gzip")
			zw := gzip.NewWriter(w)
			zw.Write(out.Bytes())
			zw.Close()
			return
		}
		w.Write(out.Bytes())
	}))
}

// TestKongSettlesTokenBudgets: a budget admits exactly K requests at their
// worst case (prompt estimate plus max_tokens); with settlement on, Kong's
// response phase reads the usage each response reports (JSON, a stream
// with include_usage, gzipped) and refunds the rest, so many more are
// admitted; a response without usage keeps its reservation; with
// settlement off the plugin has no response phase and the reservation is
// the charge.
func TestKongSettlesTokenBudgets(t *testing.T) {
	// "Hello" is 2 prompt tokens; with max_tokens 198 a request reserves
	// 200, so the budget admits K = 5 at the worst case.
	const budget, reserve, used, K = 1000, 200, 100, 5
	bodies := []string{
		`{"model":"gpt-4o-mini","max_tokens":198,"messages":[{"role":"user","content":"Hello"}]}`,
		`{"model":"gpt-4o-mini","max_tokens":198,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello"}]}`,
	}
	bin := kongBinary(t)
	redis := redisserver.Start(t)
	for _, tc := range []struct {
		name, store string
		settle      bool
	}{
		{"off", "store: local", false},
		{"local", "store: local", true},
		{"redis", fmt.Sprintf("store: redis\n  redis: {address: %q, timeout: 1s, key_prefix: settle-test:}", redis.Addr), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{rateLimits: fmt.Sprintf(`rate_limits:
  %s
  rules:
    - {name: alice-tokens, tokens: %d, per: 24h, key: [key_id], match: {subjects: [alice]}}
    - {name: ada-tokens, tokens: %d, per: 24h, key: [key_id], match: {subjects: [ada]}}
    - {name: tara-tokens, tokens: %d, per: 24h, key: [key_id], match: {subjects: [tara]}}
`, tc.store, budget, budget, budget)})
			var args []string
			if tc.settle {
				args = []string{"-settle"}
			}
			k := newKongEnv(t, e, bin, args...)
			if got := slices.Contains(k.front.Phases, "response"); got != tc.settle {
				t.Fatalf("settle %v: phases %v", tc.settle, k.front.Phases)
			}
			model := modelUpstream(used)
			t.Cleanup(model.Close)
			u, _ := url.Parse(model.URL)
			k.front.SetUpstream(u)

			// admitted sends requests until one is refused (at most max)
			// and returns how many were admitted.
			admitted := func(key string, extra map[string]string, max int) int {
				for i := range max {
					h := map[string]string{"x-api-key": e.keys[key]}
					if i%3 == 2 {
						h["x-gzip"] = "1"
					}
					for k, v := range extra {
						h[k] = v
					}
					r := k.do("POST", "/v1/chat/completions", h, []byte(bodies[i%2]))
					if r.status == http.StatusTooManyRequests {
						if rc := e.kongRecord(t, r.id); rc["reason"] != "rate_limited_tokens" {
							t.Errorf("refusal recorded as %v", rc["reason"])
						}
						return i
					}
					if r.status != http.StatusOK {
						t.Fatalf("request %d: %d %s", i, r.status, r.body)
					}
					if calls := r.ex.x.CallCount("response"); (calls > 0) != tc.settle {
						t.Fatalf("settle %v: %d PDK calls in a response phase", tc.settle, calls)
					}
				}
				return max
			}
			// Settled at 100 tokens each, the budget takes requests while
			// 200 fit: 1000 - 100n >= 200, n = 0..8, so 9.
			want := K
			if tc.settle {
				want = (budget-reserve)/used + 1
			}
			if n := admitted("alice-key", nil, 20); n != want {
				t.Errorf("admitted %d, want %d", n, want)
			}
			// Responses that report no usage keep their reservations.
			if n := admitted("admin-key", map[string]string{"x-no-usage": "1"}, 20); n != K {
				t.Errorf("without usage: admitted %d, want %d", n, K)
			}
			if !tc.settle {
				return
			}
			// A response event run twice settles once: 100 used, then the
			// next request reserves 200 of what is left.
			req := benchChat(map[string]string{"x-api-key": e.keys["trial-key"]})
			req.Body = []byte(bodies[0])
			x := kongharness.NewExchange(req)
			pc := k.front.Plugin()
			if out := k.kong.HandleEvent(pc, "access", x); out.Err != nil || out.Exited {
				t.Fatalf("access: %+v %v", out, x.Exit)
			}
			x.Status = http.StatusOK
			x.Service = &kongharness.ServiceResponse{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
				Body: []byte(fmt.Sprintf(`{"usage":{"total_tokens":%d}}`, used))}
			for range 2 {
				if out := k.kong.HandleEvent(pc, "response", x); out.Err != nil {
					t.Fatalf("response: %+v", out)
				}
			}
			if out := k.kong.HandleEvent(pc, "log", x); out.Err != nil {
				t.Fatalf("log: %+v", out)
			}
			r := k.do("POST", "/v1/chat/completions", map[string]string{"x-api-key": e.keys["trial-key"]}, []byte(bodies[0]))
			if got, want := r.header.Get("x-ratelimit-remaining-tokens"), fmt.Sprint(budget-used-reserve); r.status != http.StatusOK || got != want {
				t.Errorf("after a repeated response phase: %d, %s tokens left, want %s", r.status, got, want)
			}
		})
	}
}
