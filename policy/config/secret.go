package config

import "github.com/modelguard/modelguard/policy/secret"

// readSecret returns the secret in file (relative to Dir) or the environment
// variable env, without one trailing newline; nil when neither is set.
func (c *Config) readSecret(file, env string) ([]byte, error) {
	if file == "" && env == "" {
		return nil, nil
	}
	return secret.Read(c.Path(file), env, true)
}
