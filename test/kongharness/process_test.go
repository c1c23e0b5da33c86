package kongharness

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kpp "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/proto"
)

// TestValidate checks that Validate refuses what Kong would refuse.
func TestValidate(t *testing.T) {
	const good = `{"Protocol":"ProtoBuf:1","SocketPath":"/k/p.socket","Plugins":[{"Name":"p","Phases":["access","log"],"Version":"0.1.0","Priority":1010,
		"Schema":{"name":"p","fields":[{"config":{"type":"record","fields":[{"a":{"type":"string"}},{"b":{"type":"array","elements":{"type":"integer"}}},
		{"c":{"type":"map","keys":{"type":"string"},"values":{"type":"boolean"}}},{"d":{"type":"record","fields":[{"e":{"type":"number"}}]}}]}}]}}]}`
	tests := []struct {
		name, from, to, want string
	}{
		{"valid", "", "", ""},
		{"protocol", `"ProtoBuf:1"`, `"MsgPack:1"`, "protocol"},
		{"name", `"Name":"p"`, `"Name":"q"`, "name"},
		{"phase", `"access"`, `"header_filter"`, "phase"},
		{"four-part version", `"0.1.0"`, `"0.1.0.1"`, "version"},
		{"float priority", `1010`, `1010.5`, "priority"},
		{"json tag with options", `{"a":`, `{"a,omitempty":`, "field name"},
		{"unknown type", `"type":"integer"`, `"type":"int64"`, "not a Kong schema type"},
		{"array without elements", `"elements":{"type":"integer"}`, `"x":1`, "without elements"},
		{"nested", `"type":"number"`, `"type":"duration"`, "config.d.e"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dec := json.NewDecoder(strings.NewReader(strings.Replace(good, tc.from, tc.to, 1)))
			dec.UseNumber()
			var info Info
			if err := dec.Decode(&info); err != nil {
				t.Fatal(err)
			}
			err := info.Validate("p")
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate = %v, want an error about %q", err, tc.want)
			}
		})
	}
}

// TestReadTimeout: a plugin that does not answer within the socket's read
// timeout fails the event with "timeout", which Kong does not retry (the
// request gets a 500), unlike a closed connection.
func TestReadTimeout(t *testing.T) {
	bin := Build(t, "github.com/modelguard/modelguard/test/kongharness/testdata/emptyplugin", "emptyplugin")
	prefix, err := os.MkdirTemp("", "kong")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(prefix) })
	p := Start(t, bin, prefix)
	k := New(p.Socket, "emptyplugin")
	t.Cleanup(k.Close)
	k.ReadTimeout = 100 * time.Millisecond
	pc := PluginConf{ID: "p1", Seq: 1, Config: map[string]any{"stall_ms": 5000}}
	out := k.HandleEvent(pc, "access", NewExchange(Request{Method: "GET", Path: "/", Header: http.Header{}}))
	if out.Err == nil || !strings.Contains(out.Err.Error(), "timeout") || out.Attempts != 1 {
		t.Fatalf("outcome %+v, want a timeout after one attempt", out)
	}
	k.ReadTimeout = time.Minute
	pc = PluginConf{ID: "p1", Seq: 2, Config: map[string]any{"stall_ms": 0}}
	if out := k.HandleEvent(pc, "access", NewExchange(Request{Method: "GET", Path: "/", Header: http.Header{}})); out.Err != nil {
		t.Fatalf("a plugin that answers: %+v", out)
	}
}

// TestClosedConnectionsRetriedWithoutLimit: a plugin server that closes the
// connection ("closed") makes Kong restart the instance and try again, with
// no limit on the attempts, unlike a timeout. The plugin here is a stand-in
// on a real unix socket that drops its first ten events.
func TestClosedConnectionsRetriedWithoutLimit(t *testing.T) {
	dir, err := os.MkdirTemp("", "kong")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "flaky.socket")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	const drops = 10
	var events atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go flakyPlugin(c, &events, drops)
		}
	}()
	k := New(socket, "flaky")
	t.Cleanup(k.Close)
	out := k.HandleEvent(PluginConf{ID: "p1", Seq: 1}, "access", NewExchange(Request{Method: "GET", Path: "/", Header: http.Header{}}))
	if out.Err != nil || out.Attempts != drops+1 {
		t.Fatalf("outcome %+v, want success on attempt %d", out, drops+1)
	}
}

// flakyPlugin answers start_instance, closes the connection on the first
// drops handle_event calls, and then completes events without PDK calls.
func flakyPlugin(c net.Conn, events *atomic.Int32, drops int32) {
	defer c.Close()
	for {
		b, err := readFrame(c)
		if err != nil {
			return
		}
		var call kpp.RpcCall
		if err := proto.Unmarshal(b, &call); err != nil {
			return
		}
		ret := &kpp.RpcReturn{Sequence: call.GetSequence()}
		switch {
		case call.GetCmdStartInstance() != nil:
			ret.Return = &kpp.RpcReturn_InstanceStatus{InstanceStatus: &kpp.InstanceStatus{Name: "flaky", InstanceId: 1}}
		case call.GetCmdHandleEvent() != nil:
			if events.Add(1) <= drops {
				return
			}
			if writeFrame(c, nil) != nil {
				return
			}
		}
		out, _ := proto.Marshal(ret)
		if writeFrame(c, out) != nil {
			return
		}
	}
}
