// Package field is how a subsystem reports a problem with one of its
// settings without knowing the configuration file: an *Error names the field
// by its YAML path relative to the subsystem's section ("issuers[0].leeway"),
// the configuration prefixes the section ("authentication.jwt") with Within,
// and policy/config turns the whole path into "file:line: path: reason".
//
// Each subsystem (jwtauth, rego, models, audit, ...) owns its settings type,
// its defaults and a Validate method returning these errors; policy/config
// owns the YAML shape, positions, secrets and rules across sections. This
// package is the only thing both sides share, so subsystems need not import
// policy/config.
package field

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Error is an error about one setting, named by its YAML path.
type Error struct {
	Path string
	Err  error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error at path with a formatted reason.
func Errorf(path, format string, args ...any) *Error {
	return &Error{Path: path, Err: fmt.Errorf(format, args...)}
}

// Join returns the path of key (a name, or "[i]") under path.
func Join(path, key string) string {
	switch {
	case path == "":
		return key
	case key == "":
		return path
	case key[0] == '[':
		return path + key
	}
	return path + "." + key
}

// Within places errs under the section at prefix (see Under).
func Within(prefix string, errs []error) []error {
	out := make([]error, len(errs))
	for i, err := range errs {
		out[i] = Under(prefix, err)
	}
	return out
}

// Under places err under the section at prefix: an *Error's path is joined
// to prefix, and so are those of errors joined with errors.Join; any other
// error is returned as it is.
func Under(prefix string, err error) error {
	switch e := err.(type) {
	case *Error:
		return &Error{Path: Join(prefix, e.Path), Err: e.Err}
	case interface{ Unwrap() []error }:
		return errors.Join(Within(prefix, e.Unwrap())...)
	}
	return err
}

// List collects every problem found, so that one start reports them all.
type List []error

// Addf adds an *Error at path.
func (l *List) Addf(path, format string, args ...any) {
	*l = append(*l, Errorf(path, format, args...))
}

// Range adds an *Error at path unless lo <= v <= hi.
func Range[T cmp.Ordered](l *List, path string, v, lo, hi T) {
	if v < lo || v > hi {
		l.Addf(path, "must be between %v and %v, got %v", lo, hi, v)
	}
}

// OneOf adds an *Error at path unless value is one of allowed.
func (l *List) OneOf(path, value string, allowed ...string) {
	if !slices.Contains(allowed, value) {
		l.Addf(path, "%q is not one of %s", value, strings.Join(allowed, ", "))
	}
}

// Address adds an *Error at path unless addr is a listen address, host:port.
func (l *List) Address(path, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		l.Addf(path, "invalid address %q: want host:port such as 127.0.0.1:9191", addr)
	}
}

// CheckFile checks that the file at path exists, can be read and is not a
// directory.
func CheckFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory, want a file", path)
	}
	return nil
}

// IsHeaderName reports whether s is a non-empty lower-case HTTP token (RFC
// 9110 5.6.2), the form header names take in Envoy and HTTP/2.
func IsHeaderName(s string) bool {
	return httpguts.ValidHeaderFieldName(s) && strings.ToLower(s) == s
}

// CheckHTTPSURL checks a URL modelguard fetches from or posts to: absolute,
// https (http only for loopback hosts, for tests), without credentials.
// noCredentials says where credentials go instead; whyHTTPS what plain http
// would expose. The error is the reason, for an *Error at the URL's path.
func CheckHTTPSURL(raw, noCredentials, whyHTTPS string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("invalid URL: %v", err)
	case u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		return fmt.Errorf("must be an absolute https URL, got %q", raw)
	case u.User != nil:
		return fmt.Errorf("must not carry credentials (user:password@): %s", noCredentials)
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return fmt.Errorf("must use https: %s (http is allowed for loopback hosts only)", whyHTTPS)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
