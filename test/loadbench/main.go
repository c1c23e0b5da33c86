// Command loadbench compares modelguard with a no-op ext_authz server under
// the same load ("make bench"): the same CheckRequest bytes (a 1 KiB OpenAI
// chat body, the example RBAC policy, audit to a file), sent by ghz with 50
// concurrent calls over 4 connections, the server pinned to one CPU and ghz
// to the other. It prints throughput, p50 and p99 of each server and the
// ratios, then p99 at a fixed rate of half the no-op's throughput.
//
// It is a benchmark tool, never shipped. Run it through scripts/loadbench.sh,
// which builds modelguard and installs the pinned ghz.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/modelguard/modelguard/examples"
	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/test/noopauthz"
)

type options struct {
	modelguard, ghz   string
	duration, warmup  time.Duration
	serverCPU, ghzCPU string
	concurrency       int
	connections       int
	dir               string
}

func main() {
	var o options
	serveNoop := flag.String("serve-noop", "", "internal: serve the no-op server on this address")
	flag.StringVar(&o.modelguard, "modelguard", "bin/modelguard", "modelguard binary")
	flag.StringVar(&o.ghz, "ghz", "ghz", "ghz binary (v0.121.0)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per run")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before each run")
	flag.StringVar(&o.serverCPU, "server-cpu", "0", "CPU list the server is pinned to (taskset -c)")
	flag.StringVar(&o.ghzCPU, "ghz-cpu", "1", "CPU list ghz is pinned to")
	flag.IntVar(&o.concurrency, "c", 50, "concurrent calls")
	flag.IntVar(&o.connections, "connections", 4, "gRPC connections")
	flag.StringVar(&o.dir, "dir", "", "working directory, new or empty (default: a temporary one, removed at exit)")
	flag.Parse()
	if *serveNoop != "" {
		if err := runNoop(*serveNoop); err != nil {
			fmt.Fprintln(os.Stderr, "loadbench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(1)
	}
}

// result is what a ghz run reports that we print.
type result struct {
	rps      float64
	p50, p99 time.Duration
}

func run(o options) error {
	if o.dir == "" {
		d, err := os.MkdirTemp("", "modelguard-loadbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.dir = d
	}
	w, err := writeWorkloads(o.dir)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	fmt.Printf("loadbench: ghz -c %d --connections %d, %v per run after %v warm-up; server on CPU %s, ghz on CPU %s\n",
		o.concurrency, o.connections, o.duration, o.warmup, o.serverCPU, o.ghzCPU)
	noopAddr, mgAddr := freeAddr(), freeAddr()
	noop := func() (*server, error) {
		return start(o, "noop", noopAddr, self, "-serve-noop", noopAddr)
	}
	mg := func() (*server, error) {
		if err := writeConfig(o.dir, mgAddr); err != nil {
			return nil, err
		}
		return start(o, "modelguard", mgAddr, o.modelguard, "serve", "-config", filepath.Join(o.dir, "config.yaml"))
	}

	type row struct {
		name      string
		noop, mg  result
		rateNoop  result
		rateMG    result
		rateLimit float64
	}
	rows := []row{{name: "RS256 JWT + schema + RBAC + audit"}, {name: "API key + schema + RBAC + audit"}}
	files := []string{w.jwt, w.apiKey}
	// Both servers run at once on the server CPU (the idle one costs
	// nothing), and each measurement of modelguard directly follows the
	// no-op's on the same workload, so that load from elsewhere on the
	// machine drifts as little as possible between the two.
	servers := make([]*server, 0, 2)
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	for _, start := range []func() (*server, error){noop, mg} {
		s, err := start()
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}
	noopSrv, mgSrv := servers[0], servers[1]
	for i, f := range files {
		for _, s := range servers {
			if err := s.expectAllowed(f); err != nil {
				return err
			}
		}
		var err error
		if rows[i].noop, err = noopSrv.load(o, f, 0); err != nil {
			return err
		}
		if rows[i].mg, err = mgSrv.load(o, f, 0); err != nil {
			return err
		}
		// Latency at a fixed rate: half of what the no-op sustained.
		rows[i].rateLimit = rows[i].noop.rps / 2
		if rows[i].rateNoop, err = noopSrv.load(o, f, rows[i].rateLimit); err != nil {
			return err
		}
		if rows[i].rateMG, err = mgSrv.load(o, f, rows[i].rateLimit); err != nil {
			return err
		}
	}

	fmt.Println()
	fmt.Println("| workload | no-op req/s | modelguard req/s | ratio | no-op p50 / p99 | modelguard p50 / p99 |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %.0f | %.2f | %s / %s | %s / %s |\n", r.name, r.noop.rps, r.mg.rps, r.mg.rps/r.noop.rps,
			ms(r.noop.p50), ms(r.noop.p99), ms(r.mg.p50), ms(r.mg.p99))
	}
	fmt.Println()
	fmt.Println("| at a fixed rate (half the no-op's throughput) | req/s | no-op p99 | modelguard p99 | ratio |")
	fmt.Println("|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %s | %s | %.2f |\n", r.name, r.rateLimit, ms(r.rateNoop.p99), ms(r.rateMG.p99),
			float64(r.rateMG.p99)/float64(r.rateNoop.p99))
	}
	return nil
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + " ms" }

// workloads are the files holding one serialized CheckRequest each.
type workloads struct{ jwt, apiKey string }

const (
	benchIssuer   = "https://bench.modelguard.local"
	benchAudience = "modelguard-bench"
)

// writeWorkloads writes the example policy, a fresh RSA key, an API key
// file, and the two CheckRequests into dir.
func writeWorkloads(dir string) (workloads, error) {
	var w workloads
	if err := os.CopyFS(dir, examples.Demo); err != nil {
		return w, err
	}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return w, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return w, err
	}
	if err := os.WriteFile(filepath.Join(dir, "jwt.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return w, err
	}
	now := time.Now()
	token, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": benchIssuer, "aud": benchAudience, "sub": "alice", "roles": []string{"chat-user"},
		"iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix(),
	}).SignedString(priv)
	if err != nil {
		return w, err
	}
	key, err := apikey.Mint("mg_bench_")
	if err != nil {
		return w, err
	}
	if err := os.WriteFile(filepath.Join(dir, "keys.yaml"), []byte("keys:\n"+apikey.Entry("alice-bench", "alice", []string{"chat-user"}, key)), 0o600); err != nil {
		return w, err
	}
	w.jwt = filepath.Join(dir, "check-jwt.bin")
	w.apiKey = filepath.Join(dir, "check-apikey.bin")
	for f, cred := range map[string]string{w.jwt: token, w.apiKey: key} {
		b, err := proto.Marshal(checkRequest("Bearer " + cred))
		if err != nil {
			return w, err
		}
		if err := os.WriteFile(f, b, 0o600); err != nil {
			return w, err
		}
	}
	return w, nil
}

