// Package secret reads key material the configuration names: from a file or
// an environment variable, never written inline.
package secret

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Read returns the content of file (a resolved path) or of the environment
// variable env: exactly one must be set. Empty content is an error. With
// trim, one trailing newline (editors and echo add one) is dropped, as for
// HMAC secrets and tokens; PEM text is returned as it is.
func Read(file, env string, trim bool) ([]byte, error) {
	var (
		data []byte
		err  error
	)
	switch {
	case (file == "") == (env == ""):
		return nil, errors.New("exactly one of a file and an environment variable must be set")
	case file != "":
		data, err = readFile(file)
	default:
		data, err = readEnv(env)
	}
	if err != nil {
		return nil, err
	}
	if trim {
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
