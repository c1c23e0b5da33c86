package kongplugin

import (
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"unicode/utf8"

	pdktest "github.com/Kong/go-pdk/test"
)

// FuzzAccess sends arbitrary requests through the access phase (go-pdk's
// test environment, the real core): it never panics, a denial is one of the
// documented statuses with the JSON error body, and nothing is allowed
// without the caller's valid API key (cred 1: x-api-key, 2: bearer).
func FuzzAccess(f *testing.F) {
	fx := newFixture(f, false)
	c := fx.config(filepath.Join(fx.dir, "config.yaml"))
	key := fx.keys["alice-key"]
	f.Add("POST", "/v1/chat/completions", uint8(1), "content-type", "application/json", []byte(chat))
	f.Add("POST", "/v1/chat/completions", uint8(2), "content-encoding", "gzip", []byte(chat))
	f.Add("GET", "/v1/models", uint8(1), "x-modelguard-subject", "root", []byte(nil))
	f.Add("POST", "/v1/chat/completions", uint8(0), "authorization", "Bearer x.y.z", []byte(chat))
	f.Add("POST", "/v1/chat/completions", uint8(1), "authorization", "Basic eA==", []byte(`{"model":"gpt-4o-mini","model":"gpt-4o"}`))
	f.Add("POST", "/v2/models/resnet50/infer", uint8(2), "content-type", "text/plain", []byte(`{"inputs":[]}`))
	f.Add("post", "//v1/chat/completions", uint8(1), "x-request-id", "\r\n", []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"\ud800"}]}`))
	allowedStatus := map[int]bool{400: true, 401: true, 403: true, 404: true, 413: true, 415: true, 431: true, 503: true}
	f.Fuzz(func(t *testing.T, method, path string, cred uint8, name, value string, body []byte) {
		h := http.Header{}
		if name != "" && value != "" {
			h.Set(name, value)
		}
		switch cred % 3 {
		case 1:
			h.Set("x-api-key", key)
		case 2:
			h.Set("authorization", "Bearer "+key)
		}
		// go-pdk's test environment carries these as protobuf strings,
		// which must be UTF-8 (so does Kong's socket protocol: a PDK call
		// that fails to decode denies 503).
		if !utf8.ValidString(method + path + name + value) {
			return
		}
		u, err := url.Parse("http://models.local" + path)
		if err != nil || method == "" || u.Host != "models.local" {
			return
		}
		env, err := pdktest.New(t, pdktest.Request{Method: method, Url: u.String(), Headers: h, Body: body})
		if err != nil {
			return // not a request go-pdk's test environment can represent
		}
		// Access and an echo upstream; go-pdk's test environment has no
		// kong.log.serialize for the log phase.
		env.DoAccess(c)
		if env.IsRunning() {
			env.ServiceRes = env.ServiceReq.ToResponse()
			env.DoResponse(c)
		}
		st := env.ClientRes.Status
		if st == 200 && env.IsRunning() {
			if h.Get("x-api-key") != key && h.Get("authorization") != "Bearer "+key {
				t.Fatalf("%s %q allowed without the key (headers %v)", method, path, h)
			}
			return
		}
		if !allowedStatus[st] {
			t.Fatalf("%s %q: status %d, body %s", method, path, st, env.ClientRes.Body)
		}
		var eb struct {
			Error struct{ Message, Type, Code string }
		}
		if err := json.Unmarshal(env.ClientRes.Body, &eb); err != nil || eb.Error.Message == "" || eb.Error.Type == "" {
			t.Fatalf("%s %q: denial body %q (%v)", method, path, env.ClientRes.Body, err)
		}
	})
}
