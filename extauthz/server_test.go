package extauthz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/config"
)

type deciderFunc func(ctx context.Context, req *policy.Request) *policy.Decision

func (f deciderFunc) Decide(ctx context.Context, req *policy.Request) *policy.Decision {
	return f(ctx, req)
}

func (f deciderFunc) Deny(id string, status int, reason, message string) *policy.Decision {
	return &policy.Decision{ID: id, Status: status, Reason: reason, Message: message}
}

func (f deciderFunc) MaxBodyBytes() int { return 1 << 20 }

var allowEveryone = deciderFunc(func(context.Context, *policy.Request) *policy.Decision {
	return &policy.Decision{ID: "d", Allow: true, Status: 200, Reason: "allowed"}
})

func serverConfig(tlsCfg config.TLS) *config.Config {
	return &config.Config{Server: config.Server{GRPCAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0",
		MaxMessageBytes: 1 << 20, ShutdownGrace: 10 * time.Second, TLS: tlsCfg}}
}

func start(t *testing.T, cfg *config.Config, d Decider) *Service {
	t.Helper()
	s, err := Listen(cfg, d, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func checkReq() *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/v1/models"}}}}
}

func TestServerOverRealSockets(t *testing.T) {
	s := start(t, serverConfig(config.TLS{}), allowEveryone)
	conn := dial(t, s.GRPCAddr().String(), insecure.NewCredentials())
	ctx := context.Background()

	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, checkReq())
	if err != nil || resp.GetStatus().GetCode() != 0 {
		t.Fatalf("Check: %v %v", resp, err)
	}
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v %v", svc, h, err)
		}
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	rr, err := stream.Recv()
	if err != nil || !strings.Contains(rr.String(), "envoy.service.auth.v3.Authorization") {
		t.Errorf("reflection: %v %v", rr, err)
	}

	admin := "http://" + s.AdminAddr().String()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200} {
		resp, err := http.Get(admin + path)
		if err != nil || resp.StatusCode != want {
			t.Errorf("GET %s: %v %v", path, resp, err)
			continue
		}
		resp.Body.Close()
	}
}

// A panic anywhere in Check, or no decision, must become a denial, never
// a gRPC error that Envoy could turn into an allow with failure_mode_allow.
func TestCheckPanicDenies(t *testing.T) {
	for name, decide := range map[string]func(context.Context, *policy.Request) *policy.Decision{
		"panic":       func(context.Context, *policy.Request) *policy.Decision { panic("boom") },
		"no decision": func(context.Context, *policy.Request) *policy.Decision { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			s := start(t, serverConfig(config.TLS{}), deciderFunc(decide))
			conn := dial(t, s.GRPCAddr().String(), insecure.NewCredentials())
			resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), checkReq())
			if err != nil {
				t.Fatalf("gRPC error for a decision: %v", err)
			}
			if resp.GetStatus().GetCode() == 0 || resp.GetDeniedResponse().GetStatus().GetCode() != 503 {
				t.Fatalf("want a 503 denial, got %v", resp)
			}
			if resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue() == "" {
				t.Fatalf("the denial carries no decision id: %v", resp)
			}
		})
	}
}

func TestMessageSizeLimit(t *testing.T) {
	cfg := serverConfig(config.TLS{})
	cfg.Server.MaxMessageBytes = 64 << 10
	s := start(t, cfg, allowEveryone)
	conn := dial(t, s.GRPCAddr().String(), insecure.NewCredentials())
	req := checkReq()
	req.Attributes.Request.Http.RawBody = make([]byte, 128<<10)
	if _, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), req); err == nil {
		t.Fatal("a message over max_message_bytes was accepted")
	}
}

// Shutdown must let an in-flight check finish and answer it.
func TestGracefulShutdownDrains(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s, err := Listen(serverConfig(config.TLS{}), deciderFunc(func(context.Context, *policy.Request) *policy.Decision {
		close(entered)
		<-release
		return &policy.Decision{ID: "slow", Allow: true, Status: 200}
	}), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	conn := dial(t, s.GRPCAddr().String(), insecure.NewCredentials())
	result := make(chan error, 1)
	go func() {
		resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), checkReq())
		if err == nil && resp.GetStatus().GetCode() != 0 {
			err = io.ErrUnexpectedEOF
		}
		result <- err
	}()
	<-entered
	shut := make(chan struct{})
	go func() { s.Shutdown(context.Background()); close(shut) }()

	// While draining, readiness fails so load balancers stop sending.
	for {
		resp, err := http.Get("http://" + s.AdminAddr().String() + "/readyz")
		if err != nil {
			t.Fatalf("readyz: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-shut:
		t.Fatal("Shutdown returned before the in-flight check finished")
	default:
	}
	close(release)
	if err := <-result; err != nil {
		t.Fatalf("in-flight check: %v", err)
	}
	<-shut
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	srvCert, srvKey := newLeaf(t, ca, caKey, "server", []string{"127.0.0.1"}, x509.ExtKeyUsageServerAuth)
	writePEM(t, filepath.Join(dir, "server.pem"), "CERTIFICATE", srvCert.Raw)
	writeKey(t, filepath.Join(dir, "server-key.pem"), srvKey)
	cliCert, cliKey := newLeaf(t, ca, caKey, "envoy", nil, x509.ExtKeyUsageClientAuth)

	cfg := serverConfig(config.TLS{CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server-key.pem"), ClientCAFile: filepath.Join(dir, "ca.pem")})
	s := start(t, cfg, allowEveryone)
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	withCert := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{{Certificate: [][]byte{cliCert.Raw}, PrivateKey: cliKey}}}
	conn := dial(t, s.GRPCAddr().String(), credentials.NewTLS(withCert))
	if resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), checkReq()); err != nil || resp.GetStatus().GetCode() != 0 {
		t.Fatalf("mTLS client: %v %v", resp, err)
	}

	noCert := dial(t, s.GRPCAddr().String(), credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := authv3.NewAuthorizationClient(noCert).Check(ctx, checkReq()); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	plain := dial(t, s.GRPCAddr().String(), insecure.NewCredentials())
	if _, err := authv3.NewAuthorizationClient(plain).Check(ctx, checkReq()); err == nil {
		t.Fatal("a plaintext client was served")
	}
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func newLeaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, ips []string, usage x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t *testing.T, path string, k *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "PRIVATE KEY", der)
}
