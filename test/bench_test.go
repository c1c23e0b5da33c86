package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/modelguard/modelguard/httpauthz"
	"github.com/modelguard/modelguard/test/noopauthz"
	"github.com/modelguard/modelguard/test/redisserver"
	"github.com/modelguard/modelguard/test/testkit"
)

func benchCheck(b *testing.B, client authv3.AuthorizationClient, headers map[string]string) {
	benchCheckRequest(b, client, envoyCheckRequest(headers))
}

func benchCheckRequest(b *testing.B, client authv3.AuthorizationClient, req *authv3.CheckRequest) {
	ctx := context.Background()
	if _, err := client.Check(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Check(ctx, req)
			if err != nil {
				b.Error(err)
				return
			}
			if resp.GetStatus().GetCode() != 0 {
				b.Errorf("denied: %v", resp)
				return
			}
		}
	})
}

// envoyCheckRequest is a chat completion as Envoy would send it.
func envoyCheckRequest(headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{
		":authority": "models.local", ":method": "POST", ":path": "/v1/chat/completions", ":scheme": "https",
		"content-type": "application/json", "user-agent": "OpenAI/Python 1.54.0", "x-request-id": "bench",
		"x-envoy-auth-partial-body": "false",
	}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Method: "POST", Path: "/v1/chat/completions", Host: "models.local", Scheme: "https", Headers: h,
		RawBody: []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}],"max_tokens":64}`),
	}}}}
}

func dialBench(b testing.TB, addr string) authv3.AuthorizationClient {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// BenchmarkCheckGRPC measures Check over real gRPC on loopback: the no-op
// baseline, then modelguard with an API key and with an RS256 JWT, each
// including the audit line. Compare ns/op against "noop" from the same run.
func BenchmarkCheckGRPC(b *testing.B) {
	b.Run("noop", func(b *testing.B) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(noopauthz.Serve(lis).Stop)
		benchCheck(b, dialBench(b, lis.Addr().String()), nil)
	})
	e := newEnv(b, envOptions{})
	client := dialBench(b, e.svc.GRPCAddr().String())
	b.Run("api_key", func(b *testing.B) {
		benchCheck(b, client, map[string]string{"authorization": "Bearer " + e.keys["alice-key"]})
	})
	b.Run("jwt_rs256", func(b *testing.B) {
		benchCheck(b, client, map[string]string{"authorization": "Bearer " + token(b, jwt.SigningMethodRS256, e.signer, "k1", nil)})
	})
}

// TestNoopAnswersLikeModelguard holds the benchmark baseline's fixed answer
// to the shape of modelguard's allow (the same header names, removals and
// metadata keys, about the same size): the client decodes both, so a
// baseline answering less would make the comparison measure the client.
func TestNoopAnswersLikeModelguard(t *testing.T) {
	e := newEnv(t, envOptions{})
	client := dialBench(t, e.svc.GRPCAddr().String())
	got, err := client.Check(context.Background(), envoyCheckRequest(map[string]string{"authorization": "Bearer " + e.keys["alice-key"]}))
	if err != nil || got.GetStatus().GetCode() != 0 {
		t.Fatalf("modelguard: %v, %v", got, err)
	}
	shape := func(r *authv3.CheckResponse) (headers, removed, metadata []string) {
		for _, h := range r.GetOkResponse().GetHeaders() {
			headers = append(headers, h.GetHeader().GetKey())
		}
		return headers, r.GetOkResponse().GetHeadersToRemove(), slices.Sorted(maps.Keys(r.GetDynamicMetadata().GetFields()))
	}
	gh, gr, gm := shape(got)
	nh, nr, nm := shape(noopauthz.Allow)
	if !slices.Equal(gh, nh) || !slices.Equal(gr, nr) || !slices.Equal(gm, nm) {
		t.Errorf("no-op answers headers %v, removes %v, metadata %v; modelguard %v, %v, %v", nh, nr, nm, gh, gr, gm)
	}
	if g, n := proto.Size(got), proto.Size(noopauthz.Allow); n < g*9/10 || n > g*11/10 {
		t.Errorf("no-op's answer is %d bytes, modelguard's %d", n, g)
	}
}

// BenchmarkCheckLoadbenchBody is BenchmarkCheckGRPC/api_key with
// test/loadbench's 1 KiB chat body (testkit.ChatBody) instead of a short
// one: the body step as the load comparison pays it. (Named so that
// -bench 'CheckGRPC/...' does not select it.)
func BenchmarkCheckLoadbenchBody(b *testing.B) {
	e := newEnv(b, envOptions{})
	client := dialBench(b, e.svc.GRPCAddr().String())
	req := envoyCheckRequest(map[string]string{"authorization": "Bearer " + e.keys["alice-key"]})
	req.GetAttributes().GetRequest().GetHttp().RawBody = testkit.ChatBody(1024)
	benchCheckRequest(b, client, req)
}

// BenchmarkCheckModes compares the same request, a chat completion with
// an API key, decided by one engine through its two Envoy transports in
// one run: gRPC ext_authz (a CheckRequest) and the HTTP authorization
// service (the request Envoy's HTTP mode sends). "grpc" and "http" measure
// each on its own; "interleaved" alternates bursts of 64 checks (8 at a
// time) of each mode, so that both see the same machine load, and reports
// http/grpc, the HTTP mode's throughput as a fraction of the gRPC mode's
// (the target is at least 0.9).
func BenchmarkCheckModes(b *testing.B) {
	e := newEnv(b, envOptions{})
	key := e.keys["alice-key"]
	grpcReq := envoyCheckRequest(map[string]string{"authorization": "Bearer " + key})
	grpcClient := dialBench(b, e.svc.GRPCAddr().String())
	grpcCheck := func() error {
		resp, err := grpcClient.Check(context.Background(), grpcReq)
		if err == nil && resp.GetStatus().GetCode() != 0 {
			err = fmt.Errorf("denied: %v", resp)
		}
		return err
	}
	body := grpcReq.GetAttributes().GetRequest().GetHttp().GetRawBody()
	url := "http://" + e.http.Addr().String() + httpauthz.EnvoyPrefix + "/v1/chat/completions"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}}
	b.Cleanup(client.CloseIdleConnections)
	httpCheck := func() error {
		req, err := http.NewRequest("POST", url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Host = "models.local"
		req.Header = http.Header{ // as Envoy's HTTP client sends them
			"Authorization": {"Bearer " + key}, "Content-Type": {"application/json"}, "User-Agent": {"OpenAI/Python 1.54.0"},
			"X-Request-Id": {"bench"}, "X-Envoy-Auth-Partial-Body": {"false"},
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("denied: %d", resp.StatusCode)
		}
		return nil
	}
	for _, m := range []struct {
		name  string
		check func() error
	}{{"grpc", grpcCheck}, {"http", httpCheck}} {
		b.Run(m.name, func(b *testing.B) {
			if err := m.check(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := m.check(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	b.Run("interleaved", func(b *testing.B) {
		var grpcTime, httpTime time.Duration
		for range b.N {
			grpcTime += burst(b, 64, 8, grpcCheck)
			httpTime += burst(b, 64, 8, httpCheck)
		}
		b.ReportMetric(float64(grpcTime)/float64(httpTime), "http/grpc")
	})
}

// burst runs n checks, workers at a time, and returns how long they took.
func burst(b *testing.B, n, workers int, check func() error) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := check(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// BenchmarkCheckGRPCRateLimits measures the cost of rate limits through
// gRPC in one run: an API key request with no limits, then with a request
// limit and a token budget that both apply, counted in-process and in a
// real Redis. Compare throughput (1/ns/op) against "limits_off".
func BenchmarkCheckGRPCRateLimits(b *testing.B) {
	const rules = `
  rules:
    - {name: rpm, requests: 1000000, per: 1s, key: [subject]}
    - {name: tpm, tokens: 1000000, per: 1s, key: [key_id]}
`
	redis := redisserver.Start(b)
	for _, c := range []struct{ name, limits string }{
		{"limits_off", "rate_limits: {}"},
		{"limits_local", "rate_limits:" + rules},
		{"limits_redis", "rate_limits:\n  store: redis\n  redis: {address: \"" + redis.Addr + "\", timeout: 1s}" + rules},
	} {
		e := newEnv(b, envOptions{rateLimits: c.limits})
		client := dialBench(b, e.svc.GRPCAddr().String())
		b.Run(c.name, func(b *testing.B) {
			benchCheck(b, client, map[string]string{"authorization": "Bearer " + e.keys["alice-key"]})
		})
	}
}
