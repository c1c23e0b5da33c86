package test

import (
	"context"
	"net"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelguard/modelguard/test/redisserver"
)

// noopServer is the baseline: an ext_authz server that allows everything
// without looking, over the same gRPC stack and socket type.
type noopServer struct {
	authv3.UnimplementedAuthorizationServer
}

func (noopServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{}, nil
}

func benchCheck(b *testing.B, client authv3.AuthorizationClient, headers map[string]string) {
	req := envoyCheckRequest(headers)
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

func dialBench(b *testing.B, addr string) authv3.AuthorizationClient {
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
		s := grpc.NewServer()
		authv3.RegisterAuthorizationServer(s, noopServer{})
		go s.Serve(lis)
		b.Cleanup(s.Stop)
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
