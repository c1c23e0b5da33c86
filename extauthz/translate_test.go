package extauthz

import (
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/modelguard/modelguard/policy"
)

func TestToRequest(t *testing.T) {
	body := `{"model":"m"}`
	mk := func(raw bool, max int) *authv3.CheckRequest {
		r := httptest.NewRequest("POST", "/v1/chat/completions?x=1&y=2", strings.NewReader(body))
		r.Host = "models.example:8443"
		r.RemoteAddr = "10.0.0.7:51000"
		r.Header.Add("X-Request-Id", "rid-1")
		r.Header.Add("X-Multi", "a")
		r.Header.Add("X-Multi", "b")
		r.Header.Set("X-Envoy-Auth-Partial-Body", "false") // client-sent: Envoy strips it
		return CheckRequestFromHTTP(r, []byte(body), EnvoyOptions{EncodeRawHeaders: raw, WithBody: true, MaxBodyBytes: max, PackAsBytes: true, StreamID: 42})
	}
	for _, tc := range []struct {
		name      string
		cr        *authv3.CheckRequest
		body      string
		truncated bool
	}{
		{"headers map", mk(false, 0), body, false},
		{"header_map (encode_raw_headers)", mk(true, 0), body, false},
		{"truncated body", mk(false, 5), body[:5], true},
		{"truncated body, header_map", mk(true, 5), body[:5], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := toRequest(tc.cr, 1<<20)
			want := policy.Request{Gateway: "envoy", ID: "rid-1", Method: "POST", Path: "/v1/chat/completions", Query: "x=1&y=2",
				Host: "models.example:8443", Scheme: "http", SourceAddress: "10.0.0.7:51000"}
			if got.Gateway != want.Gateway || got.ID != want.ID || got.Method != want.Method || got.Path != want.Path ||
				got.Query != want.Query || got.Host != want.Host || got.Scheme != want.Scheme || got.SourceAddress != want.SourceAddress {
				t.Errorf("got %+v", got)
			}
			if string(got.Body) != tc.body || got.BodyTruncated != tc.truncated {
				t.Errorf("body %q truncated=%v, want %q %v", got.Body, got.BodyTruncated, tc.body, tc.truncated)
			}
			if got.Headers["x-multi"] != "a,b" || got.Headers[":authority"] != "models.example:8443" {
				t.Errorf("headers %v", got.Headers)
			}
		})
	}
}

func TestToRequestStringBodyAndStreamID(t *testing.T) {
	cr := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Id: "77", Method: "POST", Path: "/p#frag", Body: "hello",
		HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "X-A", Value: "1"}, {Key: "x-a", RawValue: []byte("2")}}},
	}}}}
	got := toRequest(cr, 1<<20)
	if got.ID != "77" || got.Path != "/p" || string(got.Body) != "hello" || got.Headers["x-a"] != "1,2" {
		t.Errorf("got %+v", got)
	}
}

func TestCheckRequestFromHTTPFollowsEnvoy(t *testing.T) {
	r := httptest.NewRequest("GET", "/a?b=c", nil)
	r.Header.Set("X-Bad", "ok\xffok")
	cr := CheckRequestFromHTTP(r, nil, EnvoyOptions{})
	h := cr.GetAttributes().GetRequest().GetHttp()
	if h.GetPath() != "/a?b=c" || h.GetQuery() != "" {
		t.Errorf("path %q query %q: Envoy sends the query inside path", h.GetPath(), h.GetQuery())
	}
	if got := h.GetHeaders()["x-bad"]; got != "ok!ok" {
		t.Errorf("invalid UTF-8 = %q, want each bad byte replaced by !", got)
	}
	if _, ok := h.GetHeaders()["x-envoy-auth-partial-body"]; ok {
		t.Error("partial-body header without with_request_body")
	}
	for _, k := range []string{":authority", ":method", ":path", ":scheme"} {
		if _, ok := h.GetHeaders()[k]; !ok {
			t.Errorf("missing pseudo-header %s", k)
		}
	}
}

