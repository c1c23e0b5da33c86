package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
)

// detectModel recognises the model APIs modelguard protects by their path
// (OpenAI-style, Open Inference Protocol / KServe v2, KServe v1 / TF
// Serving) and reads the model name from the path or, for OpenAI-style
// APIs, from the body's top-level "model" field. A non-zero status denies.
func detectModel(req *Request) (Model, string, int) {
	p := req.Path
	switch {
	case p == "/v1/chat/completions":
		return modelFromBody(req, "chat")
	case p == "/v1/completions":
		return modelFromBody(req, "completion")
	case p == "/v1/embeddings":
		return modelFromBody(req, "embeddings")
	case strings.HasPrefix(p, "/v2/models/"):
		name, rest, _ := strings.Cut(p[len("/v2/models/"):], "/")
		rest = stripVersion(rest)
		switch {
		case rest == "infer":
			return Model{Name: name, Operation: "infer"}, "", 0
		case req.Method == http.MethodGet:
			return Model{Name: name, Operation: "list"}, "", 0
		}
		return Model{Name: name}, "", 0
	case strings.HasPrefix(p, "/v1/models/"):
		rest := p[len("/v1/models/"):]
		if name, verb, ok := strings.Cut(rest, ":"); ok {
			name, _, _ = strings.Cut(name, "/") // drop /versions/N
			return Model{Name: name, Operation: verb}, "", 0
		}
		if req.Method == http.MethodGet {
			name, _, _ := strings.Cut(rest, "/")
			return Model{Name: name, Operation: "list"}, "", 0
		}
	case p == "/v1/models" || p == "/v2/models" || p == "/v2":
		if req.Method == http.MethodGet {
			return Model{Operation: "list"}, "", 0
		}
	}
	return Model{}, "", 0
}

// stripVersion turns "versions/3/infer" into "infer".
func stripVersion(rest string) string {
	if v, ok := strings.CutPrefix(rest, "versions/"); ok {
		_, after, _ := strings.Cut(v, "/")
		return after
	}
	return rest
}

func modelFromBody(req *Request, op string) (Model, string, int) {
	m := Model{Operation: op}
	if len(req.Body) == 0 {
		return m, "", 0
	}
	// A truncated body could hide a second "model" key or end mid-value:
	// never read it as if whole.
	if req.BodyTruncated {
		return m, "body_truncated", http.StatusRequestEntityTooLarge
	}
	if ce := req.Headers["content-encoding"]; ce != "" && ce != "identity" {
		return m, "body_encoding_unsupported", http.StatusUnsupportedMediaType
	}
	name, err := topLevelModel(req.Body)
	if err != nil {
		return m, "body_invalid", http.StatusBadRequest
	}
	m.Name = name
	return m, "", 0
}

var errDuplicateModel = errors.New(`duplicate "model" key`)

// topLevelModel returns the top-level "model" string of a JSON object,
// refusing duplicate "model" keys and trailing data so that this check and
// the upstream cannot read different models from one body.
func topLevelModel(body []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", errors.New("body is not a JSON object")
	}
	var (
		name  string
		seen  bool
		value json.RawMessage
	)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", err
		}
		if key, _ := t.(string); key == "model" {
			if seen {
				return "", errDuplicateModel
			}
			seen = true
			if err := dec.Decode(&name); err != nil {
				return "", err
			}
			continue
		}
		if err := dec.Decode(&value); err != nil {
			return "", err
		}
	}
	if _, err := dec.Token(); err != nil {
		return "", err
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", errors.New("trailing data after the JSON object")
	}
	return name, nil
}