// writeConfig writes modelguard's configuration serving addr.
func writeConfig(dir, addr string) error {
	cfg := `server:
  grpc_address: ` + addr + `
  admin_address: "off"
authentication:
  jwt:
    issuers:
      - issuer: ` + benchIssuer + `
        audiences: [` + benchAudience + `]
        algorithms: [RS256]
        keys:
          - pem_file: jwt.pub
  api_keys:
    file: keys.yaml
authorization:
  policy_dir: policy
  query: data.modelguard.authz.decision
models:
  - name: gpt-4o-mini
    operation: chat
    limits: {max_tokens: 4096, max_messages: 100, max_prompt_chars: 200000}
audit:
  output: audit.jsonl
log:
  level: warn
`
	return os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644)
}

// checkRequest is a chat completion as Envoy sends it, with a 1 KiB body.
func checkRequest(authorization string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: addressOf("10.0.0.7", 51000)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "12345678901234567890", Method: "POST", Path: "/v1/chat/completions", Host: "models.local", Scheme: "https",
			Protocol: "HTTP/1.1",
			Headers: map[string]string{
				":authority": "models.local", ":method": "POST", ":path": "/v1/chat/completions", ":scheme": "https",
				"authorization": authorization, "content-type": "application/json", "accept": "application/json",
				"user-agent": "OpenAI/Python 1.54.0", "x-request-id": "3f1b2c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d",
				"x-envoy-auth-partial-body": "false",
			},
			RawBody: chatBody(1024),
		}},
	}}
}

