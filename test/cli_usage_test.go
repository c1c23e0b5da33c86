package test

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelguard/modelguard/test/testkit"
	"github.com/modelguard/modelguard/test/testkit/demo"
)

// runCLI runs the binary and returns its exit code and combined output.
func runCLI(t *testing.T, bin, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	case err != nil:
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestCLIExitCodes: help exits 0 for every command, usage mistakes exit 2
// and say what is wrong, audit verify tells an unreadable file (2) from a
// broken trail (1).
func TestCLIExitCodes(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	broken := testkit.WriteFile(t, dir, "broken.jsonl", `{"seq":1,"prev":"00","kind":"start"}`+"\n")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--version"}, 0, "modelguard "},
		{[]string{"-version"}, 0, "modelguard "},
		{[]string{"version"}, 0, "modelguard "},
		{[]string{"-h"}, 0, "modelguard serve"},
		{[]string{"--help"}, 0, "modelguard serve"},
		{[]string{"help"}, 0, "modelguard init DIR"},
		{[]string{"serve", "-h"}, 0, "-grpc-address"},
		{[]string{"serve", "--help"}, 0, "-config"},
		{[]string{"check", "-h"}, 0, "-server"},
		{[]string{"check", "--help"}, 0, "-server"},
		{[]string{"init", "-h"}, 0, "never overwritten"},
		{[]string{"keys", "-h"}, 0, "keys mint"},
		{[]string{"keys", "mint", "--help"}, 0, "-subject"},
		{[]string{"audit", "--help"}, 0, "audit verify"},
		{[]string{"audit", "verify", "-h"}, 0, "-key-file"},
		{[]string{"health", "-h"}, 0, "grpc.health.v1"},
		{nil, 2, "Usage:"},
		{[]string{"serv"}, 2, `unknown command "serv"`},
		{[]string{"serve", "config.yaml"}, 2, `unexpected argument "config.yaml"`},
		{[]string{"serve", "-bogus"}, 2, "-bogus"},
		{[]string{"check", "GET", "/v1/models"}, 2, "missing -config FILE"},
		{[]string{"check", "-config", "c.yaml", "-server", "x:1", "GET", "/"}, 2, "exclusive"},
		{[]string{"check", "-config", "c.yaml", "GET"}, 2, "want METHOD PATH"},
		{[]string{"keys"}, 2, "missing subcommand"},
		{[]string{"keys", "revoke"}, 2, `unknown subcommand "revoke"`},
		{[]string{"keys", "mint", "-subject", "s"}, 2, "missing -id"},
		{[]string{"keys", "mint", "-id", "a"}, 2, "missing -subject"},
		{[]string{"audit"}, 2, "missing subcommand"},
		{[]string{"audit", "check"}, 2, `unknown subcommand "check"`},
		{[]string{"audit", "verify"}, 2, "no files"},
		{[]string{"audit", "verify", filepath.Join(dir, "missing.jsonl")}, 2, "no such file"},
		{[]string{"audit", "verify", dir}, 2, "is a directory"},
		{[]string{"audit", "verify", broken}, 1, "FAIL " + broken + ":1"},
		{[]string{"init"}, 2, "want one directory"},
		{[]string{"health", "extra"}, 2, "unexpected argument"},
		{[]string{"health", "-server", "127.0.0.1:1", "-timeout", "2s"}, 1, "127.0.0.1:1"},
		{[]string{"serve", "-config", filepath.Join(dir, "none.yaml")}, 1, "modelguard init DIR"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out := runCLI(t, bin, dir, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tc.code, tc.want, out)
			}
			if strings.Contains(out, "flag provided but not defined: -h") {
				t.Fatalf("help not understood:\n%s", out)
			}
		})
	}
}

// TestInit: init writes a configuration that check accepts without the
// demo, the commands it prints work as printed, and a second init into the
// same directory changes nothing.
func TestInit(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	code, out := runCLI(t, bin, dir, "init", "starter")
	if code != 0 {
		t.Fatalf("init: exit %d\n%s", code, out)
	}
	var commands []string
	for _, line := range strings.Split(out, "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, bin+" check ") {
			commands = append(commands, line)
		}
	}
	if len(commands) != 2 {
		t.Fatalf("init printed %d check commands, want 2:\n%s", len(commands), out)
	}
	for _, c := range commands {
		cmd := exec.Command("bash", "-c", c)
		cmd.Dir = dir
		if res, err := cmd.CombinedOutput(); err != nil || !strings.HasPrefix(string(res), "ALLOW 200") {
			t.Errorf("%s: %v\n%s", c, err, res)
		}
	}
	cfg := filepath.Join(dir, "starter", "config.yaml")
	before, err := os.ReadFile(filepath.Join(dir, "starter", "keys.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if code, out := runCLI(t, bin, dir, "init", "starter"); code != 1 || !strings.Contains(out, "nothing written") {
		t.Fatalf("second init: exit %d\n%s", code, out)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "starter", "keys.yaml")); string(after) != string(before) {
		t.Fatal("a second init rewrote keys.yaml")
	}
	if code, out := runCLI(t, bin, dir, "check", "-config", cfg, "GET", "/v1/models"); code != 1 || !strings.Contains(out, "DENY 401") {
		t.Fatalf("check without a credential: exit %d\n%s", code, out)
	}
}

// TestHealth: serve takes its listen address from the environment (all
// interfaces, as in a container), and health answers 0 for it over
// grpc.health.v1, found from the same variable, and over HTTP.
func TestHealth(t *testing.T) {
	bin := buildBinary(t)
	dir := demo.Dir(t)
	demo.WriteKeys(t, dir, "mg_test_", demo.Alice)
	cfg := writeServeConfig(t, dir, "")
	s := startServe(t, bin, cfg, "MODELGUARD_GRPC_ADDRESS=0.0.0.0:0")
	_, port, err := net.SplitHostPort(s.grpc)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.grpc, "[::]:") && !strings.HasPrefix(s.grpc, "0.0.0.0:") {
		t.Fatalf("serve listens on %s, want all interfaces from MODELGUARD_GRPC_ADDRESS", s.grpc)
	}
	for _, tc := range []struct {
		env  string
		args []string
	}{
		{"MODELGUARD_GRPC_ADDRESS=0.0.0.0:" + port, []string{"health"}},
		{"", []string{"health", "-server", "127.0.0.1:" + port, "-service", "envoy.service.auth.v3.Authorization"}},
		{"", []string{"health", "-http", "http://" + s.admin + "/healthz"}},
		{"", []string{"health", "-http", "http://" + s.admin + "/readyz"}},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = append(os.Environ(), tc.env)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "SERVING ") {
			t.Errorf("%s %v: %v\n%s", tc.env, tc.args, err, out)
		}
	}
	if code, out := runCLI(t, bin, dir, "health", "-http", "http://"+s.admin+"/nothing-here"); code != 1 {
		t.Errorf("health on a 404: exit %d\n%s", code, out)
	}
}
