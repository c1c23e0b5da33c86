package schema

import (
	"encoding/json"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// The built-in OpenAI schemas were reshaped for the validator's cost
// (fast-path ifs for the common valid shapes, inlined $refs, discriminator
// enums at the end of their if/then/else chains, anyOf without an if on
// the type; docs/json-schema-cost.md).
// testdata/previous holds them as they were before; these tests require
// the same verdict from both on a large generated corpus of valid and
// mutated bodies: both accept, or both refuse with the same Violation
// (pointer and rule, which is the refusal text clients see).
var previousSchemas = map[string]string{
	OpenAIChat:        "testdata/previous/openai.chat_completions.json",
	OpenAICompletions: "testdata/previous/openai.completions.json",
	OpenAIEmbeddings:  "testdata/previous/openai.embeddings.json",
}

func TestBuiltinsMatchPrevious(t *testing.T) {
	cur := mustCompile(t, nil)
	prev := mustCompile(t, previousSchemas)
	n := 3000
	if testing.Short() {
		n = 300
	}
	for _, tc := range []struct {
		id    string
		count int
		body  func(g *bodyGen) any
	}{
		{OpenAIChat, 2 * n, (*bodyGen).chat},
		{OpenAICompletions, n / 2, (*bodyGen).completion},
		{OpenAIEmbeddings, n / 2, (*bodyGen).embedding},
	} {
		t.Run(tc.id, func(t *testing.T) {
			g := &bodyGen{r: rand.New(rand.NewPCG(12, uint64(len(tc.id))))}
			var bodies []any
			for _, s := range validSamples {
				if s.id == tc.id {
					bodies = append(bodies, parse(t, s.body))
				}
			}
			for _, s := range invalidSamples {
				if s.id == tc.id {
					bodies = append(bodies, parse(t, s.body))
				}
			}
			for range tc.count {
				v := tc.body(g)
				// Half stay as generated (mostly valid), half get 1-3
				// mutations (mostly invalid, at every depth).
				if g.r.IntN(2) == 0 {
					for range 1 + g.r.IntN(3) {
						v = g.mutate(v)
					}
				}
				bodies = append(bodies, roundTrip(t, v))
			}
			accepted := 0
			for _, v := range bodies {
				got, want := cur.Validate(tc.id, v), prev.Validate(tc.id, v)
				if !sameVerdict(got, want) {
					b, _ := json.Marshal(v)
					t.Fatalf("body %s\nreshaped schema: %v\nprevious schema: %v", b, got, want)
				}
				if got == nil {
					accepted++
				}
			}
			// A corpus that is all valid or all invalid proves little.
			if accepted < len(bodies)/5 || accepted > len(bodies)*4/5 {
				t.Fatalf("%d of %d bodies valid: the corpus is lopsided", accepted, len(bodies))
			}
		})
	}
}

// sameVerdict: both nil, or both Violations with the same text.
func sameVerdict(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	var va, vb *Violation
	return errors.As(a, &va) && errors.As(b, &vb) && *va == *vb
}

// roundTrip turns a generated value into what package body hands over
// (numbers as json.Number).
func roundTrip(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return parse(t, string(b))
}

// bodyGen builds random OpenAI request bodies from the shapes of the API:
// every message role, content part, tool and tool call kind, with members
// present or not. Deterministic for a given seed.
type bodyGen struct{ r *rand.Rand }

func (g *bodyGen) chance(p float64) bool { return g.r.Float64() < p }

func (g *bodyGen) oneOf(xs ...any) any { return xs[g.r.IntN(len(xs))] }

type obj = map[string]any

func (g *bodyGen) text() any { return g.oneOf("Hello!", "What is in this image?", "", "{\"a\":1}") }

func (g *bodyGen) num(xs ...string) any { return json.Number(xs[g.r.IntN(len(xs))]) }

func (g *bodyGen) list(n int, f func() any) []any {
	out := []any{}
	for range n {
		out = append(out, f())
	}
	return out
}

func (g *bodyGen) breakpoint(o obj) obj {
	if g.chance(0.1) {
		o["prompt_cache_breakpoint"] = obj{"mode": g.oneOf("explicit", "implicit")}
	}
	return o
}

func (g *bodyGen) textPart() any {
	return g.breakpoint(obj{"type": "text", "text": g.text()})
}

func (g *bodyGen) userPart() any {
	switch g.r.IntN(4) {
	case 0:
		return g.textPart()
	case 1:
		u := obj{"url": "https://example.com/a.png"}
		if g.chance(0.5) {
			u["detail"] = g.oneOf("auto", "low", "high")
		}
		return g.breakpoint(obj{"type": "image_url", "image_url": u})
	case 2:
		return obj{"type": "input_audio", "input_audio": obj{"data": "AAAA", "format": g.oneOf("wav", "mp3")}}
	default:
		return obj{"type": "file", "file": obj{"file_id": "file-1", "filename": "a.pdf"}}
	}
}

func (g *bodyGen) content(part func() any, extra ...any) any {
	if g.chance(0.6) {
		return g.text()
	}
	if len(extra) > 0 && g.chance(0.3) {
		return extra[g.r.IntN(len(extra))]
	}
	return g.list(1+g.r.IntN(3), part)
}

func (g *bodyGen) toolCall() any {
	if g.chance(0.8) {
		return obj{"id": "call_1", "type": "function", "function": obj{"name": "get_weather", "arguments": "{}"}}
	}
	return obj{"id": "call_2", "type": "custom", "custom": obj{"name": "grep", "input": "x"}}
}

func (g *bodyGen) message() any {
	role := g.oneOf("user", "user", "assistant", "assistant", "system", "developer", "tool", "function").(string)
	m := obj{"role": role}
	switch role {
	case "user":
		m["content"] = g.content(g.userPart)
	case "assistant":
		if g.chance(0.7) {
			m["content"] = g.content(func() any {
				if g.chance(0.7) {
					return g.textPart()
				}
				return obj{"type": "refusal", "refusal": "no"}
			}, nil)
		}
		g.optional(m, 0.1, map[string]func() any{
			"refusal":       func() any { return g.oneOf(nil, "I can't") },
			"audio":         func() any { return obj{"id": "audio_1"} },
			"function_call": func() any { return obj{"name": "f", "arguments": "{}"} },
		})
		if g.chance(0.4) {
			m["tool_calls"] = g.list(1+g.r.IntN(2), g.toolCall)
		}
	case "tool":
		m["content"] = g.content(g.textPart)
		m["tool_call_id"] = "call_1"
	case "function":
		m["content"] = g.oneOf("42", nil)
		m["name"] = "f"
	default:
		m["content"] = g.content(g.textPart)
	}
	if role != "function" && g.chance(0.15) {
		m["name"] = "alice"
	}
	return m
}

func (g *bodyGen) tool() any {
	if g.chance(0.8) {
		f := obj{"name": "get_weather"}
		if g.chance(0.5) {
			f["description"] = "Get the weather"
		}
		if g.chance(0.7) {
			f["parameters"] = obj{"type": "object", "properties": obj{"city": obj{"type": "string"}}}
		}
		if g.chance(0.2) {
			f["strict"] = g.oneOf(true, nil)
		}
		return obj{"type": "function", "function": f}
	}
	c := obj{"name": "grep"}
	if g.chance(0.5) {
		c["format"] = g.oneOf(obj{"type": "text"}, obj{"type": "grammar", "grammar": obj{"definition": "start: x", "syntax": g.oneOf("lark", "regex")}})
	}
	return obj{"type": "custom", "custom": c}
}

// optional adds each of the members with probability p.
func (g *bodyGen) optional(o obj, p float64, members map[string]func() any) {
	for _, name := range slices.Sorted(maps.Keys(members)) { // the same corpus every run
		if g.chance(p) {
			o[name] = members[name]()
		}
	}
}

func (g *bodyGen) chat() any {
	o := obj{"model": "gpt-4o-mini", "messages": g.list(1+g.r.IntN(5), g.message)}
	g.optional(o, 0.08, map[string]func() any{
		"temperature":           func() any { return g.num("0", "0.2", "1", "2", "2.5", "-1") },
		"top_p":                 func() any { return g.num("0.5", "1", "1.5") },
		"max_tokens":            func() any { return g.oneOf(json.Number("256"), json.Number("1.5"), nil) },
		"max_completion_tokens": func() any { return g.num("256", "0", "1e3") },
		"n":                     func() any { return g.num("1", "0", "129") },
		"stream":                func() any { return g.oneOf(true, false, nil) },
		"stream_options":        func() any { return obj{"include_usage": true} },
		"stop":                  func() any { return g.oneOf("\n", []any{"a", "b"}, []any{}, []any{"1", "2", "3", "4", "5"}) },
		"user":                  func() any { return "u-1" },
		"metadata":              func() any { return obj{"k": g.oneOf("v", json.Number("1"))} },
		"logit_bias":            func() any { return obj{"50256": g.num("-100", "5", "101")} },
		"tools":                 func() any { return g.list(1+g.r.IntN(2), g.tool) },
		"tool_choice": func() any {
			return g.oneOf("auto", "none", "required", "any",
				obj{"type": "function", "function": obj{"name": "get_weather"}},
				obj{"type": "custom", "custom": obj{"name": "grep"}},
				obj{"type": "allowed_tools", "allowed_tools": obj{"mode": "auto", "tools": []any{obj{"type": "function"}}}})
		},
		"response_format": func() any {
			return g.oneOf(obj{"type": "text"}, obj{"type": "json_object"},
				obj{"type": "json_schema", "json_schema": obj{"name": "x", "schema": obj{"type": "object"}, "strict": true}})
		},
		"prediction": func() any { return obj{"type": "content", "content": g.content(g.textPart)} },
		"audio":      func() any { return obj{"voice": g.oneOf("alloy", obj{"id": "v1"}), "format": "mp3"} },
		"modalities": func() any { return []any{"text", g.oneOf("audio", "video")} },
		"functions":  func() any { return []any{obj{"name": "f", "parameters": obj{}}} },
		"function_call": func() any {
			return g.oneOf("auto", "none", obj{"name": "f"})
		},
		"moderation": func() any {
			return obj{"model": "omni", "policy": obj{"input": obj{"mode": g.oneOf("score", "block", "x")}}}
		},
		"web_search_options": func() any {
			return obj{"user_location": obj{"type": "approximate", "approximate": obj{"city": "Paris"}}}
		},
		"reasoning_effort": func() any { return g.oneOf("low", "high", "extreme") },
		"top_logprobs":     func() any { return g.num("2", "21") },
		"vllm_top_k":       func() any { return g.num("20") },
	})
	return o
}

func (g *bodyGen) tokens() any {
	return g.list(1+g.r.IntN(3), func() any { return g.num("1212", "318", "0", "-1", "1.5") })
}

func (g *bodyGen) completion() any {
	o := obj{"model": "gpt-3.5-turbo-instruct"}
	o["prompt"] = g.oneOf("Say this is a test", "", nil, []any{}, []any{"a", "b"}, g.tokens(), g.tokens(),
		[]any{g.tokens(), g.tokens()}, []any{[]any{}}, []any{"a", json.Number("1")})
	g.optional(o, 0.15, map[string]func() any{
		"max_tokens":  func() any { return g.num("7", "0", "-1", "1.5") },
		"temperature": func() any { return g.num("0", "1", "3") },
		"best_of":     func() any { return g.num("2", "21") },
		"echo":        func() any { return g.oneOf(true, nil) },
		"logprobs":    func() any { return g.num("5", "6") },
		"n":           func() any { return g.num("1", "0") },
		"stop":        func() any { return g.oneOf("\n", []any{"a"}, []any{}) },
		"stream":      func() any { return true },
		"suffix":      func() any { return g.oneOf("x", nil) },
		"user":        func() any { return "u-1" },
		"logit_bias":  func() any { return obj{"50256": g.num("-100", "-101")} },
	})
	return o
}

func (g *bodyGen) embedding() any {
	o := obj{"model": "text-embedding-3-small"}
	o["input"] = g.oneOf("The food was delicious", "", []any{}, []any{"a", "b"}, []any{"a", ""},
		g.tokens(), []any{g.tokens()}, []any{[]any{}}, []any{"a", json.Number("1")})
	g.optional(o, 0.25, map[string]func() any{
		"encoding_format": func() any { return g.oneOf("float", "base64", "int8") },
		"dimensions":      func() any { return g.num("256", "0") },
		"user":            func() any { return "u-1" },
	})
	return o
}

// mutationValues replace a random node: every JSON type, discriminator
// values of other kinds, and shapes that pass one branch but not another.
var mutationValues = []string{
	`"x"`, `""`, `"user"`, `"assistant"`, `"system"`, `"developer"`, `"tool"`, `"function"`,
	`"text"`, `"image_url"`, `"input_audio"`, `"file"`, `"refusal"`, `"custom"`, `"json_schema"`,
	`"auto"`, `"explicit"`, `0`, `1`, `-1`, `0.5`, `300`, `true`, `null`, `{}`, `[]`,
	`{"type": "text", "text": "t"}`, `[{"type": "text", "text": "t"}]`, `[1, 2]`, `[[1]]`, `["a"]`,
	`{"role": "user", "content": "hi"}`,
}

// memberNames are names a mutation may add: ones the schemas define.
var memberNames = []string{
	"role", "content", "name", "tool_calls", "tool_call_id", "refusal", "audio", "function_call",
	"type", "text", "image_url", "input_audio", "file", "function", "custom", "id", "arguments",
	"prompt_cache_breakpoint", "model", "messages", "tools", "tool_choice", "prompt", "input",
}

// mutate changes one random node of v: deletes, adds or replaces a member,
// removes, duplicates or adds an element, or replaces the node.
func (g *bodyGen) mutate(v any) any {
	var paths [][]any
	var walk func(v any, path []any)
	walk = func(v any, path []any) {
		paths = append(paths, slices.Clone(path))
		switch x := v.(type) {
		case map[string]any:
			for _, k := range slices.Sorted(maps.Keys(x)) {
				walk(x[k], append(path, k))
			}
		case []any:
			for i, e := range x {
				walk(e, append(path, i))
			}
		}
	}
	walk(v, nil)
	return update(v, paths[g.r.IntN(len(paths))], g.mutateNode)
}

// update returns v with the node at path replaced by f(node).
func update(v any, path []any, f func(any) any) any {
	if len(path) == 0 {
		return f(v)
	}
	switch x := v.(type) {
	case map[string]any:
		k := path[0].(string)
		x[k] = update(x[k], path[1:], f)
	case []any:
		i := path[0].(int)
		x[i] = update(x[i], path[1:], f)
	}
	return v
}

func (g *bodyGen) mutateNode(v any) any {
	switch x := v.(type) {
	case map[string]any:
		keys := slices.Sorted(maps.Keys(x))
		switch {
		case len(keys) > 0 && g.chance(0.4):
			delete(x, keys[g.r.IntN(len(keys))])
		case len(keys) > 0 && g.chance(0.5):
			x[keys[g.r.IntN(len(keys))]] = g.mutationValue()
		case g.chance(0.8):
			x[memberNames[g.r.IntN(len(memberNames))]] = g.mutationValue()
		default:
			return g.mutationValue()
		}
		return x
	case []any:
		switch {
		case len(x) > 0 && g.chance(0.3):
			i := g.r.IntN(len(x))
			return append(x[:i:i], x[i+1:]...)
		case len(x) > 0 && g.chance(0.3):
			return append(x, x[g.r.IntN(len(x))])
		case g.chance(0.7):
			return append(x, g.mutationValue())
		}
	}
	return g.mutationValue()
}

func (g *bodyGen) mutationValue() any {
	var v any
	if err := json.Unmarshal([]byte(mutationValues[g.r.IntN(len(mutationValues))]), &v); err != nil {
		panic(err)
	}
	return v
}
