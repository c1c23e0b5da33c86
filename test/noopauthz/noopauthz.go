// Package noopauthz is the benchmark baseline: an Envoy ext_authz server
// that allows every request without looking at it, over the same gRPC stack
// as modelguard. BenchmarkCheckGRPC and the load comparison (test/loadbench)
// measure modelguard against it; it is never shipped.
package noopauthz

import (
	"context"
	"net"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
)

// Server allows everything.
type Server struct {
	authv3.UnimplementedAuthorizationServer
}

// Check allows the request.
func (Server) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{}, nil
}

// Serve serves the no-op server on lis (with reflection, which ghz uses, as
// modelguard does) until the returned server is stopped.
func Serve(lis net.Listener) *grpc.Server {
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, Server{})
	reflection.Register(s)
	go s.Serve(lis)
	return s
}
