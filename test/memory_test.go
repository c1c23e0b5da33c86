package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"

	"github.com/modelguard/modelguard/examples"
	"github.com/modelguard/modelguard/policy/apikey"
)

// TestMemoryBoundedUnderLargeBodies sends 200 concurrent checks, each
// carrying an 8 MiB body (the default gRPC message limit), to a real server
// process with the default admission settings. Every check is answered with
// a CheckResponse (413 for the body, whatever its reason, or 503
// overloaded), none with a gRPC error, and the server's peak resident
// memory (VmHWM) stays under 1 GiB.
//
// The client sends raw gRPC over HTTP/2 from one shared buffer, so that the
// test process does not hold 200 copies of the body.
func TestMemoryBoundedUnderLargeBodies(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 1.6 GB over loopback")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	if err := os.CopyFS(dir, mustSub(examples.Demo, ".")); err != nil {
		t.Fatal(err)
	}
	key, err := apikey.Mint("mg_")
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, filepath.Join(dir, "keys.yaml"), "keys:\n"+apikey.Entry("alice-key", "alice", []string{"chat-user"}, key))
	cfg := filepath.Join(dir, "config.yaml")
	writeAtomic(t, cfg, `server:
  grpc_address: 127.0.0.1:0
  admin_address: 127.0.0.1:0
authentication:
  api_keys: {file: keys.yaml}
authorization:
  policy_dir: policy
  query: data.modelguard.authz.decision
models:
  - {name: gpt-4o-mini, operation: chat}
audit: {output: "off"}
log: {level: info}
`)
	srv := startAuditServer(t, bin, cfg)

	const checks, bodyBytes = 200, 8<<20 - 64<<10
	cr := envoyCheckRequest(map[string]string{"x-api-key": key, "content-type": "application/json", "x-envoy-auth-partial-body": "false"})
	cr.Attributes.Request.Http.Method, cr.Attributes.Request.Http.Path = "POST", "/v1/chat/completions"
	cr.Attributes.Request.Http.RawBody = bytes.Repeat([]byte{' '}, bodyBytes)
	frame := grpcFrame(t, cr)

	client := &http.Client{Transport: &http2.Transport{
		AllowHTTP: true, // h2c: the server listens in plaintext
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	statuses := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range checks {
		wg.Go(func() {
			got, err := checkRaw(client, srv.grpc, frame)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("check: %v", err)
				return
			}
			statuses[got]++
		})
	}
	wg.Wait()

	hwm := vmHWM(t, srv.cmd.Process.Pid)
	t.Logf("%d concurrent checks of %.2f MiB: answers %v; server peak RSS (VmHWM) %d MiB", checks, float64(bodyBytes)/(1<<20), statuses, hwm>>20)
	for s := range statuses {
		if !strings.HasPrefix(s, "413 ") && s != "503 overloaded" {
			t.Errorf("unexpected answer %q", s)
		}
	}
	if hwm > 1<<30 {
		t.Errorf("server peak RSS %d MiB, want under 1024 MiB", hwm>>20)
	}
}

// grpcFrame is a gRPC length-prefixed message (uncompressed).
func grpcFrame(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(b)))
	return append(frame, b...)
}

// checkRaw calls Check with a prepared frame and returns the denial's
// "<status> <reason>", or "allow".
func checkRaw(client *http.Client, addr string, frame []byte) (string, error) {
	req, err := http.NewRequest("POST", "http://"+addr+"/envoy.service.auth.v3.Authorization/Check", bytes.NewReader(frame))
	if err != nil {
		return "", err
	}
	req.Header.Set("content-type", "application/grpc")
	req.Header.Set("te", "trailers")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if st := resp.Trailer.Get("grpc-status") + resp.Header.Get("grpc-status"); st != "0" {
		return "", fmt.Errorf("gRPC status %q: %s", st, resp.Trailer.Get("grpc-message")+resp.Header.Get("grpc-message"))
	}
	if len(body) < 5 {
		return "", fmt.Errorf("response of %d bytes", len(body))
	}
	var cr authv3.CheckResponse
	if err := proto.Unmarshal(body[5:], &cr); err != nil {
		return "", err
	}
	if cr.GetOkResponse() != nil {
		return "allow", nil
	}
	return fmt.Sprintf("%d %s", cr.GetDeniedResponse().GetStatus().GetCode(), cr.GetDynamicMetadata().GetFields()["reason"].GetStringValue()), nil
}

// vmHWM is a process's peak resident set size in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/<pid>/status")
	return 0
}
