package kongharness

import (
	"fmt"
	"strings"

	"github.com/modelguard/modelguard/test/gatewaypath"
)

// NormalizePath is kong.request.get_path since Kong 3.0: the raw path
// normalised by kong/tools/uri.lua normalize(path, true). Escaped reserved
// characters (RFC 3986 gen-delims and sub-delims, and %) stay escaped with
// upper-case hex (so %2f becomes %2F), every other escape is decoded, dot
// segments are resolved and runs of slashes merged. The router forwards
// this same path (re-escaped by Escape). Hand-written: the harness must
// transform paths exactly as Kong does, and no Go library follows Kong's
// rules.
func NormalizePath(raw string) string {
	if raw == "" || raw == "/" {
		return raw
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if v, ok := gatewaypath.Escaped(raw, i); ok {
			if strings.IndexByte(reservedChars, v) >= 0 {
				b.WriteString(strings.ToUpper(raw[i : i+3]))
			} else {
				b.WriteByte(v)
			}
			i += 2
			continue
		}
		b.WriteByte(raw[i])
	}
	return removeDots(b.String())
}

// reservedChars are those Kong keeps escaped.
const reservedChars = "!*'();:@&=+$,/?%#[]"

// removeDots is the segment loop of Kong's normalize with merge_slashes.
func removeDots(uri string) string {
	var out []string
	for len(uri) > 0 {
		switch {
		case uri == "/.":
			uri = "/"
		case uri == "/..":
			uri = "/"
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case uri == "." || uri == "..":
			uri = ""
		case strings.HasPrefix(uri, "../"):
			uri = uri[3:]
		case strings.HasPrefix(uri, "./"):
			uri = uri[2:]
		case strings.HasPrefix(uri, "/./"):
			uri = uri[2:]
		case strings.HasPrefix(uri, "/../"):
			uri = uri[3:]
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case strings.HasPrefix(uri, "//"):
			uri = uri[1:]
		default:
			i := strings.IndexByte(uri[1:], '/')
			if i < 0 {
				out = append(out, uri)
				uri = ""
			} else {
				out = append(out, uri[:i+1])
				uri = uri[i+1:]
			}
		}
	}
	return strings.Join(out, "")
}

// Escape is kong/tools/uri.lua escape: what the router sends upstream
// escapes every byte outside the reserved and unreserved sets.
func Escape(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&'()*+,/:;=?@[]-_.~%", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}
