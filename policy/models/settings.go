package models

import (
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/modelguard/modelguard/policy/body"
	// Aliased: this package has a func field.
	fielderr "github.com/modelguard/modelguard/policy/field"
)

// Settings configure a Catalog. In the configuration file they are three
// top-level keys: models, request_body and unknown_model_status; error
// paths are relative to the document's root.
type Settings struct {
	Models             []ModelSettings
	Body               BodySettings
	UnknownModelStatus int
}

// BodySettings bound body parsing for every model: the request_body section.
type BodySettings struct {
	// MaxBytes caps a body as received and after decompression; over it the
	// request gets 413. Default 1048576 (1 MiB), at most server.max_message_bytes.
	MaxBytes int `yaml:"max_bytes"`
	// MaxDepth caps JSON nesting (objects and arrays); deeper gets 400.
	// Default 64, between 2 and 1000.
	MaxDepth int `yaml:"max_depth"`
}

// ModelSettings is one model callers may use.
type ModelSettings struct {
	// Name is the model's name as requests carry it: the body's "model"
	// field (OpenAI-style APIs) or the {model} segment of the path.
	Name string `yaml:"name"`
	// Operation is chat, completion, embeddings, infer, predict or custom.
	Operation string `yaml:"operation"`
	// Paths are path templates matched against the request path; {model}
	// captures the model name, {version} any version. Default per
	// operation: chat /v1/chat/completions, completion /v1/completions,
	// embeddings /v1/embeddings, infer /v2/models/{model}/infer and
	// /v2/models/{model}/versions/{version}/infer, predict
	// /v1/models/{model}:predict and /v1/models/{model}/versions/{version}:predict.
	// Required for custom. A template without {model} takes the name from
	// the body's "model" field.
	Paths []string `yaml:"paths"`
	// Schema is a built-in schema id (openai.chat_completions,
	// openai.completions, openai.embeddings, oip.infer, kserve.v1.predict)
	// or a JSON Schema file (draft 2020-12 unless it says otherwise).
	// Default per operation; required for custom.
	Schema string `yaml:"schema"`
	// Limits beyond the schema.
	Limits Limits `yaml:"limits"`
}

// Limits are per-model caps; 0 means no cap (MaxBodyBytes: the
// request_body default).
type Limits struct {
	MaxBodyBytes   int `yaml:"max_body_bytes"`   // 413 above
	MaxPromptChars int `yaml:"max_prompt_chars"` // characters of prompt text (messages, prompt, input); 400 above
	MaxTokens      int `yaml:"max_tokens"`       // cap on max_tokens / max_completion_tokens; 400 above
	MaxMessages    int `yaml:"max_messages"`     // chat messages; 400 above
}

// Limits of BodySettings.MaxDepth.
const (
	MinBodyDepth = 2
	MaxBodyDepth = 1000
)

// custom is the operation whose paths and schema the configuration gives.
const custom = "custom"

// DefaultSettings returns the value every absent key takes.
func DefaultSettings() Settings {
	return Settings{
		Body:               BodySettings{MaxBytes: body.DefaultMaxBytes, MaxDepth: body.DefaultMaxDepth},
		UnknownModelStatus: http.StatusForbidden,
	}
}

// pathTemplate matches a path template: literal segments and the
// placeholders {model} and {version}, as in /v2/models/{model}/infer or
// /v1/models/{model}:predict.
var pathTemplate = regexp.MustCompile(`^(/([A-Za-z0-9._~:@!$&'()*+,;=-]|\{model\}|\{version\})*)+$`)

// Validate checks s; request_body.max_bytes is bounded by the gRPC message
// size, which the configuration checks.
func (s Settings) Validate() []error {
	var errs fielderr.List
	fielderr.Range(&errs, "request_body.max_depth", s.Body.MaxDepth, MinBodyDepth, MaxBodyDepth)
	if s.UnknownModelStatus != http.StatusForbidden && s.UnknownModelStatus != http.StatusNotFound {
		errs.Addf("unknown_model_status", "must be 403 or 404, got %d", s.UnknownModelStatus)
	}
	ops := append(slices.Sorted(maps.Keys(operations)), custom)
	seen := map[string]int{}
	for i, m := range s.Models {
		p := "models[" + strconv.Itoa(i) + "]"
		if m.Name == "" {
			errs.Addf(p+".name", "required")
		}
		errs.OneOf(p+".operation", m.Operation, ops...)
		if m.Operation == custom && len(m.Paths) == 0 {
			errs.Addf(p+".paths", "required for operation custom")
		}
		if m.Operation == custom && m.Schema == "" {
			errs.Addf(p+".schema", "required for operation custom: a JSON Schema file")
		}
		for j, t := range m.Paths {
			if !pathTemplate.MatchString(t) || strings.Count(t, "{model}") > 1 {
				errs.Addf(p+".paths["+strconv.Itoa(j)+"]", "%q is not a path template such as /v2/models/{model}/infer", t)
			}
		}
		for _, f := range []struct {
			key string
			n   int
		}{{"max_body_bytes", m.Limits.MaxBodyBytes}, {"max_prompt_chars", m.Limits.MaxPromptChars}, {"max_tokens", m.Limits.MaxTokens}, {"max_messages", m.Limits.MaxMessages}} {
			if f.n < 0 {
				errs.Addf(p+".limits."+f.key, "must not be negative")
			}
		}
		key := m.Operation + "\x00" + m.Name + "\x00" + strings.Join(m.Paths, "\x00")
		if first, dup := seen[key]; dup && m.Name != "" {
			errs.Addf(p+".name", "model %q is already listed at models[%d]", m.Name, first)
		}
		seen[key] = i
	}
	return errs
}
