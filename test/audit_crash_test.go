package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelguard/modelguard/extauthz"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/test/testkit"
	"github.com/modelguard/modelguard/test/testkit/demo"
)

// acked is what the load's client saw: the decision ids of the checks
// answered with an allow.
type acked struct {
	mu  sync.Mutex
	ids []string
}

func (a *acked) add(id string) {
	a.mu.Lock()
	a.ids = append(a.ids, id)
	a.mu.Unlock()
}

func (a *acked) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ids)
}

// load sends checks from several goroutines until stop is closed, keeping
// the decision id of each allowed one. Once quiet is closed, a failed check
// (the server was killed) ends a goroutine without failing the test.
func load(t *testing.T, addr, key string, stop, quiet <-chan struct{}, allowed *acked) *sync.WaitGroup {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	client := authv3.NewAuthorizationClient(conn)
	body := []byte(chatBody("gpt-4o-mini"))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, _ := http.NewRequest("POST", "http://models.local/v1/chat/completions", bytes.NewReader(body))
				r.Header.Set("authorization", "Bearer "+key)
				r.Header.Set("content-type", "application/json")
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := client.Check(ctx, extauthz.CheckRequestFromHTTP(r, body, extauthz.EnvoyOptions{WithBody: true, PackAsBytes: true}))
				cancel()
				if err != nil {
					select {
					case <-quiet:
					default:
						t.Errorf("check: %v", err)
					}
					return
				}
				if resp.GetStatus().GetCode() != 0 {
					continue
				}
				id := ""
				for _, h := range resp.GetOkResponse().GetHeaders() {
					if h.GetHeader().GetKey() == "x-modelguard-decision-id" {
						id = h.GetHeader().GetValue()
					}
				}
				if id == "" {
					t.Errorf("an allow without a decision id")
					return
				}
				allowed.add(id)
			}
		})
	}
	go func() { wg.Wait(); conn.Close() }()
	return &wg
}

