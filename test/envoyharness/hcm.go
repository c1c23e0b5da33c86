package envoyharness

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/uuid"

	"github.com/modelguard/modelguard/test/gatewaypath"
)

// EscapedSlashes is the connection manager's path_with_escaped_slashes_action.
type EscapedSlashes int

const (
	KeepUnchanged EscapedSlashes = iota
	RejectRequest
	UnescapeAndRedirect
	UnescapeAndForward
)

// ConnectionManager mirrors the http_connection_manager settings that change
// a request before any HTTP filter (ext_authz included) sees it
// (source/common/http/conn_manager_utility.cc).
type ConnectionManager struct {
	NormalizePath  bool
	MergeSlashes   bool
	EscapedSlashes EscapedSlashes
	// PreserveExternalRequestID keeps a client's x-request-id; Envoy's
	// default replaces it on edge requests (no client is internal).
	PreserveExternalRequestID bool
	// AlwaysSetRequestIDInResponse copies x-request-id to the response.
	AlwaysSetRequestIDInResponse bool
}

// ShippedHCM is the connection manager of envoy/envoy.yaml.
var ShippedHCM = ConnectionManager{NormalizePath: true, MergeSlashes: true, EscapedSlashes: RejectRequest, AlwaysSetRequestIDInResponse: true}

// hopByHop are the connection-specific headers Envoy drops from requests
// (and the codec never hands to filters).
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"}

// prepare does to r what the connection manager does before the filter
// chain: it returns the normalised request target, or ok false when Envoy
// answers 400 itself (maybeNormalizePath's Reject) or redirects.
func (cm ConnectionManager) prepare(r *http.Request) (target string, status int) {
	target = r.RequestURI
	path, query, hasQuery := strings.Cut(target, "?")
	if strings.Contains(target, "#") {
		return "", http.StatusBadRequest // http_reject_path_with_fragment
	}
	if cm.EscapedSlashes != KeepUnchanged {
		if unescaped, found := unescapeSlashes(path); found {
			switch cm.EscapedSlashes {
			case RejectRequest:
				return "", http.StatusBadRequest
			case UnescapeAndRedirect:
				status = http.StatusTemporaryRedirect
			}
			path = unescaped
		}
	}
	if cm.NormalizePath {
		path = canonicalPath(path)
	}
	if cm.MergeSlashes {
		path = mergeSlashes(path)
	}
	if hasQuery {
		path += "?" + query
	}
	return path, status
}

// headers applies the connection manager's request header changes:
// hop-by-hop headers dropped, x-forwarded-for appended with the peer
// (use_remote_address: true), x-forwarded-proto set, x-request-id replaced
// by Envoy's own unless preserved. It returns the request id.
func (cm ConnectionManager) headers(h http.Header, peer, scheme string) string {
	for _, name := range h.Values("Connection") {
		for _, n := range strings.Split(name, ",") {
			h.Del(strings.TrimSpace(n))
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
	if te := h.Get("Te"); te != "" && !strings.EqualFold(strings.TrimSpace(te), "trailers") {
		h.Del("Te")
	}
	ip, _, err := net.SplitHostPort(peer)
	if err != nil {
		ip = peer
	}
	if xff := h.Get("X-Forwarded-For"); xff != "" {
		h.Set("X-Forwarded-For", xff+","+ip)
	} else {
		h.Set("X-Forwarded-For", ip)
	}
	h.Set("X-Forwarded-Proto", scheme)
	id := h.Get("X-Request-Id")
	if id == "" || !cm.PreserveExternalRequestID {
		id = uuid.NewString() // Envoy's request id: a random UUID
		h.Set("X-Request-Id", id)
	}
	return id
}

// unescapeSlashes is PathUtil::unescapeSlashes: %2F and %5C (any case)
// become / and \.
func unescapeSlashes(path string) (string, bool) {
	var b strings.Builder
	found := false
	for i := 0; i < len(path); i++ {
		if path[i] == '%' && i+2 < len(path) {
			switch strings.ToUpper(path[i+1 : i+3]) {
			case "2F":
				b.WriteByte('/')
				i += 2
				found = true
				continue
			case "5C":
				b.WriteByte('\\')
				i += 2
				found = true
				continue
			}
		}
		b.WriteByte(path[i])
	}
	return b.String(), found
}

// canonicalPath is normalize_path: Envoy's PathUtil::canonicalPath, which
// runs Chromium's URL path canonicaliser: backslashes become slashes,
// escaped unreserved characters are decoded (other escapes kept), bytes
// that may not appear in a path are escaped, and dot segments (also
// escaped ones) are resolved. Hand-written: no Go library reproduces
// Chromium's rules, and the harness must transform paths as Envoy does.
func canonicalPath(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		v, escaped := gatewaypath.Escaped(path, i)
		switch {
		case c == '\\':
			b.WriteByte('/')
		case escaped:
			if unreserved(v) {
				b.WriteByte(v)
			} else {
				b.WriteString(path[i : i+3])
			}
			i += 2
		case c <= 0x20 || c >= 0x7f || strings.IndexByte("\"<>`{}|^", c) >= 0:
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return removeDotSegments(b.String())
}

// removeDotSegments is RFC 3986 5.2.4.
func removeDotSegments(path string) string {
	segs := strings.Split(path, "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	p := strings.Join(out, "/")
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

// mergeSlashes is merge_slashes: runs of / in the path become one.
func mergeSlashes(path string) string {
	for strings.Contains(path, "//") {
		path = strings.ReplaceAll(path, "//", "/")
	}
	return path
}

func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
