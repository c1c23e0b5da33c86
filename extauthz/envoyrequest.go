package extauthz

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/modelguard/modelguard/policy"
)

// EnvoyOptions mirror the ext_authz filter settings that shape a CheckRequest.
type EnvoyOptions struct {
	// EncodeRawHeaders sends header_map instead of headers.
	EncodeRawHeaders bool
	// WithBody sends the body; MaxBodyBytes cuts it (allow_partial_message).
	WithBody     bool
	MaxBodyBytes int
	// PackAsBytes puts the body in raw_body instead of body.
	PackAsBytes bool
	// StreamID is Envoy's internal stream id (attributes.request.http.id).
	StreamID uint64
	// Principal is the peer certificate identity, when TLS.
	Principal string
}

// CheckRequestFromHTTP builds the CheckRequest Envoy sends for r, as
// docs/envoy-ext-authz.md describes: lower-case header keys,
// pseudo-headers, repeats joined with ",", invalid UTF-8 replaced with "!",
// path with query, the body (cut at the limit and flagged with
// x-envoy-auth-partial-body, "true" only when more was buffered than the
// limit). It serves the CLI's remote check and the test
// harness.
func CheckRequestFromHTTP(r *http.Request, body []byte, o EnvoyOptions) *authv3.CheckRequest {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	target := r.URL.RequestURI()
	h := &authv3.AttributeContext_HttpRequest{
		Id:       strconv.FormatUint(o.StreamID, 10),
		Method:   r.Method,
		Path:     target,
		Host:     r.Host,
		Scheme:   scheme,
		Protocol: r.Proto,
	}
	pseudo := [][2]string{{":authority", r.Host}, {":method", r.Method}, {":path", target}, {":scheme", scheme}}
	lines := make([][2]string, 0, len(r.Header)+len(pseudo)+1)
	lines = append(lines, pseudo...)
	for k, vs := range r.Header {
		k = strings.ToLower(k)
		if k == partialBodyHeader { // Envoy strips a client-sent copy
			continue
		}
		for _, v := range vs {
			lines = append(lines, [2]string{k, v})
		}
	}
	// Envoy adds the partial-body header only when it buffered a body: a
	// request whose headers end the stream (HTTP/1 Content-Length: 0) has
	// none, even with with_request_body on.
	if o.WithBody && (len(body) > 0 || r.ContentLength != 0) {
		b := body
		partial := false
		if o.MaxBodyBytes > 0 && len(b) > o.MaxBodyBytes {
			b, partial = b[:o.MaxBodyBytes], true
		}
		lines = append(lines, [2]string{partialBodyHeader, strconv.FormatBool(partial)})
		h.Size = int64(len(b))
		if o.PackAsBytes {
			h.RawBody = b
		} else {
			h.Body = strings.ToValidUTF8(string(b), "\uFFFD")
		}
	}
	if o.EncodeRawHeaders {
		hm := &corev3.HeaderMap{}
		for _, l := range lines {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: l[0], RawValue: []byte(l[1])})
		}
		h.HeaderMap = hm
	} else {
		h.Headers = make(map[string]string, len(lines))
		for _, l := range lines {
			policy.AddHeader(h.Headers, l[0], replaceInvalidUTF8(l[1]))
		}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:  &authv3.AttributeContext_Peer{Address: peerAddress(r.RemoteAddr), Principal: o.Principal},
		Request: &authv3.AttributeContext_Request{Http: h},
	}}
}

// replaceInvalidUTF8 replaces each invalid byte with "!", as Envoy does.
func replaceInvalidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteByte('!')
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func peerAddress(remote string) *corev3.Address {
	host, port, err := net.SplitHostPort(remote)
	if err != nil {
		return nil
	}
	p, _ := strconv.ParseUint(port, 10, 32)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
	}}}
}
