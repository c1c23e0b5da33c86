package config

import "github.com/modelguard/modelguard/policy/field"

// FieldError is an error about one configuration field, named by its YAML
// path (e.g. "authentication.jwt.issuers[0].keys[1].pem_file"). Packages that
// build components from the configuration return it so that the caller can
// report the file and line with Config.Locate. It is field.Error, which the
// subsystems return without importing this package.
type FieldError = field.Error
