package test

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/test/kongharness"
	"github.com/modelguard/modelguard/test/testkit"
)

// kongBinary builds cmd/modelguard as Kong runs it: a binary named after
// the plugin.
func kongBinary(t testing.TB) string {
	t.Helper()
	return kongharness.Build(t, "github.com/modelguard/modelguard/cmd/modelguard", "modelguard", raceFlags...)
}

// kongEnv is the modelguard binary running as Kong's plugin server, the
// Kong harness in front of it, and the Envoy env's upstream, configuration
// file and policy directory behind it.
type kongEnv struct {
	*env
	proc  *kongharness.Process
	kong  *kongharness.Kong
	front *kongharness.Front
	srv   *httptest.Server

	mu        sync.Mutex
	exchanges map[string]kongExchange // by x-request-id
}

type kongExchange struct {
	x   *kongharness.Exchange
	res kongharness.Result
}

// kongPlugin is the plugin entity attached to the model route.
func kongPlugin(seq int, configPath any) kongharness.PluginConf {
	return kongharness.PluginConf{
		ID: "8d2f7c1e-4a50-4e8e-9a43-0c2b7e1f9d11", Seq: seq,
		RouteID: "3f0c6a9e-1d2b-4c5e-8f7a-9b0c1d2e3f40", ServiceID: "a1b2c3d4-e5f6-4789-8abc-def012345678",
		Config: map[string]any{"config_path": configPath},
	}
}

// newKongEnv starts the plugin binary bin against e's configuration file,
// with plugin server flags args (in the start and the query command, as
// kong.conf has them): Kong runs the phases -dump lists.
func newKongEnv(t testing.TB, e *env, bin string, args ...string) *kongEnv {
	t.Helper()
	// Unix socket paths are short (108 bytes): not under t.TempDir().
	prefix, err := os.MkdirTemp("", "kong")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(prefix) })
	k := &kongEnv{env: e, exchanges: map[string]kongExchange{}}
	// Kong's query_cmd, while the plugin server starts.
	var (
		info    *kongharness.Info
		dumpErr error
		dumped  sync.WaitGroup
	)
	dumped.Go(func() { info, dumpErr = kongharness.Dump(bin, args...) })
	k.proc = kongharness.Start(t, bin, prefix, args...)
	if dumped.Wait(); dumpErr != nil {
		t.Fatal(dumpErr)
	}
	k.kong = kongharness.New(k.proc.Socket, "modelguard")
	t.Cleanup(k.kong.Close)
	u, _ := url.Parse(e.upstream.URL)
	k.front = kongharness.NewFront(k.kong, u, kongPlugin(1, filepath.Join(e.dir, "config.yaml")), t.TempDir())
	k.front.Phases = info.Plugins[0].Phases
	k.front.Done = func(x *kongharness.Exchange, res kongharness.Result) {
		k.mu.Lock()
		k.exchanges[x.Req.Header.Get("x-request-id")] = kongExchange{x, res}
		k.mu.Unlock()
	}
	k.srv = httptest.NewServer(k.front)
	t.Cleanup(k.srv.Close)
	return k
}

// kongResult is what the client saw, with the exchange behind it.
type kongResult struct {
	id       string
	status   int
	header   http.Header
	body     []byte
	upstream map[string]any // the echo, when the request reached the model
	ex       kongExchange
}

func (k *kongEnv) do(method, path string, headers map[string]string, body []byte) kongResult {
	k.t.Helper()
	return k.doVia(k.srv.URL, http.DefaultClient, method, path, headers, body)
}

// doVia is do through the Kong harness served at base (a TLS front), with
// client.
func (k *kongEnv) doVia(base string, client *http.Client, method, path string, headers map[string]string, body []byte) kongResult {
	k.t.Helper()
	id, resp, b, err := sendVia(client, base, "kong", method, path, headers, body)
	if err != nil {
		k.t.Fatal(err)
	}
	r := kongResult{id: id, status: resp.StatusCode, header: resp.Header, body: b}
	if resp.StatusCode == http.StatusOK && !strings.HasPrefix(resp.Header.Get("content-type"), "text/event-stream") {
		if err := json.Unmarshal(b, &r.upstream); err != nil {
			k.t.Errorf("upstream answer %s: %v", b, err)
		}
	}
	// Kong runs the log phase after the response: wait for it.
	testkit.Eventually(k.t, "the log phase of "+id, func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		r.ex = k.exchanges[id]
		return r.ex.x != nil
	})
	return r
}

func (r kongResult) upstreamHeader(name string) (string, bool) {
	return result{upstream: r.upstream}.upstreamHeader(name)
}

// gatewayAuditEvent waits for the decision records of a request through a
// gateway (the trail is written asynchronously) and returns them: one,
// unless a request was recorded twice.
func (e *env) gatewayAuditEvent(t testing.TB, gateway, requestID string) []map[string]any {
	t.Helper()
	var evs []map[string]any
	testkit.Eventually(t, "the audit record of "+requestID, func() bool {
		evs = e.gatewayAuditEvents(t, gateway)[requestID]
		return len(evs) > 0
	})
	return evs
}

// gatewayCompletion waits for the completion records of a decision (Kong's
// log phase writes one after the response) and returns them: one, unless
// it was completed twice.
func (e *env) gatewayCompletion(t testing.TB, gateway, decisionID string) []map[string]any {
	t.Helper()
	var evs []map[string]any
	testkit.Eventually(t, "the completion record of "+decisionID, func() bool {
		evs = e.gatewayRecords(t, gateway, audit.KindCompletion, "decision_id")[decisionID]
		return len(evs) > 0
	})
	return evs
}

// kongRecord returns what the trail says of a request through Kong: its
// one decision record, with the members that only its completion record
// has (the method, path and address access did not read) filled in.
func (e *env) kongRecord(t testing.TB, requestID string) map[string]any {
	t.Helper()
	ev := e.gatewayAuditEvent(t, "kong", requestID)
	if len(ev) != 1 {
		t.Fatalf("%s: %d decision records", requestID, len(ev))
	}
	done := e.gatewayCompletion(t, "kong", ev[0]["decision_id"].(string))
	out := maps.Clone(ev[0])
	for _, k := range []string{"method", "path", "source_address"} {
		if _, ok := out[k]; !ok && done[0][k] != nil {
			out[k] = done[0][k]
		}
	}
	return out
}

// gatewayAuditEvents reads a gateway's audit trail and returns its decision
// records by request id.
func (e *env) gatewayAuditEvents(t testing.TB, gateway string) map[string][]map[string]any {
	t.Helper()
	return e.gatewayRecords(t, gateway, audit.KindDecision, "request_id")
}

// gatewayRecords reads a gateway's audit trail and returns its records of
// one kind by the value of member key. A last line still being written is
// left out.
func (e *env) gatewayRecords(t testing.TB, gateway, kind, key string) map[string][]map[string]any {
	t.Helper()
	raw, err := os.ReadFile(e.trail(gateway))
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.LastIndexByte(raw, '\n'); i >= 0 {
		raw = raw[:i]
	} else {
		raw = nil
	}
	out := map[string][]map[string]any{}
	for _, line := range strings.Split(string(raw), "\n") {
		if line == "" {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if ev["gateway"] != gateway || ev["kind"] != kind {
			continue
		}
		id, _ := ev[key].(string)
		out[id] = append(out[id], ev)
	}
	return out
}
