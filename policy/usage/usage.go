// Package usage reads the tokens a model response says it used, for
// settling token budgets: the OpenAI "usage" object of a JSON response
// (chat and completions: prompt_tokens, completion_tokens, total_tokens;
// embeddings: prompt_tokens, total_tokens; the Responses API:
// input_tokens, output_tokens, total_tokens) or of the last event of a
// server-sent event stream that carries one (chat completions with
// stream_options.include_usage; the Responses API's response.completed,
// whose usage is under "response").
package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strings"

	"github.com/modelguard/modelguard/policy/body"
)

// MaxDecoded caps a compressed response once decompressed: past it, the
// usage is not read.
const MaxDecoded = 64 << 20

// ErrNoUsage is returned when the response carries no usage it can read.
var ErrNoUsage = errors.New("the response reports no usage")

// Tokens returns the tokens a response body reports (total_tokens, else
// the sum of its parts). contentType and contentEncoding are the
// response's headers; gzip and deflate bodies are decompressed. Errors
// wrap ErrNoUsage.
func Tokens(contentType, contentEncoding string, raw []byte) (int64, error) {
	return tokens(contentType, contentEncoding, raw, MaxDecoded)
}

func tokens(contentType, contentEncoding string, raw []byte, maxDecoded int) (int64, error) {
	data, err := body.Decode(raw, false, contentEncoding, body.Limits{MaxBytes: maxDecoded})
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNoUsage, err)
	}
	media, _, _ := mime.ParseMediaType(contentType)
	switch {
	case media == "application/json" || strings.HasSuffix(media, "+json"):
		return fromJSON(data)
	case media == "text/event-stream":
		return fromStream(data)
	}
	return 0, fmt.Errorf("%w: content type %q is neither JSON nor an event stream", ErrNoUsage, media)
}

// counts is a usage object; absent members stay nil.
type counts struct {
	Prompt     *int64 `json:"prompt_tokens"`
	Completion *int64 `json:"completion_tokens"`
	Input      *int64 `json:"input_tokens"`
	Output     *int64 `json:"output_tokens"`
	Total      *int64 `json:"total_tokens"`
}

// envelope is the part of a response or stream event that holds usage:
// encoding/json skips everything else without keeping it.
type envelope struct {
	Usage    *counts `json:"usage"`
	Response *struct {
		Usage *counts `json:"usage"`
	} `json:"response"`
}

func fromJSON(data []byte) (int64, error) {
	var e envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNoUsage, err)
	}
	c := e.Usage
	if c == nil && e.Response != nil {
		c = e.Response.Usage
	}
	if c == nil {
		return 0, ErrNoUsage
	}
	return c.tokens()
}

func (c *counts) tokens() (int64, error) {
	if c.Total != nil {
		return valid(*c.Total)
	}
	var sum int64
	found := false
	for _, p := range []*int64{c.Prompt, c.Completion, c.Input, c.Output} {
		if p != nil {
			if _, err := valid(*p); err != nil {
				return 0, err
			}
			sum += *p
			found = true
		}
	}
	if !found {
		return 0, fmt.Errorf("%w: a usage object without token counts", ErrNoUsage)
	}
	return valid(sum)
}

// maxTokens bounds a count: larger is not a real usage.
const maxTokens = 1 << 40

func valid(n int64) (int64, error) {
	if n < 0 || n > maxTokens {
		return 0, fmt.Errorf("%w: token count %d out of range", ErrNoUsage, n)
	}
	return n, nil
}

// fromStream reads the usage of the last event that reports one (OpenAI
// sends "usage":null on every other chunk, so events are tried from the
// end). Events are separated by blank lines; an event's data is its
// "data:" lines joined by newlines (the SSE format).
func fromStream(data []byte) (int64, error) {
	var (
		events [][]byte
		event  []byte
		joined bool // event is a copy joining several data lines
	)
	dispatch := func() {
		if len(event) > 0 {
			events = append(events, event)
		}
		event, joined = nil, false
	}
	for len(data) > 0 {
		var line []byte
		line, data = nextLine(data)
		if len(line) == 0 {
			dispatch()
			continue
		}
		value, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue // event:, id:, retry:, comments
		}
		value = bytes.TrimPrefix(value, []byte(" "))
		switch {
		case event == nil:
			event = value
		case !joined:
			event, joined = append(append(append([]byte(nil), event...), '\n'), value...), true
		default:
			event = append(append(event, '\n'), value...)
		}
	}
	dispatch()
	for i := len(events) - 1; i >= 0; i-- {
		if !bytes.Contains(events[i], []byte(`"usage"`)) {
			continue
		}
		if n, err := fromJSON(events[i]); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%w: no stream event carries usage (did the request set stream_options.include_usage?)", ErrNoUsage)
}

// nextLine splits off one line ended by \n, \r\n or \r.
func nextLine(data []byte) (line, rest []byte) {
	i := bytes.IndexAny(data, "\r\n")
	if i < 0 {
		return data, nil
	}
	line, rest = data[:i], data[i+1:]
	if data[i] == '\r' && len(rest) > 0 && rest[0] == '\n' {
		rest = rest[1:]
	}
	return line, rest
}
