package kongharness

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultBufferSize is Kong's client_body_buffer_size (8k): larger bodies
// reach plugins as a file path.
const DefaultBufferSize = 8 << 10

// Front is an HTTP proxy standing in for Kong with one route whose plugins
// are the plugin under test and, optionally, Kong's acl after it: the
// access events, then the upstream (unless a plugin exited), then the
// response, and then, as Kong does in a timer, the log event. Serve it with
// httptest.NewServer.
type Front struct {
	Kong *Kong
	// BufferSize is client_body_buffer_size; bodies over it are written to
	// SpillDir and passed as a file path.
	BufferSize int
	SpillDir   string
	// Done, when set, receives every exchange once its log event is over,
	// which is after the client got the response.
	Done func(*Exchange, Result)
	// Phases are the plugin's phases as its -dump lists them (Kong's
	// query_cmd). With "response", Kong buffers the whole upstream
	// response (kong/runloop/plugins_iterator.lua sets
	// ctx.buffered_proxying for any plugin with a response handler) and
	// runs the response event before anything reaches the client.
	Phases []string

	mu       sync.Mutex
	plugin   PluginConf
	acl      *ACL
	realIP   RealIP
	verify   *ClientVerify
	upstream *url.URL
	prepare  func(*Request)
	client   http.Client
	logs     sync.WaitGroup
}

// RealIP is Kong's trusted_ips, real_ip_header and real_ip_recursive
// (nginx's realip module): kong.client.get_forwarded_ip is the address the
// header names when the peer is trusted; kong.client.get_ip is always the
// peer.
type RealIP struct {
	Trusted   []netip.Prefix
	Header    string // default X-Real-IP
	Recursive bool
}

// Result is what happened to one request.
type Result struct {
	Access, Response, Log Outcome
	Status                int
}

// NewFront returns a Front for k and upstream with plugin configuration pc.
func NewFront(k *Kong, upstream *url.URL, pc PluginConf, spillDir string) *Front {
	return &Front{Kong: k, upstream: upstream, BufferSize: DefaultBufferSize, SpillDir: spillDir, plugin: pc}
}

// SetUpstream replaces the service's upstream.
func (f *Front) SetUpstream(u *url.URL) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.upstream = u
}

// SetPrepare sets a function that may change each request before its
// events (tests make a spilled body unreadable, or Kong fail to read it);
// nil removes it.
func (f *Front) SetPrepare(prepare func(*Request)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prepare = prepare
}

// SetPlugin replaces the route's plugin configuration (an admin change:
// give it a new Seq, and Kong starts a new instance and closes the old).
func (f *Front) SetPlugin(pc PluginConf) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.plugin = pc
}

// SetACL puts Kong's acl plugin on the route (nil removes it).
func (f *Front) SetACL(a *ACL) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acl = a
}

// SetRealIP sets Kong's real IP settings.
func (f *Front) SetRealIP(r RealIP) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.realIP = r
}

// SetClientVerify makes the front verify client certificates as nginx's
// ssl_verify_client (optional or optional_no_ca) does, for requests it
// serves over TLS (httptest's StartTLS, asking for client certificates
// with tls.RequestClientCert); nil: no certificate is asked for.
func (f *Front) SetClientVerify(v *ClientVerify) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.verify = v
}

// Plugin returns the current plugin configuration.
func (f *Front) Plugin() PluginConf {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.plugin
}

// Wait waits for the log events of the requests answered so far.
func (f *Front) Wait() { f.logs.Wait() }