// trailFiles lists the rotated files of the trail at path, oldest first,
// then path itself if it exists (a kill between a rotation's rename and the
// new file's creation leaves none).
func trailFiles(t *testing.T, path string) []string {
	t.Helper()
	rotated, err := filepath.Glob(path + ".[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(rotated)
	if _, err := os.Stat(path); err == nil {
		rotated = append(rotated, path)
	}
	return rotated
}

// TestAuditSurvivesKill9 kills a real server with SIGKILL under load, in
// several rounds: every decision the client was answered "allow" is in the
// trail after the kill (the answer waits for the record's write), the trail
// verifies against its anchor, a torn last record is quarantined at the
// restart, and the chain continues through the rounds and a last run to its
// graceful stop, across file rotations.
func TestAuditSurvivesKill9(t *testing.T) {
	bin := buildBinary(t)
	dir := demo.Dir(t)
	if err := os.Mkdir(filepath.Join(dir, "audit"), 0o700); err != nil {
		t.Fatal(err)
	}
	key := demo.WriteKeys(t, dir, "mg_", demo.Alice)[demo.Alice.ID]
	// flush_interval 1ms: where losses were worst when answers did not wait.
	cfg := writeServeConfig(t, dir, `  shutdown_grace: 10s
audit:
  output: audit/trail.jsonl
  max_file_bytes: 65536
  flush_interval: 1ms
  key_env: MODELGUARD_AUDIT_KEY
log: {level: info}
`)
	hmacKey := strings.Repeat("audit-key-", 4)
	env := "MODELGUARD_AUDIT_KEY=" + hmacKey
	path := filepath.Join(dir, "audit", "trail.jsonl")
	opts := audit.VerifyOptions{Key: []byte(hmacKey)}
	var allowed acked

	const rounds = 3
	for round := 1; round <= rounds; round++ {
		srv := startServe(t, bin, cfg, env)
		stop, quiet := make(chan struct{}), make(chan struct{})
		before := allowed.count()
		wg := load(t, srv.grpc, key, stop, quiet, &allowed)
		testkit.Eventually(t, "a few hundred checks allowed", func() bool { return allowed.count() >= before+400 })
		close(quiet)
		if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := <-srv.exited; err == nil {
			t.Fatal("the server survived SIGKILL")
		}
		srv.exited <- nil
		close(stop)
		wg.Wait()

		anchor, err := audit.ReadAnchor(audit.AnchorPath(path))
		if err != nil {
			t.Fatal(err)
		}
		o := opts
		o.Anchor = &anchor
		_, err = audit.VerifyFiles(trailFiles(t, path), o)
		var ve *audit.VerifyError
		if errors.As(err, &ve) && strings.HasPrefix(ve.Problem, "truncated record") && ve.File == path {
			t.Logf("round %d: SIGKILL tore the last record: %v", round, err) // the restart quarantines it
		} else if err != nil {
			t.Fatalf("round %d: the trail after SIGKILL does not verify: %v", round, err)
		}
		recorded := trailDecisions(t, trailFiles(t, path))
		allowed.mu.Lock()
		var missing []string
		for _, id := range allowed.ids {
			if !recorded[id] {
				missing = append(missing, id)
			}
		}
		n := len(allowed.ids)
		allowed.mu.Unlock()
		t.Logf("round %d: %d allows acknowledged so far, %d decisions in the trail, %d acknowledged but missing", round, n, len(recorded), len(missing))
		if len(missing) > 0 {
			t.Fatalf("round %d: %d of %d allowed decisions are not in the trail, e.g. %v", round, len(missing), n, missing[:min(3, len(missing))])
		}
	}
	if len(trailFiles(t, path)) < 2 {
		t.Errorf("no rotation during the rounds: the test should cross a rotation")
	}
	// Whatever SIGKILL left, end the file as a crash mid-write does.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":999999,"prev":"00`)
	f.Close()

	// The last run: the restart quarantines the torn record and continues the chain.
	srv := startServe(t, bin, cfg, env)
	stop := make(chan struct{})
	before := allowed.count()
	wg := load(t, srv.grpc, key, stop, stop, &allowed)
	testkit.Eventually(t, "more checks served after the restart", func() bool { return allowed.count() >= before+200 })
	close(stop)
	wg.Wait()
	srv.stop(t)

	files := trailFiles(t, path)
	sum2, err := audit.VerifyFiles(files, opts)
	if err != nil {
		t.Fatalf("the trail after the restart does not verify: %v", err)
	}
	if sum2.FirstSeq != 1 || sum2.Records < uint64(allowed.count()) {
		t.Errorf("summary after the restart: %+v for %d allows", sum2, allowed.count())
	}
	kinds := trailKinds(t, files)
	first := strings.Index(kinds, "audit_recovered start config_loaded ")
	if !strings.HasPrefix(kinds, "start config_loaded decision") || first < 0 || !strings.HasSuffix(kinds, " decision stop") {
		t.Errorf("event kinds: %.200s ... %.300s", kinds, kinds[max(0, first-50):])
	}
	if q, _ := filepath.Glob(path + ".torn-*"); len(q) < 1 {
		t.Errorf("quarantine files: %v", q)
	}

	// The CLI agrees, with the anchor too, and finds an edit.
	args := append([]string{"audit", "verify", "-key-env", "MODELGUARD_AUDIT_KEY", "-anchor", audit.AnchorPath(path)}, files...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), fmt.Sprintf("OK %d files, %d records, seq 1 to %d", len(files), sum2.Records, sum2.LastSeq)) ||
		!strings.Contains(string(out), fmt.Sprintf("anchor at seq %d matches", sum2.LastSeq)) {
		t.Errorf("audit verify: %v\n%s", err, out)
	}
	data, _ := os.ReadFile(files[0])
	os.WriteFile(files[0], bytes.Replace(data, []byte(`"result":"allow"`), []byte(`"result":"deny!"`), 1), 0o600)
	cmd = exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env)
	out, err = cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.HasPrefix(string(out), "FAIL "+files[0]+":") || !strings.Contains(string(out), "record edited") {
		t.Errorf("audit verify of an edited trail: %v\n%s", err, out)
	}
}

// trailDecisions returns the decision ids the trail's complete records name.
func trailDecisions(t *testing.T, files []string) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
			data = data[:i] // a torn last line is left out
		} else {
			data = nil
		}
		for _, line := range bytes.Split(data, []byte("\n")) {
			var e audit.Event
			if len(line) == 0 {
				continue // an empty file
			}
			if err := json.Unmarshal(line, &e); err != nil {
				t.Fatal(err)
			}
			if e.Kind == audit.KindDecision {
				ids[e.DecisionID] = true
			}
		}
	}
	return ids
}

// trailKinds returns the kinds of the records, space-separated, with runs
// of decisions collapsed into one.
func trailKinds(t *testing.T, files []string) string {
	t.Helper()
	var kinds []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
			var e audit.Event
			if err := json.Unmarshal(line, &e); err != nil {
				t.Fatal(err)
			}
			if e.Kind == audit.KindDecision && len(kinds) > 0 && kinds[len(kinds)-1] == e.Kind {
				continue
			}
			kinds = append(kinds, e.Kind)
		}
	}
	return strings.Join(kinds, " ")
}
