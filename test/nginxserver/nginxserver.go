// Package nginxserver runs a real nginx (Debian's, which has the
// auth_request module) for the length of a test: one process (daemon off,
// master_process off) whose pid file, logs and temporary files live in the
// test's directory, so it needs no privileges. CI installs nginx
// (.ci/run); tests skip where it is absent.
package nginxserver

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/testkit"
)

// Server is one nginx process.
type Server struct {
	Dir string // its prefix: configuration, logs, temporary files
	cmd *exec.Cmd
}

// Binary returns the nginx executable, skipping the test when nginx is not
// installed (failing it on CI, which installs it).
func Binary(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"nginx", "/usr/sbin/nginx"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("nginx not installed: .ci/run installs it")
	}
	t.Skip("nginx not installed (apt-get install nginx)")
	return ""
}

// FreePort returns a loopback address no one listens on (for nginx, which
// cannot be told to pick a port itself).
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// MainConfig wraps http, the contents of an http block, in a main
// configuration that runs unprivileged out of dir.
func MainConfig(dir, http string) string {
	var b strings.Builder
	b.WriteString("daemon off;\nmaster_process off;\nworker_processes 1;\n")
	b.WriteString("pid " + filepath.Join(dir, "nginx.pid") + ";\n")
	b.WriteString("error_log " + filepath.Join(dir, "error.log") + " info;\n")
	b.WriteString("events { worker_connections 256; }\nhttp {\n")
	b.WriteString("  access_log " + filepath.Join(dir, "access.log") + ";\n")
	for _, temp := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		b.WriteString("  " + temp + "_temp_path " + filepath.Join(dir, temp) + ";\n")
	}
	b.WriteString(http)
	b.WriteString("\n}\n")
	return b.String()
}

// Test runs nginx -t on the main configuration MainConfig(dir, http)
// builds, and returns its output and whether it passed.
func Test(t testing.TB, dir, http string) (string, bool) {
	t.Helper()
	conf := testkit.WriteFile(t, dir, "nginx.conf", MainConfig(dir, http))
	out, err := exec.Command(Binary(t), "-t", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf).CombinedOutput()
	return string(out), err == nil
}

// Start checks and starts nginx on MainConfig(dir, http) and waits until
// it accepts connections on listen (the address http listens on); it is
// stopped when the test ends.
func Start(t testing.TB, http, listen string) *Server {
	t.Helper()
	dir := t.TempDir()
	if out, ok := Test(t, dir, http); !ok {
		t.Fatalf("nginx -t:\n%s", out)
	}
	s := &Server{Dir: dir}
	s.cmd = exec.Command(Binary(t), "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", filepath.Join(dir, "nginx.conf"))
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-exited
	})
	testkit.Eventually(t, "nginx listening on "+listen, func() bool {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("nginx exited: %v\n%s", err, s.ErrorLog())
		default:
		}
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return s
}

// ErrorLog returns nginx's error log so far, for failure messages.
func (s *Server) ErrorLog() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "error.log"))
	return string(b)
}