// chatBody is an OpenAI chat request of about n bytes.
func chatBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"gpt-4o-mini","temperature":0.7,"max_tokens":256,"messages":[` +
		`{"role":"system","content":"You are a helpful assistant that answers questions about the weather."},` +
		`{"role":"user","content":"`)
	const tail = `"}]}`
	for b.Len() < n-len(tail) {
		b.WriteString("What is the weather like in Paris today? ")
	}
	b.Truncate(n - len(tail))
	b.WriteString(tail)
	return b.Bytes()
}

func addressOf(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// runNoop serves the no-op server on addr until interrupted.
func runNoop(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := noopauthz.Serve(lis)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	s.Stop()
	return nil
}

// server is one server process pinned to the server CPU.
type server struct {
	name string
	addr string
	cmd  *exec.Cmd
	conn *grpc.ClientConn
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func start(o options, name, addr, bin string, args ...string) (*server, error) {
	cmd := exec.Command("taskset", append([]string{"-c", o.serverCPU, bin}, args...)...)
	cmd.Dir = o.dir
	// Logs go to a file: calls cut off at the end of a run are logged as
	// errors and would drown the results.
	logFile, err := os.OpenFile(filepath.Join(o.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, addr: addr, cmd: cmd}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s did not listen on %s (see %s)", name, addr, logFile.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.stop()
		return nil, err
	}
	s.conn = conn
	return s, nil
}

// expectAllowed sends the request in file once and requires an allow, so
// that the load measures allowed requests.
func (s *server) expectAllowed(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	req := &authv3.CheckRequest{}
	if err := proto.Unmarshal(b, req); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(s.conn).Check(ctx, req)
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	if c := resp.GetStatus().GetCode(); c != 0 {
		return fmt.Errorf("%s denied the benchmark request (%s): %v", s.name, filepath.Base(file), resp.GetDeniedResponse())
	}
	return nil
}

// load runs ghz with the request in file: unbounded when rps is 0, else at
// that fixed rate.
func (s *server) load(o options, file string, rps float64) (result, error) {
	if o.warmup > 0 {
		if _, err := s.ghz(o, file, rps, o.warmup); err != nil {
			return result{}, err
		}
	}
	r, err := s.ghz(o, file, rps, o.duration)
	if err != nil {
		return result{}, err
	}
	label := "max"
	if rps > 0 {
		label = fmt.Sprintf("%.0f req/s", rps)
	}
	fmt.Printf("  %-10s %-16s %-9s %8.0f req/s  p50 %s  p99 %s\n", s.name, filepath.Base(file), label, r.rps, ms(r.p50), ms(r.p99))
	return r, nil
}

func (s *server) ghz(o options, file string, rps float64, d time.Duration) (result, error) {
	args := []string{"-c", o.ghzCPU, o.ghz, "--insecure",
		"--call", "envoy.service.auth.v3.Authorization.Check",
		"--binary-file", file,
		"-c", strconv.Itoa(o.concurrency), "--connections", strconv.Itoa(o.connections),
		"-z", d.String(), "--duration-stop", "ignore", "-O", "json",
	}
	if rps > 0 {
		args = append(args, "--rps", strconv.Itoa(int(rps)))
	}
	cmd := exec.Command("taskset", append(args, s.addr)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return result{}, fmt.Errorf("ghz against %s: %w", s.name, err)
	}
	var rep struct {
		RPS     float64 `json:"rps"`
		Latency []struct {
			Percentage int           `json:"percentage"`
			Latency    time.Duration `json:"latency"`
		} `json:"latencyDistribution"`
		Status map[string]int `json:"statusCodeDistribution"`
		Errors map[string]int `json:"errorDistribution"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return result{}, fmt.Errorf("ghz output: %w", err)
	}
	for code, n := range rep.Status {
		if code != "OK" && n > 0 {
			return result{}, fmt.Errorf("%s: %d calls ended %s (errors: %v)", s.name, n, code, rep.Errors)
		}
	}
	r := result{rps: rep.RPS}
	for _, l := range rep.Latency {
		switch l.Percentage {
		case 50:
			r.p50 = l.Latency
		case 99:
			r.p99 = l.Latency
		}
	}
	if r.p99 == 0 {
		return result{}, errors.New("ghz reported no p99")
	}
	return r, nil
}

func (s *server) stop() error {
	if s.conn != nil {
		s.conn.Close()
	}
	if s.cmd.Process == nil {
		return nil
	}
	s.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case <-done:
		return nil
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not stop", s.name)
	}
}
