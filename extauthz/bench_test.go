package extauthz

import (
	"context"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// benchCheckRequest is a chat completion as Envoy sends it: ten headers, a
// 1 KiB body, the peer address.
func benchCheckRequest(key string) *authv3.CheckRequest {
	body := `{"model":"gpt-4o-mini","max_tokens":256,"messages":[{"role":"user","content":"` + strings.Repeat("What is the weather like in Paris? ", 27) + `"}]}`
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "12345678901234567890", Method: "POST", Path: "/v1/chat/completions", Host: "models.local", Scheme: "https", Protocol: "HTTP/1.1",
			Headers: map[string]string{
				":authority": "models.local", ":method": "POST", ":path": "/v1/chat/completions", ":scheme": "https",
				"authorization": "Bearer " + key, "content-type": "application/json", "accept": "application/json",
				"user-agent": "OpenAI/Python 1.54.0", "x-request-id": "3f1b2c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d",
				"x-envoy-auth-partial-body": "false",
			},
			RawBody: []byte(body),
		}},
	}}
}

// BenchmarkCheckSteps is the server's side of an allowed check beside the
// decision itself, step by step, with the real core (example policy, API
// key, decision cache, audit off): decoding the message, translating it,
// the whole Check (translation and decision), and encoding the answer,
// each as the server's codec does it.
func BenchmarkCheckSteps(b *testing.B) {
	eng, key := fuzzEngine(b)
	a := NewAuthorization(eng, nil)
	wire, err := proto.Marshal(benchCheckRequest(key))
	if err != nil {
		b.Fatal(err)
	}
	cr := new(authv3.CheckRequest)
	if err := proto.Unmarshal(wire, cr); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	resp, _ := a.Check(ctx, cr)
	if resp.GetStatus().GetCode() != 0 {
		b.Fatalf("denied: %v", resp.GetDeniedResponse())
	}
	d := eng.Decide(ctx, toRequest(cr, eng.MaxBodyBytes()))
	codec := newSizingCodec()
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := sizedCheck{CheckRequest: new(authv3.CheckRequest)}
			if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("to_request", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			toRequest(cr, 1<<20)
		}
	})
	b.Run("check", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			a.Check(ctx, cr)
		}
	})
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := codec.Marshal(answer{d}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
