package schema

import (
	"encoding/json"
	"testing"

	"github.com/modelguard/modelguard/test/testkit"
)

// chatKiB is a typical chat request of about 1 KiB: a system prompt, a
// short conversation, one tool and common sampling options.
const chatKiB = `{
  "model": "gpt-4o-mini",
  "messages": [
    {"role": "system", "content": "You are a concise assistant for an internal engineering wiki. Answer in at most three sentences and cite page titles when you use them."},
    {"role": "user", "content": "How do I rotate the API keys for the staging inference gateway without downtime?"},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "search_wiki", "arguments": "{\"query\":\"rotate API keys staging gateway\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "Page 'Gateway key rotation': add the new key, reload, switch clients, then remove the old key."},
    {"role": "user", "content": [{"type": "text", "text": "And for production, is the procedure the same?"}]}
  ],
  "tools": [{
    "type": "function",
    "function": {
      "name": "search_wiki",
      "description": "Full-text search over wiki pages.",
      "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
    }
  }],
  "tool_choice": "auto",
  "temperature": 0.2,
  "max_completion_tokens": 256,
  "stream": true,
  "stream_options": {"include_usage": true},
  "user": "u-1234"
}`

func BenchmarkValidateChat(b *testing.B) {
	s := mustCompile(b, nil)
	v := parse(b, chatKiB)
	if err := s.Validate(OpenAIChat, v); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(chatKiB)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Validate(OpenAIChat, v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidateBodies covers the other bodies of the load comparison
// and the OpenAI APIs: the 1 KiB 2-message chat that test/loadbench sends
// (testkit.ChatBody)
// (a system prompt and one user turn, temperature, max_tokens), a
// completion and an embeddings request.
func BenchmarkValidateBodies(b *testing.B) {
	s := mustCompile(b, nil)
	for _, tc := range []struct{ name, id, body string }{
		{"chat-2msg", OpenAIChat, string(testkit.ChatBody(1024))},
		{"completions", OpenAICompletions, `{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":7,"temperature":0,"stream":true,"stop":["\n"],"user":"u-1234"}`},
		{"embeddings", OpenAIEmbeddings, `{"model":"text-embedding-3-small","input":["Your text string goes here","And another one"],"dimensions":256,"encoding_format":"float"}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			v := parse(b, tc.body)
			if err := s.Validate(tc.id, v); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Validate(tc.id, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkValidateOIP measures a 224x224x3 FP32 image tensor, where the
// element walk in code dominates.
func BenchmarkValidateOIP(b *testing.B) {
	s := mustCompile(b, nil)
	data := make([]any, 224*224*3)
	for i := range data {
		data[i] = json.Number("0.5")
	}
	v := map[string]any{"inputs": []any{map[string]any{
		"name": "image", "datatype": "FP32", "data": data,
		"shape": []any{json.Number("1"), json.Number("224"), json.Number("224"), json.Number("3")},
	}}}
	if err := s.Validate(OIPInfer, v); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Validate(OIPInfer, v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompile(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(nil); err != nil {
			b.Fatal(err)
		}
	}
}
