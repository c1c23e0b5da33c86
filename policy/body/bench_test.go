package body

import (
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/modelguard/modelguard/test/testkit"
)

// chatBody builds an OpenAI-style chat completion request of about size
// bytes (at least 1 KiB): alternating user and assistant messages whose
// content is prose with newlines, quotes, code and some non-ASCII text, as
// chat transcripts have. Deterministic for a given size.
func chatBody(size int) []byte {
	rng := rand.New(rand.NewPCG(uint64(size), 42))
	words := []string{
		"the", "model", "request", "gateway", "policy", "token", "budget", "please", "explain",
		"how", "why", "function", "returns", "error", "value", "configuration", "Kubernetes",
		"deployment", "latency", "café", "naïve", "résumé", "東京", "данные", "🙂", "\"quoted\"",
		"`code`", "path/to/file.go", "x := f(y)", "{\"json\": true}", "100ms", "3.14", "e.g.",
	}
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
		Name    string `json:"name,omitempty"`
	}
	req := struct {
		Model       string    `json:"model"`
		Messages    []message `json:"messages"`
		Temperature float64   `json:"temperature"`
		MaxTokens   int       `json:"max_tokens"`
		Stream      bool      `json:"stream"`
		User        string    `json:"user"`
	}{
		Model: "gpt-4o-mini", Temperature: 0.7, MaxTokens: 1024, User: "user-1234",
		Messages: []message{{Role: "system", Content: "You are a helpful assistant. Answer concisely."}},
	}
	total := 200
	for total < size {
		var b strings.Builder
		n := 20 + rng.IntN(150)
		for i := range n {
			if i > 0 {
				if rng.IntN(12) == 0 {
					b.WriteString(".\n\n")
				} else {
					b.WriteByte(' ')
				}
			}
			b.WriteString(words[rng.IntN(len(words))])
		}
		role := "user"
		if len(req.Messages)%2 == 0 {
			role = "assistant"
		}
		m := message{Role: role, Content: b.String()}
		if rng.IntN(4) == 0 {
			m.Name = "alice"
		}
		req.Messages = append(req.Messages, m)
		total += len(m.Content) + 40
	}
	out, err := json.Marshal(req)
	if err != nil {
		panic(err)
	}
	return out
}

var benchSizes = []struct {
	name string
	size int
}{{"1KiB", 1 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}}

func BenchmarkParse(b *testing.B) {
	for _, s := range benchSizes {
		data := chatBody(s.size)
		lim := Limits{MaxBytes: 2 << 20}
		b.Run("modelguard/"+s.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(data, lim); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("encoding_json/"+s.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				var v any
				if err := json.Unmarshal(data, &v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseBodies parses the bodies of the whole-path measurements:
// test/loadbench's 1 KiB chat (testkit.ChatBody: a system prompt and one
// user turn), BenchmarkCheckGRPC's short chat request and an Open Inference
// Protocol tensor of 1,000 numbers of few distinct values, without a Vocab
// and with one of their names, roles and model (as models.Catalog passes
// the schemas' words and the model names).
func BenchmarkParseBodies(b *testing.B) {
	vocab := NewVocab("model", "messages", "role", "content", "max_tokens", "temperature", "system", "user", "gpt-4o-mini")
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"loadbench-1KiB", testkit.ChatBody(1024)},
		{"checkgrpc", []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}],"max_tokens":64}`)},
		{"tensor-1000", tensorBody(1000)},
	} {
		for _, v := range []struct {
			name  string
			vocab *Vocab
		}{{"", nil}, {"+vocab", vocab}} {
			b.Run(tc.name+v.name, func(b *testing.B) {
				b.SetBytes(int64(len(tc.data)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Parse(tc.data, Limits{Vocab: v.vocab}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkFoldDuplicate is the case-folding check alone, on a chat body's
// top-level members (pairwise) and on a 1,000-key logit_bias (hashed).
func BenchmarkFoldDuplicate(b *testing.B) {
	chat := []member{}
	for _, k := range []string{"model", "messages", "temperature", "max_tokens", "stream", "user", "tools", "top_p"} {
		chat = append(chat, member{key: k})
	}
	var bias []member
	for i := range 1000 {
		bias = append(bias, member{key: strconv.Itoa(50000 + i)})
	}
	for _, tc := range []struct {
		name string
		ms   []member
	}{{"chat-8", chat}, {"logit_bias-1000", bias}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if foldDuplicate(tc.ms) >= 0 {
					b.Fatal("duplicate")
				}
			}
		})
	}
}

// tensorBody is an Open Inference Protocol request of one FP32 tensor of n
// elements, quantised pixel values as image models receive them.
func tensorBody(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"inputs":[{"name":"image","shape":[1,` + strconv.Itoa(n) + `],"datatype":"FP32","data":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString([]string{"0", "0.25", "0.5", "0.75", "1"}[i*7%5])
	}
	b.WriteString("]}]}")
	return []byte(b.String())
}
