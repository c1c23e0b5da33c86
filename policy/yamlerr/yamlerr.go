// Package yamlerr finds the line of a YAML syntax error. yaml.v3 (and
// OPA's data loader, which uses it) names, for a parser error, the line
// where the enclosing collection starts counted from 0, not the line of
// the mistake: an unclosed "[" on line 27 is reported on line 26, a key
// indented one space short under a mapping that starts on line 2 as line 2.
// Its parser keeps the right position internally but does not export it,
// so Locate finds the first prefix of the document, in whole lines, that
// fails with the same message: the line that prefix ends on is the mistake.
package yamlerr

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yamlLine matches yaml.v3's "yaml: line N: message".
var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Locate returns the 1-based line of a syntax error err that parsing data
// with yaml.v3 returned, and its message without yaml's prefix. ok is
// false when err is not a positioned syntax error (a type error, an
// unknown anchor): its message is then left as it is.
func Locate(data []byte, err error) (line int, msg string, ok bool) {
	var te *yaml.TypeError
	if err == nil || errors.As(err, &te) {
		return 0, "", false
	}
	reported, msg, ok := split(err)
	if !ok {
		return 0, "", false
	}
	ends := lineEnds(data)
	// The first prefix that fails as the whole document does; a prefix
	// failing once the mistake is in it keeps failing as more lines are
	// added, so a binary search finds it in a few parses.
	n := sort.Search(len(ends), func(i int) bool {
		_, m, ok := split(parse(data[:ends[i]]))
		return ok && m == msg
	})
	if n == len(ends) {
		// Not reproduced: yaml's own line, when it gave one.
		return reported, msg, reported > 0
	}
	return n + 1, msg, true
}

// split separates yaml.v3's "line N: " from an error's message; the line
// is 0 when the message has none (an error on the first line, an unknown
// anchor).
func split(err error) (int, string, bool) {
	if err == nil {
		return 0, "", false
	}
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		msg, ok := strings.CutPrefix(err.Error(), "yaml: ")
		return 0, msg, ok
	}
	n, _ := strconv.Atoi(m[1])
	return n, m[2], true
}

// parse decodes every document in data, as the loaders do.
func parse(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// lineEnds returns the offset just past each line of data.
func lineEnds(data []byte) []int {
	var ends []int
	for i, b := range data {
		if b == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		ends = append(ends, len(data))
	}
	return ends
}
