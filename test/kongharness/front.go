package kongharness

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
)

// DefaultBufferSize is Kong's client_body_buffer_size (8k): larger bodies
// reach plugins as a file path.
const DefaultBufferSize = 8 << 10

// Front is an HTTP proxy standing in for Kong with one route whose plugin
// is the plugin under test: the access event, then the upstream (unless the
// plugin exited), then the log event. Serve it with httptest.NewServer.
type Front struct {
	Kong *Kong
	// BufferSize is client_body_buffer_size; bodies over it are written to
	// SpillDir and passed as a file path.
	BufferSize int
	SpillDir   string
	// Done, when set, receives every exchange when its events are over,
	// before the client gets the response.
	Done func(*Exchange, Result)

	mu       sync.Mutex
	plugin   PluginConf
	upstream *url.URL
	prepare  func(*Request)
	client   http.Client
}

// Result is what happened to one request.
type Result struct {
	Access, Log Outcome
	Status      int
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

// Plugin returns the current plugin configuration.
func (f *Front) Plugin() PluginConf {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.plugin
}

func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	req := Request{Method: r.Method, Scheme: "http", Host: r.Host, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Header: r.Header.Clone(), Body: body, ClientIP: ip}
	req.Header.Set("Host", r.Host) // nginx lists it with the other headers
	if len(body) > f.BufferSize {
		if req.BodyFile, err = Spill(f.SpillDir, body); err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
	}
	f.mu.Lock()
	pc, upstream, prepare := f.plugin, f.upstream, f.prepare
	f.mu.Unlock()
	if prepare != nil {
		prepare(&req)
	}
	x := NewExchange(req)
	res := Result{Access: f.Kong.HandleEvent(pc, "access", x)}

	hdr := http.Header{}
	var respBody []byte
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
	default:
		res.Status, hdr, respBody = f.forward(r, x, upstream)
		for k, vs := range x.ResponseHeader {
			hdr[k] = vs
		}
	}

	x.mu.Lock()
	x.Status = res.Status
	x.mu.Unlock()
	// Kong runs the log phase in a timer once the response is sent; it runs
	// before the response here so that a test holding the response can read
	// what the log phase wrote (the audit trail).
	res.Log = f.Kong.HandleEvent(pc, "log", x)

	if f.Done != nil {
		f.Done(x, res) // before the response: the client may look for it at once
	}
	for k, vs := range hdr {
		w.Header()[k] = vs
	}
	w.WriteHeader(res.Status)
	w.Write(respBody)
}

// forward sends the request as the plugin left it to the upstream.
func (f *Front) forward(r *http.Request, x *Exchange, upstream *url.URL) (int, http.Header, []byte) {
	u := *upstream
	u.Path, u.RawQuery = r.URL.Path, r.URL.RawQuery
	out, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), bytes.NewReader(x.Req.Body))
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
