package extauthz

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/modelguard/modelguard/examples"
	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/config"
)

// fuzzEngine is the real core over the example policy, with one API key.
func fuzzEngine(tb testing.TB) (*policy.Engine, string) {
	tb.Helper()
	dir := tb.TempDir()
	sub, err := fs.Sub(examples.Demo, ".")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.CopyFS(dir, sub); err != nil {
		tb.Fatal(err)
	}
	key, err := apikey.Mint("mg_fuzz_")
	if err != nil {
		tb.Fatal(err)
	}
	cfgYAML := `authentication:
  api_keys: {file: keys.yaml}
authorization:
  policy_dir: policy
  query: data.modelguard.authz.decision
  timeout: 5s
models:
  - {name: gpt-4o-mini, operation: chat, limits: {max_tokens: 4096}}
  - {name: resnet50, operation: infer}
audit: {output: "off"}
`
	for name, content := range map[string]string{
		"keys.yaml":   "keys:\n" + apikey.Entry("alice-key", "alice", []string{"chat-user"}, key),
		"config.yaml": cfgYAML,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	cfg, err := config.Load(filepath.Join(dir, "config.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	e, err := policy.New(ctx, cfg, policy.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return e, key
}

// FuzzCheck decodes arbitrary bytes as a CheckRequest and checks it with the
// real core: Check never fails or panics, every answer is an explicit allow
// or a denial with a documented status and the JSON error body, and nothing
// is allowed unless the request carries the valid API key.
func FuzzCheck(f *testing.F) {
	eng, key := fuzzEngine(f)
	a := NewAuthorization(eng, nil)
	chat := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	httpReq := func(method, path string, headers map[string]string, body string) *authv3.CheckRequest {
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Headers: headers, RawBody: []byte(body)}}}}
	}
	seeds := []*authv3.CheckRequest{
		httpReq("POST", "/v1/chat/completions", map[string]string{"x-api-key": key, "content-type": "application/json", partialBodyHeader: "false"}, chat),
		httpReq("POST", "/v1/chat/completions?x=1#f", map[string]string{"authorization": "Bearer " + key, "content-type": "application/json", partialBodyHeader: "true"}, chat),
		httpReq("GET", "/v1/models", map[string]string{"x-api-key": key}, ""),
		httpReq("POST", "/v1/chat/completions", map[string]string{"x-api-key": key, "authorization": "Bearer x", partialBodyHeader: "false"}, chat),
		httpReq("POST", "/v2/models/resnet50/infer", map[string]string{"x-api-key": key, "content-type": "application/json", "content-encoding": "gzip", partialBodyHeader: "false"}, `{"inputs":[]}`),
		{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Path: "/v1/chat/completions", Body: chat,
			HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: "X-Api-Key", RawValue: []byte(key)}, {Key: "content-type", Value: "application/json"},
				{Key: partialBodyHeader, RawValue: []byte("false")}, {Key: "x-api-key", RawValue: []byte("second")},
			}},
		}}}},
		{},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var cr authv3.CheckRequest
		if proto.Unmarshal(data, &cr) != nil {
			return
		}
		resp, err := a.Check(context.Background(), &cr)
		if err != nil || resp == nil {
			t.Fatalf("Check returned %v, %v", resp, err)
		}
		if resp.GetOkResponse() != nil {
			if !bytes.Contains(data, []byte(key)) {
				t.Fatalf("allowed without the key: %v", &cr)
			}
			return
		}
		denied := resp.GetDeniedResponse()
		if denied == nil {
			t.Fatalf("neither allowed nor denied: %v", resp)
		}
		switch st := denied.GetStatus().GetCode(); st {
		case 400, 401, 403, 404, 413, 415, 503:
		default:
			t.Fatalf("denied with status %d", st)
		}
		if err := checkErrorBody(denied); err != nil {
			t.Fatal(err)
		}
	})
}

func checkErrorBody(d *authv3.DeniedHttpResponse) error {
	var eb struct {
		Error struct{ Message, Type, Code string }
	}
	if err := json.Unmarshal([]byte(d.GetBody()), &eb); err != nil || eb.Error.Message == "" || eb.Error.Type == "" {
		return fmt.Errorf("denial body %q (%v)", d.GetBody(), err)
	}
	for _, h := range d.GetHeaders() {
		if h.GetHeader().GetKey() == "content-type" && h.GetHeader().GetValue() == "application/json" {
			return nil
		}
	}
	return fmt.Errorf("denial without content-type application/json: %v", d.GetHeaders())
}