func TestToResponse(t *testing.T) {
	allow := toResponse(&policy.Decision{ID: "d1", Allow: true, Status: 200, Reason: "allowed", PolicyRevision: "rev",
		UpstreamHeaders: []policy.Header{{Name: "x-modelguard-subject", Value: "alice"}},
		RemoveHeaders:   []string{"authorization"},
		ResponseHeaders: []policy.Header{{Name: "ratelimit-remaining", Value: "9"}},
		Identity:        &policy.Identity{Subject: "alice"}})
	if allow.GetStatus().GetCode() != 0 {
		t.Fatalf("allow status %v", allow.GetStatus())
	}
	ok := allow.GetOkResponse()
	if h := ok.GetHeaders()[0]; h.GetHeader().GetKey() != "x-modelguard-subject" || h.GetAppend() == nil || h.GetAppend().GetValue() {
		t.Errorf("upstream header must set append=false explicitly: %v", h)
	}
	if ok.GetHeadersToRemove()[0] != "authorization" || ok.GetResponseHeadersToAdd()[0].GetHeader().GetKey() != "ratelimit-remaining" {
		t.Errorf("ok response %v", ok)
	}
	md := allow.GetDynamicMetadata().GetFields()
	if md["decision_id"].GetStringValue() != "d1" || md["reason"].GetStringValue() != "allowed" || md["policy_revision"].GetStringValue() != "rev" || md["subject"].GetStringValue() != "alice" {
		t.Errorf("metadata %v", md)
	}

	for _, tc := range []struct {
		status int
		code   int32
	}{{401, 16}, {403, 7}, {400, 7}, {413, 7}, {429, 7}, {503, 7}} {
		d := &policy.Decision{ID: "d2", Status: tc.status, Reason: "secret_reason", Message: "denied"}
		resp := toResponse(d)
		den := resp.GetDeniedResponse()
		if resp.GetStatus().GetCode() != tc.code || int(den.GetStatus().GetCode()) != tc.status {
			t.Errorf("%d: grpc %d http %d", tc.status, resp.GetStatus().GetCode(), den.GetStatus().GetCode())
		}
		if den.GetHeaders()[0].GetHeader().GetKey() != "content-type" || den.GetHeaders()[0].GetHeader().GetValue() != "application/json" {
			t.Errorf("%d: content-type not set: %v", tc.status, den.GetHeaders())
		}
		if !strings.Contains(den.GetBody(), `"error":{"message":"denied"`) || strings.Contains(den.GetBody(), "secret_reason") {
			t.Errorf("%d: body %s", tc.status, den.GetBody())
		}
		if resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue() != "secret_reason" {
			t.Errorf("%d: deny metadata lacks the reason", tc.status)
		}
	}
}

// TestBodyFlags: what the partial-body header, content-length and the
// body's size say about the body Envoy sent (docs/envoy-ext-authz.md).
func TestBodyFlags(t *testing.T) {
	const max = 100
	for _, tc := range []struct {
		name               string
		headers            map[string]string
		n                  int
		truncated, omitted bool
	}{
		{"whole body", map[string]string{partialBodyHeader: "false", "content-length": "10"}, 10, false, false},
		{"cut, flagged true", map[string]string{partialBodyHeader: "true", "content-length": "500"}, max, true, false},
		{"buffer full exactly at the limit: false, but shorter than content-length", map[string]string{partialBodyHeader: "false", "content-length": "500"}, max, true, false},
		{"chunked, exactly the limit: possibly cut", map[string]string{partialBodyHeader: "false", "transfer-encoding": "chunked"}, max, true, false},
		{"chunked, under the limit", map[string]string{partialBodyHeader: "false", "transfer-encoding": "chunked"}, max - 1, false, false},
		{"unparsable content-length", map[string]string{partialBodyHeader: "false", "content-length": "x"}, 10, true, false},
		{"empty POST: no header, content-length 0", map[string]string{"content-length": "0"}, 0, false, false},
		{"no body at all", map[string]string{}, 0, false, false},
		{"body not forwarded (with_request_body off)", map[string]string{"content-length": "10"}, 0, false, true},
		{"chunked body not forwarded", map[string]string{"transfer-encoding": "chunked"}, 0, false, true},
	} {
		if got := bodyCut(tc.headers, tc.n, max); got != tc.truncated {
			t.Errorf("%s: truncated %v", tc.name, got)
		}
		if got := tc.headers[partialBodyHeader] == "" && bodySent(tc.headers); got != tc.omitted {
			t.Errorf("%s: omitted %v", tc.name, got)
		}
	}
}
