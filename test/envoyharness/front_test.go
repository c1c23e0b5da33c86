package envoyharness

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// answer is an authorization server that answers every Check with resp
// and keeps the last request.
type answer struct {
	resp *authv3.CheckResponse
	last *authv3.CheckRequest
}

func (a *answer) Check(_ context.Context, in *authv3.CheckRequest, _ ...grpc.CallOption) (*authv3.CheckResponse, error) {
	a.last = in
	return a.resp, nil
}

func hv(name, value string, appendValue *bool) *corev3.HeaderValueOption {
	o := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: value}}
	if appendValue != nil {
		o.Append = wrapperspb.Bool(*appendValue)
	}
	return o
}

func allow(headers ...*corev3.HeaderValueOption) *authv3.CheckResponse {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: headers}}}
}

// seen is what the upstream received.
type seen struct {
	Path, Host string
	Header     http.Header
}

func serve(t *testing.T, f Filter, resp *authv3.CheckResponse) (string, *answer) {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-upstream", "1")
		json.NewEncoder(w).Encode(seen{r.URL.EscapedPath(), r.Host, r.Header})
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	a := &answer{resp: resp}
	front := httptest.NewServer(New(a, u, f))
	t.Cleanup(front.Close)
	return front.URL, a
}

func get(t *testing.T, base, path string, h map[string]string) (*http.Response, seen) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s seen
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 {
		json.Unmarshal(b, &s)
	}
	return resp, s
}

