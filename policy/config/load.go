package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/modelguard/modelguard/policy/yamlerr"
)

// Load reads the configuration file at path, then parses, defaults and
// validates it like Parse. Relative paths in it resolve against its directory.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path, filepath.Dir(path))
}

// Parse parses one YAML document strictly, applies defaults and validates
// the result. file names the configuration in error messages; dir is the
// directory relative paths resolve against (made absolute; "" is the working
// directory). Every error reads "file:line: path: reason"; several validation
// errors are joined, one per line.
func Parse(data []byte, file, dir string) (*Config, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("config: directory of %s: %w", file, err)
	}
	c := &Config{Dir: abs, File: file}
	root, err := c.parseDocument(data)
	if err != nil {
		return nil, err
	}
	s := newShape(c.name())
	s.walk("", nil, root, configType)
	c.src = &source{index: s.index}
	if len(s.errs) > 0 {
		return nil, errors.Join(s.errs...)
	}
	// The shape check above gives better messages; the strict decoder is a
	// second line of defence against anything it does not model.
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, c.yamlError(data, err)
	}
	c.applyDefaults()
	if errs := c.validate(); len(errs) > 0 {
		return nil, c.Error(errors.Join(errs...))
	}
	return c, nil
}

// parseDocument returns the root mapping of the only document in data.
func (c *Config) parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty configuration", c.name())
		}
		return nil, c.yamlError(data, err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, c.yamlError(data, err)
	default:
		return nil, fmt.Errorf("%s:%d: a second YAML document; the configuration is one document (remove the extra ---)", c.name(), next.Line)
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil, fmt.Errorf("%s: empty configuration", c.name())
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: the configuration must be a mapping of keys to values, got %s", c.name(), root.Line, describe(root))
	}
	return root, nil
}

// yamlLine matches the "line N: " that yaml.v3 puts before its messages.
var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// yamlError rewrites a yaml.v3 error from parsing data ("yaml: line 3:
// ...", or a TypeError listing several "line N: ..." messages) as "file:3:
// ..." lines; a syntax error is placed on the line of the mistake
// (yamlerr), not where yaml.v3 says.
func (c *Config) yamlError(data []byte, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else if line, msg, ok := yamlerr.Locate(data, err); ok {
		msgs = []string{fmt.Sprintf("line %d: %s", line, msg)}
	} else {
		msgs = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var out []string
	for _, m := range msgs {
		if sub := yamlLine.FindStringSubmatch(m); sub != nil {
			out = append(out, fmt.Sprintf("%s:%s: %s", c.name(), sub[1], sub[2]))
		} else {
			out = append(out, fmt.Sprintf("%s: %s", c.name(), m))
		}
	}
	return &locatedError{msg: strings.Join(out, "\n"), err: err}
}

// source is what Locate needs from the parsed document.
type source struct {
	index map[string]entry // dotted path -> node; see shape
}

// entry is one node of the document and, for a mapping value, its key.
type entry struct {
	key   *yaml.Node // nil for sequence items and the root
	value *yaml.Node // aliases resolved
}

func (e entry) line() int {
	if e.key != nil {
		return e.key.Line
	}
	return e.value.Line
}

// set reports whether path has a non-null value in the document, which is
// when an explicit value overrides the default.
func (c *Config) set(path string) bool {
	if c.src == nil {
		return false
	}
	e, ok := c.src.index[path]
	return ok && !isNull(e.value)
}

// name is the configuration's name in messages.
func (c *Config) name() string {
	if c.File == "" {
		return "config"
	}
	return c.File
}

// Locate returns "file:line" of the node at a dotted path such as
// "authentication.jwt.issuers[0].keys[1].pem_file". A path not in the file
// falls back to its nearest parent that is, and to "file" when none is. A
// value merged in with "<<" is located where it is written.
func (c *Config) Locate(path string) string {
	if c.src != nil {
		for p := path; p != ""; p = parent(p) {
			if e, ok := c.src.index[p]; ok {
				return c.name() + ":" + strconv.Itoa(e.line())
			}
		}
	}
	return c.name()
}

// parent strips the last ".key" or "[i]" from a path.
func parent(p string) string {
	if i := strings.LastIndexAny(p, ".["); i >= 0 {
		return p[:i]
	}
	return ""
}

// Error returns err located in the file when it is, or wraps, a *FieldError:
// its message becomes "file:line: path: reason" (context wrapped around the
// FieldError gives way to the location), and errors.Is and errors.As still
// reach the original. Errors joined with errors.Join are located one by one.
// Any other error, an error already located, and nil are returned unchanged.
func (c *Config) Error(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		switch e := e.(type) {
		case *locatedError:
			return err
		case *FieldError:
			return &locatedError{msg: c.Locate(e.Path) + ": " + e.Error(), err: err}
		case interface{ Unwrap() []error }:
			errs := e.Unwrap()
			out := make([]error, len(errs))
			changed := false
			for i, e := range errs {
				out[i] = c.Error(e)
				changed = changed || out[i] != e
			}
			if !changed {
				return err
			}
			return errors.Join(out...)
		}
	}
	return err
}

// locatedError is an error whose message names the file and line; it wraps
// the original error for errors.Is and errors.As.
type locatedError struct {
	msg string
	err error
}

func (e *locatedError) Error() string { return e.msg }
func (e *locatedError) Unwrap() error { return e.err }

// Path resolves a path written in the configuration: relative paths are
// joined to Dir, absolute ones are only cleaned, and "" stays "".
func (c *Config) Path(p string) string {
	if p == "" {
		return ""
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(c.Dir, p)
}
