package apikey

import (
	"path/filepath"

	"github.com/modelguard/modelguard/policy/field"
)

// Settings configure API key authentication: the authentication.api_keys
// section. DefaultSettings gives the value every absent key takes.
type Settings struct {
	// File holds the key store (SHA-256 hashes), relative to the
	// configuration's directory: YAML if named *.yaml or *.yml, one key per
	// line otherwise (see Load). Empty disables API keys.
	File string `yaml:"file"`
	// Header carrying the key, default x-api-key; lower-cased at load; not
	// "authorization" (that one is covered by Bearer).
	Header string `yaml:"header"`
	// Bearer accepts "Authorization: Bearer <key>" when the value is not a
	// JWT (OpenAI-compatible SDKs). Default true; pointer so "false" is seen.
	Bearer *bool `yaml:"bearer"`
}

// DefaultHeader carries API keys unless the configuration names another.
const DefaultHeader = "x-api-key"

// DefaultSettings returns the value every absent key takes.
func DefaultSettings() Settings {
	bearer := true
	return Settings{Header: DefaultHeader, Bearer: &bearer}
}

// Validate checks s; the key file resolves against baseDir. The errors are
// *field.Error relative to the section ("header").
func (s Settings) Validate(baseDir string) []error {
	var errs field.List
	if s.File != "" {
		file := s.File
		if !filepath.IsAbs(file) {
			file = filepath.Join(baseDir, file)
		}
		if err := field.CheckFile(file); err != nil {
			errs = append(errs, &field.Error{Path: "file", Err: err})
		}
	}
	switch {
	case !field.IsHeaderName(s.Header):
		errs.Addf("header", "%q is not a valid HTTP header name", s.Header)
	case s.Header == "authorization":
		errs.Addf("header", "must not be authorization: keys sent as \"Authorization: Bearer\" are accepted with bearer: true")
	}
	return errs
}
