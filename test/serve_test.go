package test

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/testkit"
	"github.com/modelguard/modelguard/test/testkit/demo"
)

// serveProcess is a "modelguard serve" child process.
type serveProcess struct {
	cmd               *exec.Cmd
	grpc, admin, http string // http: "off" unless server.http.address is set
	exited            chan error
}

// startServe runs bin serve -config cfg with env added, and waits for
// it to log its listening addresses.
func startServe(t *testing.T, bin, cfg string, env ...string) *serveProcess {
	t.Helper()
	cmd := exec.Command(bin, "serve", "-config", cfg)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &serveProcess{cmd: cmd, exited: make(chan error, 1)}
	t.Cleanup(func() {
		cmd.Process.Kill() // no process left behind, whatever happened
		<-s.exited
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line struct{ Msg, GRPC, Admin, HTTP string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "modelguard ext_authz serving" {
				s.grpc, s.admin, s.http = line.GRPC, line.Admin, line.HTTP
				close(ready)
			} else if s.grpc == "" {
				t.Logf("server: %s", sc.Text())
			}
		}
		io.Copy(io.Discard, stderr)
		s.exited <- cmd.Wait()
	}()
	select {
	case <-ready:
	case err := <-s.exited:
		s.exited <- err
		t.Fatalf("server exited before serving: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("server did not start")
	}
	return s
}

// stop sends SIGTERM and waits for a clean exit (the graceful stop).
func (s *serveProcess) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-s.exited; err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	s.exited <- nil
}

// metric reads one sample from the server's /metrics.
func (s *serveProcess) metric(t *testing.T, name string) float64 {
	t.Helper()
	return scrape(t, "http://"+s.admin, name)
}

// writeServeConfig writes dir/config.yaml for a startServe child and
// returns its path: listeners on free loopback ports, demo.Config, then
// sections. sections follows the server section, so it may begin with more
// server settings (indented).
func writeServeConfig(t *testing.T, dir, sections string) string {
	t.Helper()
	const loopback = "server:\n  grpc_address: 127.0.0.1:0\n  admin_address: 127.0.0.1:0\n"
	return testkit.WriteFile(t, dir, "config.yaml", loopback+sections+demo.Config)
}