func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	pc, acl, realIP, upstream, prepare, verify := f.plugin, f.acl, f.realIP, f.upstream, f.prepare, f.verify
	f.mu.Unlock()

	rawPath, rawQuery, _ := strings.Cut(r.RequestURI, "?")
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	// nginx runs with underscores_in_headers on: Go's server keeps such
	// names as sent, and nothing folds "_" into "-".
	req := Request{Method: r.Method, Scheme: "http", Host: r.Host, RawPath: rawPath, Path: NormalizePath(rawPath), RawQuery: rawQuery,
		Header: r.Header.Clone(), Body: body, ClientIP: ip, ForwardedIP: realIP.forwarded(ip, r.Header)}
	req.Header.Set("Host", r.Host) // nginx lists it with the other headers
	if r.TLS != nil {
		req.Scheme = "https"
		ct := ClientTLS{Verify: "NONE"}
		if verify != nil {
			if ct, err = verify.nginxTLS(r.TLS, time.Now()); err != nil {
				// nginx: "400 The SSL certificate error", before any plugin.
				w.WriteHeader(http.StatusBadRequest)
				return
			}
		}
		req.TLS = &ct
	}
	if len(body) > f.BufferSize {
		if req.BodyFile, err = Spill(f.SpillDir, body); err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
	}
	if prepare != nil {
		prepare(&req)
	}
	x := NewExchange(req)
	res := Result{Access: f.Kong.HandleEvent(pc, "access", x)}

	hdr := http.Header{}
	var respBody []byte
	var denied *aclDenial
	if res.Access.Err == nil && !res.Access.Exited && acl != nil {
		denied = acl.access(x)
	}
	switch {
	case res.Access.Err != nil:
		// Kong >= 3.8: a plugin server error is a 500 (older Kong proxied the request).
		res.Status = http.StatusInternalServerError
		hdr.Set("content-type", "application/json; charset=utf-8")
		respBody = []byte(`{"message":"An unexpected error occurred"}`)
	case res.Access.Exited:
		res.Status, respBody = x.Exit.Status, x.Exit.Body
		for k, vs := range x.Exit.Header {
			hdr[k] = vs
		}
	case denied != nil:
		res.Status, respBody = denied.status, []byte(denied.body)
		hdr.Set("content-type", "application/json; charset=utf-8")
	default:
		res.Status, hdr, respBody = f.forward(r, x, upstream)
		// Kong turns buffering, and with it the response phase, off for
		// HTTP/2 and upgraded connections (Kong.access in kong/init.lua).
		if slices.Contains(f.Phases, "response") && r.ProtoMajor < 2 && r.Header.Get("Upgrade") == "" {
			x.mu.Lock()
			x.Status, x.Service = res.Status, &ServiceResponse{Status: res.Status, Header: hdr, Body: respBody}
			x.mu.Unlock()
			if res.Response = f.Kong.HandleEvent(pc, "response", x); res.Response.Err != nil {
				// As in access: Kong answers a failed plugin with a 500.
				res.Status, hdr = http.StatusInternalServerError, http.Header{"Content-Type": {"application/json; charset=utf-8"}}
				respBody = []byte(`{"message":"An unexpected error occurred"}`)
			}
		}
		for k, vs := range x.ResponseHeader {
			hdr[k] = vs
		}
	}

	x.mu.Lock()
	x.Status = res.Status
	x.mu.Unlock()
	for k, vs := range hdr {
		w.Header()[k] = vs
	}
	w.WriteHeader(res.Status)
	w.Write(respBody)

	// Kong runs the log phase in a timer once the response is sent: the
	// client may hold its answer before the log phase (and the audit
	// record) has run.
	f.logs.Add(1)
	go func() {
		defer f.logs.Done()
		res.Log = f.Kong.HandleEvent(pc, "log", x)
		if f.Done != nil {
			f.Done(x, res)
		}
	}()
}

// forwarded is what nginx's realip module makes of the peer address ip.
func (r RealIP) forwarded(ip string, h http.Header) string {
	peer, err := netip.ParseAddr(ip)
	if err != nil || !r.trusted(peer) {
		return ip
	}
	name := r.Header
	if name == "" {
		name = "X-Real-IP"
	}
	var list []string
	for _, v := range h.Values(name) {
		for _, a := range strings.Split(v, ",") {
			list = append(list, strings.TrimSpace(a))
		}
	}
	for i := len(list) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(list[i])
		if err != nil {
			return ip
		}
		if !r.Recursive || !r.trusted(a) || i == 0 {
			return a.String()
		}
	}
	return ip
}

func (r RealIP) trusted(a netip.Addr) bool {
	for _, p := range r.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forward sends the request as the plugin left it to the upstream, on the
// normalised path (re-escaped), as Kong's router does.
func (f *Front) forward(r *http.Request, x *Exchange, upstream *url.URL) (int, http.Header, []byte) {
	target := upstream.Scheme + "://" + upstream.Host + Escape(x.Req.Path)
	if x.Req.RawQuery != "" {
		target += "?" + x.Req.RawQuery
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, target, bytes.NewReader(x.Req.Body))
	if err != nil {
		return http.StatusBadGateway, http.Header{}, nil
	}
	x.mu.Lock()
	out.Header = x.Upstream.Clone()
	x.mu.Unlock()
	out.Host = out.Header.Get("Host")
	out.Header.Del("Host")
	resp, err := f.client.Do(out)
	if err != nil {
		return http.StatusBadGateway, http.Header{}, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}
