package httpauthz

import (
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/modelguard/modelguard/policy"
)

// Response headers of the HTTP authorization service.
const (
	// headersToRemove lists, on an allow, the request headers Envoy
	// removes before the upstream (the credential, client-sent identity
	// headers modelguard did not set).
	headersToRemove = "x-envoy-auth-headers-to-remove"
	// errorHeader carries a denial's JSON body for nginx, which discards a
	// subrequest's body: its error_page location answers with it
	// (nginx/modelguard.conf).
	errorHeader = "x-modelguard-error"
)

// writeDecision answers with d. An allow is a 200 whose headers are the
// upstream headers (gateways copy the ones they are told to: Envoy's
// allowed_upstream_headers, nginx auth_request_set, Traefik
// authResponseHeaders, Caddy copy_headers) and the client response
// headers (x-ratelimit-*). A denial has d's status, headers and JSON body;
// for nginx the body is repeated in errorHeader.
func writeDecision(w http.ResponseWriter, d *policy.Decision, nginx bool) {
	h := w.Header()
	if d.Allow {
		for _, u := range d.UpstreamHeaders {
			h[u.Name] = append(h[u.Name], u.Value)
		}
		if len(d.RemoveHeaders) > 0 {
			h[headersToRemove] = []string{strings.Join(d.RemoveHeaders, ",")}
		}
		for _, c := range d.ResponseHeaders {
			h[c.Name] = append(h[c.Name], c.Value)
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	body := d.Body()
	for _, c := range d.DenialHeaders() {
		if c.Name == "content-type" {
			c.Name = "Content-Type" // net/http adds a sniffed one unless it sees its own spelling
		}
		h[c.Name] = append(h[c.Name], c.Value)
	}
	if nginx {
		h[errorHeader] = []string{asciiJSON(body)}
	}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(d.Status)
	w.Write(body)
}

// asciiJSON returns body with every non-ASCII character escaped as
// \uXXXX, so that it travels safely as a header value (a policy's message
// may hold any text). encoding/json has no such option. Outside strings a
// JSON document is ASCII, so the result is the same document.
func asciiJSON(body []byte) string {
	var b strings.Builder
	b.Grow(len(body))
	for i := 0; i < len(body); {
		c := body[i]
		if c < utf8.RuneSelf {
			b.WriteByte(c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(body[i:])
		i += n
		if r > 0xFFFF {
			r -= 0x10000
			writeEscape(&b, 0xD800+(r>>10))
			r = 0xDC00 + r&0x3FF
		}
		writeEscape(&b, r)
	}
	return b.String()
}

func writeEscape(b *strings.Builder, r rune) {
	const hex = "0123456789abcdef"
	b.WriteString(`\u`)
	b.WriteByte(hex[r>>12&0xF])
	b.WriteByte(hex[r>>8&0xF])
	b.WriteByte(hex[r>>4&0xF])
	b.WriteByte(hex[r&0xF])
}
