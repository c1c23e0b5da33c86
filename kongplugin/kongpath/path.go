// Package kongpath is Kong's path normalisation (kong.request.get_path
// since Kong 3.0), for the plugin, which reads the raw path with the
// method in one PDK call, and for the Kong test harness.
package kongpath

import "strings"

// Normalize is kong.request.get_path since Kong 3.0: the raw path
// normalised by kong/tools/uri.lua normalize(path, true). Escaped reserved
// characters (RFC 3986 gen-delims and sub-delims, and %) stay escaped with
// upper-case hex (so %2f becomes %2F), every other escape is decoded, dot
// segments are resolved and runs of slashes merged. The router forwards
// this same path, re-escaped. Hand-written: it must transform paths
// exactly as Kong does, and no Go library follows Kong's rules.
func Normalize(raw string) string {
	if raw == "" || raw == "/" {
		return raw
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if raw[i] == '%' && i+2 < len(raw) && isHex(raw[i+1]) && isHex(raw[i+2]) {
			v := unhex(raw[i+1])<<4 | unhex(raw[i+2])
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

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
