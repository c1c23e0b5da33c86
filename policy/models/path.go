package models

import (
	"net/http"
	"strings"

	"github.com/modelguard/modelguard/policy/body"
)

// The path rule. Model routes are matched on the path as Envoy's
// normalize_path and merge_slashes leave it (normalizePath): those forms
// are the same resource by RFC 3986, so //v1/chat/completions,
// /v1/./chat/completions or /v1/chat/%63ompletions is the model request and
// its body is checked. A POST whose path a lenient server could still route
// to a model API, though it is not one of those forms, is refused with 400
// route_ambiguous rather than passed on unchecked: a different letter case
// (/V1/...), a trailing "/", ";params", an encoded or back slash (%2F, %5C,
// \), a double encoding, or the method spelled "post". Which route such a
// path reaches is the upstream's choice, so it cannot be checked as a
// particular model request; OpenAI-style clients never send these forms.
// The rule runs on the core's side of both adapters, so Envoy and Kong
// requests get it alike, whatever the gateway normalised before (see
// docs/security-pitfalls.md, Paths).

// normalizePath returns p with percent-encoded unreserved characters
// (RFC 3986 section 2.3) decoded, other escapes in upper case, runs of "/"
// merged and "." and ".." segments removed (section 5.2.4; ".." stops at
// the root). A malformed escape is left as it is: no server decodes it into
// a model path.
func normalizePath(p string) string {
	if !needsNormalizing(p) {
		return p
	}
	b := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]) {
			if d := unhex(p[i+1])<<4 | unhex(p[i+2]); isUnreserved(d) {
				b = append(b, d)
			} else {
				b = append(b, '%', upperHex(p[i+1]), upperHex(p[i+2]))
			}
			i += 2
			continue
		}
		b = append(b, c)
	}
	return removeDotSegments(string(b))
}

// needsNormalizing is normalizePath's fast path: most paths have no
// escape, empty segment or dot segment.
func needsNormalizing(p string) bool {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%':
			return true
		case '/':
			if i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.') {
				return true
			}
		}
	}
	return false
}

// removeDotSegments merges empty segments and resolves "." and "..",
// keeping a trailing "/".
func removeDotSegments(p string) string {
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case "", ".":
			trailing = last
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = last
		default:
			out = append(out, s)
			trailing = false
		}
	}
	n := "/" + strings.Join(out, "/")
	if trailing && len(out) > 0 {
		n += "/"
	}
	return n
}

// lenientPath is the path as the most lenient server would route it, in
// folded case: escapes decoded until none is left, "\" read as "/",
// ";params" cut from each segment, dot and empty segments resolved, no
// trailing "/".
func lenientPath(p string) string {
	for strings.IndexByte(p, '%') >= 0 {
		d := decodeAll(p)
		if d == p {
			break
		}
		p = d
	}
	p = strings.ReplaceAll(p, `\`, "/")
	if strings.IndexByte(p, ';') >= 0 {
		segs := strings.Split(p, "/")
		for i, s := range segs {
			segs[i], _, _ = strings.Cut(s, ";")
		}
		p = strings.Join(segs, "/")
	}
	p = strings.TrimSuffix(removeDotSegments(p), "/")
	return string(body.AppendFold(nil, p))
}

// decodeAll decodes every well-formed escape of p once. net/url's
// unescaping refuses a path with a malformed escape, which a lenient server
// may still serve, so escapes are decoded here, as in normalizePath (which
// must decode only some of them).
func decodeAll(p string) string {
	b := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]) {
			b = append(b, unhex(p[i+1])<<4|unhex(p[i+2]))
			i += 2
			continue
		}
		b = append(b, p[i])
	}
	return string(b)
}

// ambiguous reports whether a request that is not a model request could
// still reach a model API on a lenient server.
func (c *Catalog) ambiguous(method, path string) bool {
	if !strings.EqualFold(method, http.MethodPost) {
		return false
	}
	lp := lenientPath(path)
	for _, t := range c.lenient {
		if _, ok := t.match(lp); ok {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - ('a' - 'A')
	}
	return c
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// Canonical reports whether p is in the normal form normalizePath gives
// and no lenient server reads otherwise: no escapes, no empty or dot
// segments, no "\" and no ";". Settings that match paths exactly (dry-run)
// match only such paths, so that another spelling of a path is never taken
// for it.
func Canonical(p string) bool {
	return !needsNormalizing(p) && !strings.ContainsAny(p, `\;`) && !strings.HasSuffix(p, "/.") && !strings.HasSuffix(p, "/..")
}
