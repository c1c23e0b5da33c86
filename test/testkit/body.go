package testkit

import "strings"

// ChatBody is the load comparison's request body ("make bench"): an OpenAI
// chat request of n bytes, a system prompt and one user turn with
// temperature and max_tokens, the user's text repeated to fill n.
func ChatBody(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"model":"gpt-4o-mini","temperature":0.7,"max_tokens":256,"messages":[` +
		`{"role":"system","content":"You are a helpful assistant that answers questions about the weather."},` +
		`{"role":"user","content":"`)
	const tail = `"}]}`
	for b.Len() < n-len(tail) {
		b.WriteString("What is the weather like in Paris today? ")
	}
	return []byte(b.String()[:n-len(tail)] + tail)
}
