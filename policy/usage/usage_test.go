package usage

import (
	"bytes"
	"compress/gzip"
	"errors"
	"strings"
	"testing"
)

func gzipped(s string) string {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.String()
}

func TestTokens(t *testing.T) {
	const chatStream = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n" +
		"data: [DONE]\n\n"
	tests := []struct {
		name, contentType, encoding, body string
		want                              int64 // -1: no usage
	}{
		{"chat completion", "application/json", "", `{"id":"x","choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}`, 12},
		{"parts without a total", "application/json; charset=utf-8", "", `{"usage":{"prompt_tokens":9,"completion_tokens":3}}`, 12},
		{"embeddings", "application/json", "", `{"data":[{"embedding":[0.1,0.2]}],"usage":{"prompt_tokens":5,"total_tokens":5}}`, 5},
		{"responses API", "application/json", "", `{"object":"response","output":[],"usage":{"input_tokens":20,"output_tokens":7,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":27}}`, 27},
		{"responses API without total", "application/json", "", `{"usage":{"input_tokens":20,"output_tokens":7}}`, 27},
		{"gzip", "application/json", "gzip", gzipped(`{"usage":{"total_tokens":40}}`), 40},
		{"chat stream with include_usage", "text/event-stream; charset=utf-8", "", chatStream, 12},
		{"chat stream, CRLF", "text/event-stream", "", strings.ReplaceAll(chatStream, "\n", "\r\n"), 12},
		{"responses stream", "text/event-stream", "", "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n" +
			"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n" +
			"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":6,\"total_tokens\":10}}}\n\n", 10},
		{"event data over several lines", "text/event-stream", "", "data: {\"usage\":\ndata: {\"total_tokens\":8}}\n\n", 8},
		{"gzip stream", "text/event-stream", "gzip", gzipped(chatStream), 12},
		{"stream without include_usage", "text/event-stream", "", "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n", -1},
		{"stream with usage null only", "text/event-stream", "", "data: {\"usage\": null}\n\n", -1},
		{"no usage", "application/json", "", `{"id":"x"}`, -1},
		{"usage null", "application/json", "", `{"usage":null}`, -1},
		{"empty usage", "application/json", "", `{"usage":{}}`, -1},
		{"negative", "application/json", "", `{"usage":{"total_tokens":-1}}`, -1},
		{"negative part", "application/json", "", `{"usage":{"prompt_tokens":-5,"completion_tokens":9}}`, -1},
		{"fractional", "application/json", "", `{"usage":{"total_tokens":1.5}}`, -1},
		{"string count", "application/json", "", `{"usage":{"total_tokens":"12"}}`, -1},
		{"truncated", "application/json", "", `{"usage":{"total_tokens":12`, -1},
		{"not JSON", "text/plain", "", `{"usage":{"total_tokens":12}}`, -1},
		{"no content type", "", "", `{"usage":{"total_tokens":12}}`, -1},
		{"corrupt gzip", "application/json", "gzip", "not gzip", -1},
		{"brotli", "application/json", "br", "\x1b\x00", -1},
		{"error body", "application/json", "", `{"error":{"message":"overloaded","type":"server_error"}}`, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Tokens(tt.contentType, tt.encoding, []byte(tt.body))
			if tt.want < 0 {
				if !errors.Is(err, ErrNoUsage) {
					t.Fatalf("got %d, %v; want ErrNoUsage", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestDecompressedSizeIsCapped(t *testing.T) {
	body := `{"usage":{"total_tokens":1},"pad":"` + strings.Repeat("a", 4096) + `"}`
	if _, err := tokens("application/json", "gzip", []byte(gzipped(body)), len(body)-1); !errors.Is(err, ErrNoUsage) {
		t.Fatalf("a body over the cap after decompression: %v", err)
	}
	if n, err := tokens("application/json", "gzip", []byte(gzipped(body)), len(body)); n != 1 || err != nil {
		t.Fatalf("a body at the cap: %d, %v", n, err)
	}
}

func BenchmarkTokens(b *testing.B) {
	var stream strings.Builder
	for range 500 {
		stream.WriteString("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}],\"usage\":null}\n\n")
	}
	stream.WriteString("data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":500,\"total_tokens\":509}}\n\ndata: [DONE]\n\n")
	json := []byte(`{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"` + strings.Repeat("word ", 500) + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":500,"total_tokens":509}}`)
	for _, bc := range []struct {
		name, contentType string
		body              []byte
	}{{"json", "application/json", json}, {"stream", "text/event-stream", []byte(stream.String())}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				if n, err := Tokens(bc.contentType, "", bc.body); err != nil || n != 509 {
					b.Fatal(n, err)
				}
			}
		})
	}
}
