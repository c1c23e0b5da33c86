package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
)

// MinSecretBytes is the shortest HMAC secret accepted. RFC 7518 3.2 asks for
// at least the hash size, so HS384 and HS512 issuers need 48 and 64 bytes.
const MinSecretBytes = 32

// IsSecret reports whether k is an HMAC secret rather than a PEM key.
func (k StaticKey) IsSecret() bool { return k.SecretFile != "" || k.SecretEnv != "" }

// sources lists the key names of k's non-empty sources.
func (k StaticKey) sources() []string {
	var set []string
	for _, s := range []struct{ key, value string }{
		{"pem_file", k.PEMFile}, {"pem_env", k.PEMEnv},
		{"secret_file", k.SecretFile}, {"secret_env", k.SecretEnv},
	} {
		if s.value != "" {
			set = append(set, s.key)
		}
	}
	return set
}

// ReadKey returns the material of static key k from its single source: the
// PEM text, or the HMAC secret without one trailing newline (editors and
// echo add one; it is not part of the secret). Files resolve against Dir.
// It does not parse PEM or check lengths: Parse has checked lengths, and the
// caller parses.
func (c *Config) ReadKey(k StaticKey) ([]byte, error) {
	if src := k.sources(); len(src) != 1 {
		return nil, errors.New("a static key needs exactly one of pem_file, pem_env, secret_file or secret_env")
	}
	var data []byte
	var err error
	switch {
	case k.PEMFile != "":
		data, err = readFile(c.Path(k.PEMFile))
	case k.SecretFile != "":
		data, err = readFile(c.Path(k.SecretFile))
	case k.PEMEnv != "":
		data, err = readEnv(k.PEMEnv)
	default:
		data, err = readEnv(k.SecretEnv)
	}
	if err != nil {
		return nil, err
	}
	if k.IsSecret() {
		if b, ok := bytes.CutSuffix(data, []byte("\n")); ok {
			data, _ = bytes.CutSuffix(b, []byte("\r"))
		}
	}
	return data, nil
}

func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	return data, nil
}

func readEnv(name string) ([]byte, error) {
	v, ok := os.LookupEnv(name)
	switch {
	case !ok:
		return nil, fmt.Errorf("environment variable %s is not set", name)
	case strings.TrimSpace(v) == "":
		return nil, fmt.Errorf("environment variable %s is empty", name)
	}
	return []byte(v), nil
}
