package config

import "fmt"

// FieldError is an error about one configuration field, named by its YAML
// path (e.g. "authentication.jwt.issuers[0].keys[1].pem_file"). Packages that
// build components from the configuration return it so that the caller can
// report the file and line with Config.Locate.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *FieldError) Unwrap() error { return e.Err }
