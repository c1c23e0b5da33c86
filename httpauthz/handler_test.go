package httpauthz

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelguard/modelguard/httpauthz/httpsettings"
	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/test/testkit"
	"github.com/modelguard/modelguard/test/testkit/demo"
)

const chatBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}],"max_tokens":64}`

// fixture is a real engine (demo configuration, example policy, minted
// keys) behind the handler on a real HTTP server.
type fixture struct {
	url     string
	keys    map[string]string
	audit   *testkit.EventLog[audit.Event]
	metrics *metrics.Metrics
	engine  *policy.Engine
}

var (
	reader = demo.Key{ID: "reader-key", Subject: "rita", Roles: []string{"reader"}}
	admin  = demo.Key{ID: "admin-key", Subject: "ada", Roles: []string{"admin"}}
)

func newFixture(t *testing.T, withoutBody string, wrap func(*policy.Engine) Decider) *fixture {
	t.Helper()
	dir := demo.Dir(t)
	f := &fixture{keys: demo.WriteKeys(t, dir, "mg_test_", demo.Alice, reader, admin),
		audit: &testkit.EventLog[audit.Event]{}, metrics: metrics.New(nil)}
	cfg, err := config.Parse([]byte(demo.Config+"request_body: {max_bytes: 4096}\n"), "config.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.engine, err = policy.New(ctx, cfg, policy.Options{Metrics: f.metrics, Audit: f.audit})
	if err != nil {
		t.Fatal(err)
	}
	var d Decider = f.engine
	if wrap != nil {
		d = wrap(f.engine)
	}
	srv := httptest.NewServer(NewHandler(d, httpsettings.Settings{Address: "127.0.0.1:0", WithoutBody: withoutBody}, nil))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

type answer struct {
	status int
	header http.Header
	body   string
}

// reason is the reason of the decision the answer carries, from the
// audit record with its decision id.
func (f *fixture) reason(t *testing.T, a answer) string {
	t.Helper()
	id := a.header.Get("x-modelguard-decision-id")
	for _, ev := range f.audit.Events() {
		if ev.DecisionID == id {
			return ev.Reason
		}
	}
	t.Fatalf("no audit record for decision %q (answer %d %s)", id, a.status, a.body)
	return ""
}

func (f *fixture) send(t *testing.T, method, target string, headers map[string]string, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, f.url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = target // sent as is, unnormalised
	for k, v := range headers {
		if k == "host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// envoyHeaders are what Envoy's HTTP client sends with
// allowed_headers listing the marker and content-type.
func envoyHeaders(kv ...string) map[string]string {
	h := map[string]string{"content-type": "application/json", "x-envoy-auth-partial-body": "false", "x-request-id": "req-1"}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(h, kv[i])
			continue
		}
		h[kv[i]] = kv[i+1]
	}
	return h
}

func TestEnvoyService(t *testing.T) {
	f := newFixture(t, httpsettings.Refuse, nil)
	alice := "Bearer " + f.keys["alice-key"]
	for _, tc := range []struct {
		name    string
		method  string
		target  string
		headers map[string]string
		body    string
		status  int
		reason  string
	}{
		{"api key allowed", "POST", "/envoy/v1/chat/completions", envoyHeaders("authorization", alice), chatBody, 200, "allowed"},
		{"no credential", "POST", "/envoy/v1/chat/completions", envoyHeaders(), chatBody, 401, "credentials_missing"},
		{"read-only caller", "POST", "/envoy/v1/chat/completions", envoyHeaders("x-api-key", f.keys["reader-key"]), chatBody, 403, "read_only"},
		{"schema checked after path normalisation", "POST", "/envoy//v1/./chat/completions", envoyHeaders("authorization", alice), `{"model":"gpt-4o-mini","messages":[{"role":"robot","content":"x"}]}`, 400, "body_schema_violation"},
		{"ambiguous path", "POST", "/envoy/V1/chat/completions", envoyHeaders("authorization", alice), chatBody, 400, "route_ambiguous"},
		{"query kept off the path", "GET", "/envoy/v1/models?limit=5", envoyHeaders("authorization", alice), "", 200, "allowed"},
		{"without the marker: body not forwarded", "POST", "/envoy/v1/chat/completions", envoyHeaders("authorization", alice, "x-envoy-auth-partial-body", ""), chatBody, 503, "body_not_forwarded"},
		{"marker but no body (pack_as_bytes)", "POST", "/envoy/v1/chat/completions", envoyHeaders("authorization", alice), "", 503, "body_not_forwarded"},
		{"cut body", "POST", "/envoy/v1/chat/completions", envoyHeaders("authorization", alice, "x-envoy-auth-partial-body", "true"), chatBody[:40], 413, "body_truncated"},
		{"body of exactly the limit counts as cut", "POST", "/envoy/v1/chat/completions", envoyHeaders("authorization", alice), chatBody[:len(chatBody)-1] + strings.Repeat(" ", 4096-len(chatBody)) + "}", 413, "body_truncated"},
		{"body over the limit", "POST", "/envoy/v1/chat/completions", envoyHeaders("authorization", alice), chatBody + strings.Repeat(" ", 5000), 413, "body_truncated"},
		{"marker of unknown value counts as cut", "POST", "/envoy/v1/chat/completions", envoyHeaders("authorization", alice, "x-envoy-auth-partial-body", "yes"), chatBody, 413, "body_truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := f.send(t, tc.method, tc.target, tc.headers, tc.body)
			if a.status != tc.status || f.reason(t, a) != tc.reason {
				t.Fatalf("got %d %s (%s), want %d %s", a.status, f.reason(t, a), a.body, tc.status, tc.reason)
			}
			if tc.status == 200 {
				if a.header.Get("x-modelguard-subject") != "alice" || a.header.Get("x-modelguard-auth-method") != "api_key" || a.body != "" {
					t.Errorf("allow headers %v body %q", a.header, a.body)
				}
				if rm := a.header.Get("x-envoy-auth-headers-to-remove"); !strings.Contains(rm, "authorization") {
					t.Errorf("x-envoy-auth-headers-to-remove = %q, want the credential", rm)
				}
				return
			}
			assertDenial(t, a, tc.status, tc.reason)
			if a.header.Get("x-modelguard-error") != "" {
				t.Errorf("x-modelguard-error sent to Envoy: %q", a.header.Get("x-modelguard-error"))
			}
		})
	}
	if n := testutil.ToFloat64(f.metrics.Decisions.WithLabelValues("allow", "allowed", "envoy_http")); n != 2 {
		t.Errorf(`modelguard_decisions_total{result="allow",gateway="envoy_http"} = %v, want 2`, n)
	}
	for _, ev := range f.audit.Events() {
		if ev.Kind == audit.KindDecision && (ev.Gateway != "envoy_http" || ev.RequestID != "req-1") {
			t.Errorf("audit record gateway %q request id %q", ev.Gateway, ev.RequestID)
		}
	}
}

// assertDenial checks a denial's OpenAI-shaped JSON body, and that it
// carries neither the reason code nor anything of the request.
func assertDenial(t *testing.T, a answer, status int, reason string) {
	t.Helper()
	var body struct {
		Error struct{ Message, Type, Code string }
	}
	if err := json.Unmarshal([]byte(a.body), &body); err != nil || body.Error.Message == "" {
		t.Fatalf("denial body %q: %v", a.body, err)
	}
	if ct := a.header.Get("content-type"); ct != "application/json" {
		t.Errorf("content-type %q", ct)
	}
	if strings.Contains(a.body, reason) || strings.Contains(a.body, "gpt-4o-mini") || strings.Contains(a.body, "mg_test_") {
		t.Errorf("denial body %q echoes the reason or the request", a.body)
	}
	if status == 401 && !strings.HasPrefix(a.header.Get("www-authenticate"), "Bearer") {
		t.Errorf("401 without WWW-Authenticate: %v", a.header)
	}
}

func TestSubrequestEndpoints(t *testing.T) {
	f := newFixture(t, httpsettings.Refuse, nil)
	key := func(id string) string { return "Bearer " + f.keys[id] }
	// Each endpoint's own headers for a request; forged are another
	// gateway's headers, which a client could send and which must be
	// ignored.
	type endpoint struct {
		path            string
		target, forged  func(method, uri string) map[string]string
		wantErrorHeader bool
	}
	endpoints := []endpoint{
		{NginxPath, func(m, u string) map[string]string {
			return map[string]string{"x-original-method": m, "x-original-uri": u, "x-real-ip": "10.0.0.7"}
		}, func(m, u string) map[string]string {
			return map[string]string{"x-forwarded-method": m, "x-forwarded-uri": u, "x-original-url": "https://h" + u}
		}, true},
		{IngressNginxPath, func(m, u string) map[string]string {
			return map[string]string{"x-original-method": m, "x-original-url": "https://models.example" + u}
		}, func(m, u string) map[string]string {
			return map[string]string{"x-original-uri": u, "x-forwarded-method": m, "x-forwarded-uri": u}
		}, true},
		{ForwardAuthPath, func(m, u string) map[string]string {
			return map[string]string{"x-forwarded-method": m, "x-forwarded-uri": u, "x-forwarded-host": "models.example", "x-forwarded-proto": "https"}
		}, func(m, u string) map[string]string {
			return map[string]string{"x-original-method": m, "x-original-uri": u, "x-original-url": "https://h" + u}
		}, false},
	}
	with := func(h map[string]string, kv ...string) map[string]string {
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = kv[i+1]
		}
		return h
	}
	for _, ep := range endpoints {
		t.Run(ep.path, func(t *testing.T) {
			for _, tc := range []struct {
				name    string
				headers map[string]string
				status  int
				reason  string
			}{
				{"listing allowed", with(ep.target("GET", "/v1/models"), "authorization", key("reader-key")), 200, "allowed"},
				{"no credential", ep.target("GET", "/v1/models"), 401, "credentials_missing"},
				{"model request refused without its body", with(ep.target("POST", "/v1/chat/completions"), "authorization", key("alice-key")), 403, ReasonBodyUnavailable},
				{"read-only caller", with(ep.target("POST", "/v1/embeddings"), "authorization", key("reader-key")), 403, ReasonBodyUnavailable},
				{"another gateway's headers are not read", with(ep.forged("GET", "/v1/models"), "authorization", key("reader-key")), 503, "subrequest_target_missing"},
				{"ambiguous path", with(ep.target("POST", "/V1/chat/completions"), "authorization", key("alice-key")), 400, "route_ambiguous"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					a := f.send(t, "GET", ep.path, tc.headers, "")
					if a.status != tc.status || f.reason(t, a) != tc.reason {
						t.Fatalf("got %d %s (%s), want %d %s", a.status, f.reason(t, a), a.body, tc.status, tc.reason)
					}
					if tc.status == 200 {
						if a.header.Get("x-modelguard-subject") != "rita" || a.header.Get("x-modelguard-roles") != "reader" {
							t.Errorf("identity headers %v", a.header)
						}
						return
					}
					assertDenial(t, a, tc.status, tc.reason)
					if got := a.header.Get("x-modelguard-error"); ep.wantErrorHeader != (got == a.body) {
						t.Errorf("x-modelguard-error %q, body %q", got, a.body)
					}
				})
			}
		})
	}
	var nginx, forward int
	for _, ev := range f.audit.Events() {
		switch ev.Gateway {
		case "nginx":
			nginx++
		case "forward_auth":
			forward++
		default:
			t.Errorf("audit record gateway %q", ev.Gateway)
		}
	}
	if nginx != 12 || forward != 6 {
		t.Errorf("audit records: nginx %d, forward_auth %d; want 12 and 6", nginx, forward)
	}
}

// TestSubrequestHeadersOnly: with without_body: headers_only a model
// request is decided without its body: the model its body would name is
// unknown to the policy (the example policy lets only roles granting
// every model through), and the record says the body was not checked.
func TestSubrequestHeadersOnly(t *testing.T) {
	f := newFixture(t, httpsettings.HeadersOnly, nil)
	target := func(id string) map[string]string {
		return map[string]string{"x-original-method": "POST", "x-original-uri": "/v1/chat/completions", "authorization": "Bearer " + f.keys[id]}
	}
	a := f.send(t, "GET", NginxPath, target("alice-key"), "")
	if a.status != 403 || f.reason(t, a) != "model_unknown" {
		t.Errorf("chat-user: got %d %s, want 403 model_unknown", a.status, f.reason(t, a))
	}
	a = f.send(t, "GET", NginxPath, target("admin-key"), "")
	if a.status != 200 || f.reason(t, a) != "allowed" {
		t.Fatalf("admin: got %d %s, want 200", a.status, f.reason(t, a))
	}
	for _, ev := range f.audit.Events() {
		if ev.BodyCheck != audit.BodyCheckSkipped {
			t.Errorf("audit record %+v, want body_check skipped", ev)
		}
	}
}

// shedding is an engine whose body budget is always full.
type shedding struct{ *policy.Engine }

func (shedding) ReserveBody(context.Context, int64) bool { return false }

// panicking is a core that panics.
type panicking struct{ *policy.Engine }

func (panicking) Decide(context.Context, *policy.Request) *policy.Decision { panic("boom") }

func TestFailClosed(t *testing.T) {
	t.Run("overloaded", func(t *testing.T) {
		f := newFixture(t, httpsettings.Refuse, func(e *policy.Engine) Decider { return shedding{e} })
		a := f.send(t, "POST", "/envoy/v1/chat/completions", envoyHeaders("authorization", "Bearer "+f.keys["alice-key"]), chatBody)
		if a.status != 503 || f.reason(t, a) != policy.ReasonOverloaded {
			t.Fatalf("got %d %s, want 503 overloaded", a.status, f.reason(t, a))
		}
		// A request that needs no body is not shed by the body budget.
		a = f.send(t, "GET", "/envoy/v1/models", envoyHeaders("authorization", "Bearer "+f.keys["alice-key"]), "")
		if a.status != 200 {
			t.Fatalf("listing: got %d, want 200", a.status)
		}
	})
	t.Run("panic", func(t *testing.T) {
		f := newFixture(t, httpsettings.Refuse, func(e *policy.Engine) Decider { return panicking{e} })
		for _, target := range []string{"/envoy/v1/chat/completions", NginxPath} {
			a := f.send(t, "POST", target, envoyHeaders("authorization", "Bearer "+f.keys["alice-key"], "x-original-method", "GET", "x-original-uri", "/v1/models"), chatBody)
			if a.status != 503 {
				t.Fatalf("%s: got %d %s, want 503", target, a.status, a.body)
			}
			assertDenial(t, a, 503, "internal_error")
		}
	})
	t.Run("body cut short by the connection", func(t *testing.T) {
		f := newFixture(t, httpsettings.Refuse, nil)
		conn, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /envoy/v1/chat/completions HTTP/1.1\r\nHost: models.local\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/json\r\nX-Envoy-Auth-Partial-Body: false\r\nContent-Length: %d\r\n\r\n%s",
			f.keys["alice-key"], len(chatBody)+10, chatBody)
		conn.(*net.TCPConn).CloseWrite()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		a := answer{status: resp.StatusCode, header: resp.Header}
		if a.status != 503 || f.reason(t, a) != "gateway_read_error" {
			t.Fatalf("got %d %s, want 503 gateway_read_error", a.status, f.reason(t, a))
		}
	})
	t.Run("unknown route", func(t *testing.T) {
		f := newFixture(t, httpsettings.Refuse, nil)
		for _, target := range []string{"/", "/envoy", "/envoyv1/models", "/auth/nginx/", "/auth"} {
			if a := f.send(t, "GET", target, nil, ""); a.status != 404 {
				t.Errorf("%s: got %d, want 404", target, a.status)
			}
		}
	})
}

func TestASCIIJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"error":{"message":"access denied"}}`: `{"error":{"message":"access denied"}}`,
		`{"m":"accès refusé"}`:                  `{"m":"acc\u00e8s refus\u00e9"}`,
		`{"m":"🔒"}`:                             `{"m":"\ud83d\udd12"}`,
	} {
		got := asciiJSON([]byte(in))
		var a, b any
		if got != want || json.Unmarshal([]byte(got), &a) != nil || json.Unmarshal([]byte(in), &b) != nil || a.(map[string]any)["m"] != b.(map[string]any)["m"] {
			t.Errorf("asciiJSON(%s) = %s, want %s", in, got, want)
		}
	}
}
