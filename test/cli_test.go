package test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelguard/modelguard/policy/apikey"
)

// built is the modelguard binary the tests of this package share.
var built struct {
	once sync.Once
	bin  string
	err  error
}

// buildBinary builds cmd/modelguard once per test binary run (each build
// costs a link of the whole binary); TestMain removes it.
func buildBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "modelguard-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.bin = filepath.Join(dir, "modelguard")
		cmd := exec.Command("go", "build", "-o", built.bin, "github.com/modelguard/modelguard/cmd/modelguard")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.bin != "" {
		os.RemoveAll(filepath.Dir(built.bin))
	}
	os.Exit(code)
}

// TestDemoCommands runs what the README tells a newcomer: "serve" on the
// embedded demo, then the example commands it prints, and checks they show
// an allow, a 403, a 401 and a rate limit hit (three allowed, then 429).
// Then SIGTERM stops it cleanly, and its stdout, the audit trail alone (the
// banner is on stderr), verifies.
func TestDemoCommands(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := exec.CommandContext(ctx, bin, "serve", "-grpc-address", "127.0.0.1:0", "-admin-address", "127.0.0.1:0")
	trail := filepath.Join(t.TempDir(), "audit.jsonl")
	out, err := os.Create(trail)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	srv.Stdout = out
	stderr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()

	var commands []string
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() && len(commands) < 4 {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, bin+" check ") || strings.HasPrefix(line, "for i in ") {
			commands = append(commands, line)
		}
	}
	if len(commands) != 4 {
		t.Fatalf("demo printed %d example commands, want 4", len(commands))
	}
	drained := make(chan struct{})
	go func() { // keep draining the logs
		for sc.Scan() {
		}
		close(drained)
	}()
	want := []struct {
		exit   int
		prefix string
	}{{0, "ALLOW 200"}, {1, "DENY 403"}, {1, "DENY 401"}}
	for i, c := range commands[:3] {
		out, err := exec.CommandContext(ctx, "bash", "-c", c).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != want[i].exit || !strings.HasPrefix(string(out), want[i].prefix) {
			t.Errorf("command %d exited %d with %q, want %d and %q", i+1, code, out, want[i].exit, want[i].prefix)
		}
	}
	// The loop: 3 allowed, then 429. Again: 429 each time (3 an hour).
	for run, want := range [][2]int{{3, 1}, {0, 4}} {
		out := string(mustRun(ctx, t, commands[3]))
		if strings.Count(out, "ALLOW 200") != want[0] || strings.Count(out, "DENY 429") != want[1] {
			t.Errorf("rate limit loop, run %d: %s\nwant %d allowed, %d refused", run+1, out, want[0], want[1])
		}
	}

	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-drained
	if err := srv.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
	verify, err := exec.Command(bin, "audit", "verify", trail).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(verify), "OK ") {
		t.Fatalf("audit verify on the demo's stdout: %v\n%s", err, verify)
	}
}

func TestStartRefusesBadConfig(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct{ config, want string }{
		{"authentication:\n  api_keys:\n    file: keys.yaml\nauthorization:\n  policy_dir: .\n  bogus: 1\n", "config.yaml:6"},
		{"authentication:\n  allow_anonymous: true\nauthorization:\n  policy_dir: .\nrate_limits:\n  rules:\n    - name: rpm\n      requests: 60\n      per: 1ms\n",
			"config.yaml:9: rate_limits.rules[0].per: must be between 1s and 744h0m0s"},
	} {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "config.yaml")
		os.WriteFile(cfg, []byte(tc.config), 0o644)
		out, err := exec.Command(bin, "serve", "-config", cfg).CombinedOutput()
		if err == nil {
			t.Fatal("serve started with a bad config")
		}
		if !strings.Contains(string(out), tc.want) {
			t.Fatalf("error does not name file and line (%s): %s", tc.want, out)
		}
	}
}

// mustRun runs a shell command and returns its output, whatever its exit.
func mustRun(ctx context.Context, t *testing.T, c string) []byte {
	t.Helper()
	out, err := exec.CommandContext(ctx, "bash", "-c", c).CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return out
}

// TestKeysMint mints a key with the CLI and proves the printed entry, pasted
// into a key file, authenticates the printed key.
func TestKeysMint(t *testing.T) {
	bin := buildBinary(t)
	out, err := exec.Command(bin, "keys", "mint", "-id", "ci-bot", "-subject", "ci", "-roles", "reader").CombinedOutput()
	if err != nil {
		t.Fatalf("keys mint: %v\n%s", err, out)
	}
	text := string(out)
	lines := strings.Split(text, "\n")
	if len(lines) < 2 || !strings.HasPrefix(strings.TrimSpace(lines[1]), "mg_") {
		t.Fatalf("no key printed:\n%s", text)
	}
	key := strings.TrimSpace(lines[1])
	entry := text[strings.Index(text, "  - id:"):]
	if strings.Contains(entry, key) {
		t.Fatal("the store entry contains the plaintext key")
	}
	set, err := apikey.Parse("keys.yaml", []byte("keys:\n"+entry))
	if err != nil {
		t.Fatalf("printed entry does not load: %v\n%s", err, entry)
	}
	if k, err := set.Lookup(key, time.Now()); err != nil || k.Subject != "ci" || k.ID != "ci-bot" {
		t.Fatalf("lookup of the minted key: %+v %v", k, err)
	}
	if out, err := exec.Command(bin, "keys", "mint", "-id", "has space", "-subject", "ci").CombinedOutput(); err == nil {
		t.Fatalf("an id the key file would refuse was minted:\n%s", out)
	}
}
