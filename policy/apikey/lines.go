package apikey

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
)

// The line format: one key per line, fields separated by spaces or tabs,
//
//	sha256:<64 hex> <id> <subject> [roles=<role>,<role>] [expires=<RFC 3339>] [disabled]
//
// Blank lines and lines whose first non-blank character is # are ignored.
// A subject cannot hold whitespace here (use YAML for such a subject). The
// file must end with a newline, so that a file read while a line is being
// appended is refused rather than read with a cut-off last line.
const lineSyntax = "want: sha256:<64 hex> <id> <subject> [roles=<a,b>] [expires=<RFC 3339>] [disabled]"

// maxLineBytes bounds one line; an entry is far shorter. minLineBytes is
// about the shortest useful line (a hash, a short id and subject, roles),
// to estimate the number of keys from the size of a file.
const (
	maxLineBytes = 16 << 10
	minLineBytes = 96
)

// parseLines streams a line-format file: it holds one line at a time, and a
// line equal to a key in force allocates nothing. When the file is prev's
// content with lines appended, as keys mint -file and echo >> leave it,
// only the appended lines are parsed.
func parseLines(name string, r io.Reader, size int64, h hash.Hash, prev *Set) (*Set, [32]byte, error) {
	b := newBuilder(name, prev, int(size/minLineBytes))
	n := int32(0)
	read := int64(0) // bytes parsed, to be the next reload's prefix
	appended, err := unchangedPrefix(r, size, h, prev)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("read key file: %w", err)
	}
	if appended {
		b.keepAll()
		n, read = prev.lines, prev.size
	}
	br := bufio.NewReaderSize(io.TeeReader(r, h), maxLineBytes)
	var errs []*ParseError
	var e record
	for {
		raw, err := br.ReadSlice('\n')
		read += int64(len(raw))
		if len(raw) > 0 || err == nil {
			n++
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			errs = append(errs, &ParseError{File: name, Line: int(n), Msg: fmt.Sprintf("line longer than %d bytes", maxLineBytes)})
			for errors.Is(err, bufio.ErrBufferFull) {
				raw, err = br.ReadSlice('\n')
				read += int64(len(raw))
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, [32]byte{}, fmt.Errorf("read key file: %w", err)
			}
			continue
		case errors.Is(err, io.EOF):
			if len(raw) > 0 {
				errs = append(errs, &ParseError{File: name, Line: int(n), Msg: "no newline at the end of the file (is it still being written?)"})
			}
		case err != nil:
			return nil, [32]byte{}, fmt.Errorf("read key file: %w", err)
		default:
			if msg := parseLine(raw, n, &e); msg != "" {
				errs = append(errs, &ParseError{File: name, Line: int(n), Msg: msg})
			} else if e.id != nil && !b.match(&e) {
				if msg := e.check(); msg != "" {
					errs = append(errs, &ParseError{File: name, Line: int(n), Msg: msg})
				} else {
					b.add(&e)
				}
			}
			continue
		}
		break
	}
	sum := [32]byte(h.Sum(nil))
	if n == 0 {
		return nil, sum, &ParseError{File: name, Msg: "empty file: want one key per line (a comment line for none)"}
	}
	set, berrs := b.finish(sum)
	if errs = append(errs, berrs...); len(errs) > 0 {
		return nil, sum, problems(name, errs)
	}
	set.size, set.lines = read, n
	return set, sum, nil
}

// unchangedPrefix reports whether the file r (of size bytes) starts with
// the content prev was loaded from, having hashed that much of it into h.
// Otherwise r and h are back at the start. SHA-256 telling the prefix is
// the same content is what Revision and every key's identity rest on.
func unchangedPrefix(r io.Reader, size int64, h hash.Hash, prev *Set) (bool, error) {
	rs, ok := r.(io.ReadSeeker)
	if !ok || prev == nil || prev.size == 0 || size <= prev.size {
		return false, nil
	}
	if _, err := io.CopyN(h, rs, prev.size); err != nil {
		return false, err
	}
	if [32]byte(h.Sum(nil)) == prev.sum {
		return true, nil
	}
	h.Reset()
	_, err := rs.Seek(0, io.SeekStart)
	return false, err
}

// parseLine splits one line into e, whose text fields then point into raw.
// A comment or blank line leaves e.id nil. It returns a problem with the
// line's structure; the values of id, subject and roles are checked by
// record.check, only for entries that are not already in force.
func parseLine(raw []byte, n int32, e *record) string {
	line := bytes.TrimSuffix(bytes.TrimSuffix(raw, []byte{'\n'}), []byte{'\r'})
	*e = record{origin: origin{idLine: n, hashLine: n, index: -1}}
	var f [3][]byte
	nf := 0
	seenRoles, seenExpires := false, false
	for rest := line; ; {
		var field []byte
		if field, rest = nextField(rest); field == nil {
			break
		}
		if nf == 0 && field[0] == '#' {
			return ""
		}
		if nf < len(f) {
			f[nf] = field
			nf++
			continue
		}
		switch {
		case bytes.HasPrefix(field, []byte("roles=")) && !seenRoles:
			seenRoles = true
			e.roles = field[len("roles="):]
			if len(e.roles) == 0 {
				return "roles: empty (omit roles= for none)"
			}
		case bytes.HasPrefix(field, []byte("expires=")) && !seenExpires:
			seenExpires = true
			if err := e.expires.UnmarshalText(field[len("expires="):]); err != nil {
				return "expires: not an RFC 3339 time such as 2027-01-01T00:00:00Z"
			}
		case string(field) == "disabled" && !e.disabled:
			e.disabled = true
		default:
			return fmt.Sprintf("field %d %q: unknown or repeated; %s", nf+1, truncate(field), lineSyntax)
		}
		nf++
	}
	switch {
	case nf == 0:
		return ""
	case nf < len(f):
		if bytes.HasPrefix(line, []byte("keys:")) {
			return "this looks like YAML: a YAML key file must be named *.yaml or *.yml"
		}
		return "too few fields; " + lineSyntax
	}
	d, msg := parseHash(f[0])
	if msg != "" {
		return "hash: " + msg
	}
	e.digest, e.id, e.subject = d, f[1], f[2]
	return ""
}

// check validates the values of a parsed line, as parseYAML does.
func (e *record) check() string {
	if msg := checkID(string(e.id)); msg != "" {
		return "id: " + msg
	}
	if msg := checkSubject(string(e.subject)); msg != "" {
		return "subject: " + msg
	}
	if len(e.roles) > 0 {
		for r := range strings.SplitSeq(string(e.roles), ",") {
			if msg := checkRole(r); msg != "" {
				return fmt.Sprintf("roles: role %q: %s", r, msg)
			}
		}
	}
	return ""
}

// nextField splits the first run of bytes without spaces and tabs off
// line, or returns nil when there is none.
func nextField(line []byte) (field, rest []byte) {
	i := 0
	for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
		i++
	}
	if i == len(line) {
		return nil, nil
	}
	line = line[i:]
	// IndexByte is vectorised; tabs are rare, so look for one only before
	// the next space.
	j := bytes.IndexByte(line, ' ')
	if j < 0 {
		j = len(line)
	}
	if k := bytes.IndexByte(line[:j], '\t'); k >= 0 {
		j = k
	}
	return line[:j], line[j:]
}

// truncate shortens a field quoted in an error message.
func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}