func TestMutations(t *testing.T) {
	yes, no := true, false
	open := Filter{}
	for _, tc := range []struct {
		name     string
		filter   Filter
		headers  []*corev3.HeaderValueOption
		status   int
		path     string
		host     string
		upstream map[string]string
	}{
		{"without rules :path is applied", open, []*corev3.HeaderValueOption{hv(":path", "/admin", &no)}, 200, "/admin", "", nil},
		{"without rules host is applied", open, []*corev3.HeaderValueOption{hv("host", "evil", &no)}, 200, "/v1/models", "evil", nil},
		{"without rules x-envoy-* is applied", open, []*corev3.HeaderValueOption{hv("x-envoy-original-path", "/x", &no)}, 200, "/v1/models", "", map[string]string{"X-Envoy-Original-Path": "/x"}},
		{"shipped rules: :path is a 500", ShippedFilter, []*corev3.HeaderValueOption{hv(":path", "/admin", &no)}, 500, "", "", nil},
		{"shipped rules: host is a 500", ShippedFilter, []*corev3.HeaderValueOption{hv("host", "evil", &no)}, 500, "", "", nil},
		{"shipped rules: x-envoy-* is a 500", ShippedFilter, []*corev3.HeaderValueOption{hv("x-envoy-upstream-rq-timeout-ms", "1", &no)}, 500, "", "", nil},
		{"shipped rules: CR LF in a value is a 500", ShippedFilter, []*corev3.HeaderValueOption{hv("x-a", "v\r\nx-b: 1", &no)}, 500, "", "", nil},
		{"shipped rules: a bad name is a 500", ShippedFilter, []*corev3.HeaderValueOption{hv("x a", "v", &no)}, 500, "", "", nil},
		{"append unset sets", ShippedFilter, []*corev3.HeaderValueOption{hv("x-client", "server", nil)}, 200, "/v1/models", "", map[string]string{"X-Client": "server"}},
		{"append true joins an existing header", ShippedFilter, []*corev3.HeaderValueOption{hv("x-client", "server", &yes)}, 200, "/v1/models", "", map[string]string{"X-Client": "client,server"}},
		{"append true skips a missing header", ShippedFilter, []*corev3.HeaderValueOption{hv("x-new", "server", &yes)}, 200, "/v1/models", "", map[string]string{"X-New": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, _ := serve(t, tc.filter, allow(tc.headers...))
			resp, s := get(t, base, "/v1/models", map[string]string{"x-client": "client"})
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status != 200 {
				return
			}
			if s.Path != tc.path || tc.host != "" && s.Host != tc.host {
				t.Errorf("upstream path %q host %q", s.Path, s.Host)
			}
			for k, v := range tc.upstream {
				if got := strings.Join(s.Header[k], ","); got != v {
					t.Errorf("upstream %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestDenialAndResponseHeaders(t *testing.T) {
	yes, no := true, false
	denied := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: 7}, HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: 429},
		Headers: []*corev3.HeaderValueOption{hv("x-a", "1", &no), hv("x-a", "2", &no), hv("x-b", "dropped", &yes)},
		Body:    `{"error":{}}`,
	}}}
	base, _ := serve(t, ShippedFilter, denied)
	resp, _ := get(t, base, "/v1/models", nil)
	if resp.StatusCode != 429 || strings.Join(resp.Header.Values("x-a"), ",") != "1,2" || resp.Header.Get("x-b") != "" {
		t.Errorf("denial %d, headers %v", resp.StatusCode, resp.Header)
	}

	ok := allow()
	ok.GetOkResponse().ResponseHeadersToAdd = []*corev3.HeaderValueOption{hv("x-upstream", "2", &no)}
	base, _ = serve(t, ShippedFilter, ok)
	resp, _ = get(t, base, "/v1/models", nil)
	if got := strings.Join(resp.Header.Values("x-upstream"), ","); got != "1,2" {
		t.Errorf("response_headers_to_add: x-upstream %q, want the upstream's value and the added one", got)
	}
}

func TestConnectionManager(t *testing.T) {
	base, a := serve(t, ShippedFilter, allow())
	for _, tc := range []struct{ path, want string }{
		{"/v1/./models", "/v1/models"},
		{"/v1/x/../models", "/v1/models"},
		{"//v1///models", "/v1/models"},
		{"/v1/%6Dodels", "/v1/models"},
		{"/v1/m%20x", "/v1/m%20x"},
		{"/v1/a/%2e%2e/models?x=/../", "/v1/models?x=/../"},
	} {
		resp, _ := get(t, base, tc.path, nil)
		if got := a.last.GetAttributes().GetRequest().GetHttp().GetPath(); resp.StatusCode != 200 || got != tc.want {
			t.Errorf("%s: status %d, ext_authz path %q, want %q", tc.path, resp.StatusCode, got, tc.want)
		}
	}
	for _, p := range []string{"/v1/a%2Fb", "/v1/a%2fb", "/v1/a%5Cb"} {
		a.last = nil
		if resp, _ := get(t, base, p, nil); resp.StatusCode != 400 || a.last != nil {
			t.Errorf("%s: status %d, checked %v", p, resp.StatusCode, a.last != nil)
		}
	}
	resp, s := get(t, base, "/v1/models", map[string]string{"x-request-id": "mine", "keep-alive": "timeout=5", "x-forwarded-proto": "https"})
	id := resp.Header.Get("x-request-id")
	h := a.last.GetAttributes().GetRequest().GetHttp().GetHeaders()
	if id == "" || id == "mine" || h["x-request-id"] != id || s.Header.Get("x-request-id") != id {
		t.Errorf("request id: response %q, ext_authz %q, upstream %q", id, h["x-request-id"], s.Header.Get("x-request-id"))
	}
	if h["keep-alive"] != "" || h["x-forwarded-proto"] != "http" || h["x-forwarded-for"] != "127.0.0.1" {
		t.Errorf("ext_authz headers %v", h)
	}
}

func TestPartialBodyHeader(t *testing.T) {
	f := ShippedFilter
	f.MaxRequestBytes = 32 << 10
	base, a := serve(t, f, allow())
	post := func(body string) map[string]string {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return a.last.GetAttributes().GetRequest().GetHttp().GetHeaders()
	}
	if h := post(""); h["x-envoy-auth-partial-body"] != "" {
		t.Errorf("no body: partial-body header %q", h["x-envoy-auth-partial-body"])
	}
	if h := post("{}"); h["x-envoy-auth-partial-body"] != "false" {
		t.Errorf("whole body: %q", h["x-envoy-auth-partial-body"])
	}
	// 16 KiB frames fill a 32 KiB buffer exactly: cut, but "false".
	h := post(strings.Repeat("x", 40<<10))
	if h["x-envoy-auth-partial-body"] != "false" || a.last.GetAttributes().GetRequest().GetHttp().GetSize() != 32<<10 {
		t.Errorf("exact fill: %q, size %d", h["x-envoy-auth-partial-body"], a.last.GetAttributes().GetRequest().GetHttp().GetSize())
	}
	f.MaxRequestBytes = 20 << 10
	base, a = serve(t, f, allow())
	if h := post(strings.Repeat("x", 40<<10)); h["x-envoy-auth-partial-body"] != "true" {
		t.Errorf("overfull buffer: %q", h["x-envoy-auth-partial-body"])
	}
}
