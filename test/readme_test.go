package test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// readmeBlock returns the shell block of README.md that follows the
// marker <!-- readme-test: name -->.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(data), "<!-- readme-test: "+name+" -->\n```sh\n")
	if !ok {
		t.Fatalf("README.md has no block marked readme-test: %s", name)
	}
	block, _, ok := strings.Cut(after, "```\n")
	if !ok {
		t.Fatalf("README.md block %s is not closed", name)
	}
	return block
}

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// TestReadmeCLITour runs the Quick tour's CLI block as printed, in an empty
// directory, with bin/modelguard being the binary under test and the ports
// 9191 and 9192 moved to free ones (for the server, through the
// environment variables serve reads).
func TestReadmeCLITour(t *testing.T) {
	bin := buildBinary(t)
	grpcPort, adminPort := freePort(t), freePort(t)
	script := readmeBlock(t, "cli")
	script = strings.ReplaceAll(script, "bin/modelguard", bin)
	script = strings.ReplaceAll(script, ":9191", ":"+grpcPort)
	script = strings.ReplaceAll(script, ":9192", ":"+adminPort)
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "MODELGUARD_GRPC_ADDRESS=127.0.0.1:"+grpcPort, "MODELGUARD_ADMIN_ADDRESS=127.0.0.1:"+adminPort)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the tour's last command failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"Wrote demo: config.yaml",                   // init
		"DENY 401  reason=credentials_missing",      // check -config
		"Its hash was appended to demo/ci-keys.txt", // keys mint -file
		"SERVING 127.0.0.1:" + grpcPort,             // health
		"DENY 401  reason=api_key_unknown",          // check -server
		"OK 1 files",                                // audit verify
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the tour's output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "Usage:") {
		t.Errorf("a command of the tour was refused:\n%s", out)
	}
}
