package models

import (
	"encoding/json"
	"iter"
	"math"
	"math/bits"
	"net/http"
	"slices"
	"strconv"
)

// Facts are the few body values policies and limits use, computed once per
// request so that a policy need not walk a large prompt.
type Facts struct {
	// MaxTokens is the largest of the completion-length fields present
	// (lengthFields); 0 when none is.
	MaxTokens int64
	Stream    bool
	// N is the number of choices asked for; 0 when absent.
	N int64
	// Messages counts chat messages.
	Messages int
	// PromptChars counts the characters of prompt text: message contents
	// (strings and text parts), prompt, or embeddings input.
	PromptChars int
	// Tools are the names of the functions offered to the model.
	Tools []string
}

// lengthFields are the members that bound how many tokens a model
// generates, in the OpenAI APIs (max_tokens, its successor
// max_completion_tokens, the Responses API's max_output_tokens) and the
// servers that copy them (vLLM, llama.cpp, TGI). A server honours one of
// them, and which one differs: the cap covers them all.
var lengthFields = [...]string{"max_tokens", "max_completion_tokens", "max_output_tokens"}

// factsOf derives the facts of a body that passed its schema (parsed by
// body.Parse, so its strings are valid UTF-8). A
// completion-length field that is not a non-negative whole number (or null)
// is refused whatever the schema says: servers read -1 as "no limit" and
// coerce strings, so such a value could slip past the cap.
//
// It reads the top-level members in one pass rather than looking up each
// name it knows (a hash of each name, present or not), and counts prompt
// characters with runeCount.
func factsOf(operation string, doc any) (Facts, *Denial) {
	o, _ := doc.(map[string]any)
	var f Facts
	var lengths [len(lengthFields)]any
	var tools []any
	for k, v := range o {
		switch k {
		case "stream":
			f.Stream, _ = v.(bool)
		case "n":
			f.N = integer(v)
		case "messages":
			if operation == "chat" {
				msgs, _ := v.([]any)
				f.Messages = len(msgs)
			}
		case "tools":
			if operation == "chat" {
				tools, _ = v.([]any)
			}
		default:
			if i := slices.Index(lengthFields[:], k); i >= 0 {
				lengths[i] = v
			}
		}
	}
	for i, v := range lengths { // in lengthFields' order, for a stable refusal
		if v == nil {
			continue
		}
		n, ok := nonNegativeWhole(v)
		if !ok {
			return Facts{}, &Denial{http.StatusBadRequest, "max_tokens_invalid", "request body invalid at /" + lengthFields[i] + ": want a non-negative integer"}
		}
		f.MaxTokens = max(f.MaxTokens, n)
	}
	for s := range PromptTexts(operation, doc) {
		f.PromptChars += runeCount(s)
	}
	for _, t := range tools {
		fn, _ := field(t, "function").(map[string]any)
		if name, ok := fn["name"].(string); ok {
			f.Tools = append(f.Tools, name)
		}
	}
	return f, nil
}

// nonNegativeWhole reads v as a JSON number with no fractional part (1e3
// and 2.0 have none), not below zero, clamped as integer does.
func nonNegativeWhole(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil { // the usual form, "256"
		return i, i >= 0
	}
	i := integer(n)
	return i, wholeNumber(n) && i >= 0
}

// PromptTexts yields the prompt text of a parsed body of an operation:
// chat message contents (strings and the text of content parts),
// completion prompts, embeddings inputs (a string or strings). It is
// the one definition of "prompt text" (counted in Facts.PromptChars,
// scanned by policy/dlp).
func PromptTexts(operation string, doc any) iter.Seq[string] {
	return func(yield func(string) bool) {
		o, _ := doc.(map[string]any)
		switch operation {
		case "chat":
			msgs, _ := o["messages"].([]any)
			for _, m := range msgs {
				mo, _ := m.(map[string]any)
				if !texts(mo["content"], yield) {
					return
				}
			}
		case "completion":
			texts(o["prompt"], yield)
		case "embeddings":
			texts(o["input"], yield)
		}
	}
}

// Prompts yields the prompt text of m's body (see PromptTexts).
func (m *Model) Prompts() iter.Seq[string] { return PromptTexts(m.Operation, m.Body) }

// wholeNumber reports whether n has no fractional part (1e3 and 2.0 do).
func wholeNumber(n json.Number) bool {
	f, err := strconv.ParseFloat(string(n), 64)
	return err == nil && f == math.Trunc(f)
}

// texts yields a string, the strings in an array, and the "text" of
// content parts; false when yield asked to stop.
func texts(v any, yield func(string) bool) bool {
	switch t := v.(type) {
	case string:
		return yield(t)
	case []any:
		for _, e := range t {
			switch p := e.(type) {
			case string:
				if !yield(p) {
					return false
				}
			case map[string]any:
				if s, ok := p["text"].(string); ok && !yield(s) {
					return false
				}
			}
		}
	}
	return true
}

// runeCount is utf8.RuneCountInString for valid UTF-8, such as
// body.Parse's strings: the number of bytes that do not continue a rune
// (10xxxxxx), counted 8 at a time. RuneCountInString decodes rune by rune,
// which made counting most of the facts' cost for a chat body.
func runeCount(s string) int {
	const highs = 0x8080808080808080
	n := len(s)
	for ; len(s) >= 8; s = s[8:] {
		_ = s[7] // one bounds check for the 8 loads, which combine into one
		x := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
		// A byte's bit 7 set and bit 6 clear: (x << 1) brings bit 6 to 7.
		n -= bits.OnesCount64(x &^ (x << 1) & highs)
	}
	for i := range len(s) {
		if s[i]&0xC0 == 0x80 {
			n--
		}
	}
	return n
}

// integer reads a JSON number as an int64. Forms such as 1e3 or 1e30 are
// numbers too (and integers for JSON Schema): they are read through float64
// and clamped, so that a cap can never be bypassed by spelling.
func integer(v any) int64 {
	n, ok := v.(json.Number)
	if !ok {
		return 0
	}
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return i
	}
	f, err := strconv.ParseFloat(string(n), 64)
	switch {
	case err != nil && f == 0:
		return 0
	case f >= math.MaxInt64:
		return math.MaxInt64
	case f <= math.MinInt64:
		return math.MinInt64
	}
	return int64(f)
}

type limits Limits

func (l limits) check(f Facts) *Denial {
	switch {
	case l.MaxMessages > 0 && f.Messages > l.MaxMessages:
		return &Denial{http.StatusBadRequest, "messages_limit_exceeded", "too many messages for this model"}
	case l.MaxPromptChars > 0 && f.PromptChars > l.MaxPromptChars:
		return &Denial{http.StatusBadRequest, "prompt_limit_exceeded", "prompt too long for this model"}
	case l.MaxTokens > 0 && f.MaxTokens > int64(l.MaxTokens):
		return &Denial{http.StatusBadRequest, "max_tokens_limit_exceeded", "max_tokens exceeds this model's limit"}
	}
	return nil
}
