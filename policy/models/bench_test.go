package models

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/modelguard/modelguard/policy/body"

	"github.com/modelguard/modelguard/test/testkit"
)

// chatOfSize builds an OpenAI chat request of about n bytes: a system
// prompt and alternating user/assistant turns of prose.
func chatOfSize(n int) []byte {
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	sentence := "The quick brown fox jumps over the lazy dog while the model thinks about tokens. "
	msgs := []msg{{"system", "You are a helpful assistant."}}
	size := 100
	for i := 0; size < n; i++ {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		content := strings.Repeat(sentence, 6)
		msgs = append(msgs, msg{role, content})
		size += len(content) + 40
	}
	b, _ := json.Marshal(map[string]any{"model": "gpt-4o-mini", "messages": msgs, "max_tokens": 256, "stream": true})
	return b
}

// BenchmarkInspectChat is the whole body step for a chat request: strict
// parse, model match, JSON Schema, limits and facts.
func BenchmarkInspectChat(b *testing.B) {
	s := settingsOf(b, `request_body: {max_bytes: 4194304}
models:
  - {name: gpt-4o-mini, operation: chat}
`)
	c, err := Open(context.Background(), s, b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	type namedBody struct {
		name string
		body []byte
	}
	bodies := []namedBody{
		// test/loadbench's body and BenchmarkCheckGRPC's.
		{"loadbench-1KiB", testkit.ChatBody(1024)},
		{"checkgrpc", []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}],"max_tokens":64}`)},
	}
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20} {
		bodies = append(bodies, namedBody{fmt.Sprintf("%dKiB", size>>10), chatOfSize(size)})
	}
	for _, tc := range bodies {
		body := tc.body
		b.Run(tc.name, func(b *testing.B) {
			r := Request{Method: "POST", Path: "/v1/chat/completions", ContentType: "application/json", Body: body}
			if _, d, _ := c.Inspect(r); d != nil {
				b.Fatal(d)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				c.Inspect(r)
			}
		})
	}
}

// BenchmarkFacts is the facts step alone on test/loadbench's body and
// BenchmarkCheckGRPC's.
func BenchmarkFacts(b *testing.B) {
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"loadbench-1KiB", testkit.ChatBody(1024)},
		{"checkgrpc", []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}],"max_tokens":64}`)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			doc, err := body.Parse(tc.body, body.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, d := factsOf("chat", doc); d != nil {
					b.Fatal(d)
				}
			}
		})
	}
}
