package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const healthUsage = `Usage:
  modelguard health [-server ADDR] [-service NAME] [-ca FILE [-cert FILE -key FILE]] [-timeout D]
  modelguard health -http URL [-timeout D]

Asks a running modelguard whether it serves: grpc.health.v1 Check on the
gRPC listener (what Kubernetes' grpc probe asks), or GET URL (the admin
listener's /healthz or /readyz). Exits 0 when it serves, 1 when it does
not or cannot be reached, 2 on a usage error. It needs no shell, so a
container's HEALTHCHECK can run it.
`

func health(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), healthUsage); fs.PrintDefaults() }
	server := fs.String("server", localTarget(os.Getenv(envGRPCAddress)), "gRPC address of the server (default: the port of $"+envGRPCAddress+" on loopback, else 127.0.0.1:9191)")
	service := fs.String("service", "", `service to ask about ("": the server as a whole; envoy.service.auth.v3.Authorization: the check service)`)
	httpURL := fs.String("http", "", "check this HTTP URL instead (200 means healthy), such as http://127.0.0.1:9192/healthz")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long (a server still starting gets until then)")
	caFile := fs.String("ca", "", "CA certificate to verify the server (enables TLS)")
	certFile := fs.String("cert", "", "client certificate for mTLS")
	keyFile := fs.String("key", "", "client key for mTLS")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(fs, "unexpected argument %q (flags only)", fs.Arg(0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var (
		target string
		err    error
	)
	if *httpURL != "" {
		target, err = *httpURL, httpHealth(ctx, *httpURL)
	} else {
		target, err = *server, grpcHealth(ctx, *server, *service, tlsFiles{*caFile, *certFile, *keyFile})
	}
	if err != nil {
		fmt.Fprintf(stderr, "modelguard health: %s: %v\n", target, err)
		return 1
	}
	fmt.Fprintf(stdout, "SERVING %s\n", target)
	return 0
}

func grpcHealth(ctx context.Context, addr, service string, tf tlsFiles) error {
	conn, err := dial(addr, tf)
	if err != nil {
		return err
	}
	defer conn.Close()
	// Wait for a connection until the timeout rather than failing at the
	// first refused dial: a server still starting gets the whole timeout.
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service}, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("status %s", s)
	}
	return nil
}

func httpHealth(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// localTarget is where a health check beside the server (in its
// container) reaches a listen address: a wildcard host such as 0.0.0.0 is
// not an address to dial, so its port on loopback.
func localTarget(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	switch {
	case err != nil || port == "" || port == "0":
		return "127.0.0.1:9191"
	case host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified():
		return net.JoinHostPort("127.0.0.1", port)
	}
	return listen
}
