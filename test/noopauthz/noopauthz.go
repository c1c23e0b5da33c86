// Package noopauthz is the benchmark baseline: an Envoy ext_authz server
// that allows every request without looking at it, over the same gRPC stack
// as modelguard. BenchmarkCheckGRPC and the load comparison (test/loadbench)
// measure modelguard against it; it is never shipped.
//
// Its answer is fixed and shaped like the allow an authorizer sends
// (modelguard's for an API key: five upstream headers, the credential
// removed, four metadata strings): the client decodes both servers'
// answers, and ghz decodes them as dynamic messages, ~40% of its CPU
// against modelguard's. With an empty answer the load comparison measured
// that decoding, not the servers. The answer is encoded once, at start, so
// that answering costs the baseline nothing: it stays the floor.
package noopauthz

import (
	"context"
	"net"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Server allows everything.
type Server struct {
	authv3.UnimplementedAuthorizationServer
}

// Check allows the request with Allow.
func (Server) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return Allow, nil
}

// Allow is the answer to every check: read only (gRPC encodes it for each
// call).
var Allow = func() *authv3.CheckResponse {
	header := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, Append: wrapperspb.Bool(false)}
	}
	const decisionID = "00000000000000000000000000000000" // as long as modelguard's
	return &authv3.CheckResponse{
		Status: &status.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				header("x-modelguard-subject", "alice"),
				header("x-modelguard-roles", "chat-user"),
				header("x-modelguard-auth-method", "api_key"),
				header("x-modelguard-key-id", "alice-bench"),
				header("x-modelguard-decision-id", decisionID),
			},
			HeadersToRemove: []string{"authorization"},
		}},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"decision_id":     structpb.NewStringValue(decisionID),
			"policy_revision": structpb.NewStringValue("000000000000"),
			"reason":          structpb.NewStringValue("allowed"),
			"subject":         structpb.NewStringValue("alice"),
		}},
	}
}()

// Serve serves the no-op server on lis (with reflection, which ghz uses, as
// modelguard does) until the returned server is stopped.
func Serve(lis net.Listener) *grpc.Server {
	s := grpc.NewServer(grpc.ForceServerCodecV2(codec{encoding.GetCodecV2("proto")}))
	authv3.RegisterAuthorizationServer(s, Server{})
	reflection.Register(s)
	go s.Serve(lis)
	return s
}

// allowWire is Allow's encoding.
var allowWire = func() []byte {
	b, err := proto.Marshal(Allow)
	if err != nil {
		panic(err)
	}
	return b
}()

// codec is gRPC's proto codec, except that Allow is sent as allowWire.
type codec struct{ encoding.CodecV2 }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if v == Allow {
		return mem.BufferSlice{mem.SliceBuffer(allowWire)}, nil // never freed to a pool
	}
	return c.CodecV2.Marshal(v)
}
