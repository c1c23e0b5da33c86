package testkit

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// OTLPReceiver is an OpenTelemetry collector for tests: a real OTLP trace
// endpoint, over gRPC (the collector's TraceService) or HTTP (POST
// /v1/traces, protobuf), that keeps what it receives.
type OTLPReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	// Endpoint is the URL to configure as tracing.endpoint.
	Endpoint string

	mu      sync.Mutex
	exports []*collectortrace.ExportTraceServiceRequest
	raw     [][]byte
	header  http.Header // of the last HTTP export
}

// NewOTLPGRPCReceiver starts a gRPC OTLP receiver on loopback, stopped when
// the test ends.
func NewOTLPGRPCReceiver(tb testing.TB) *OTLPReceiver {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &OTLPReceiver{Endpoint: "http://" + lis.Addr().String()}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, r)
	go srv.Serve(lis)
	tb.Cleanup(srv.Stop)
	return r
}

// NewOTLPHTTPReceiver starts an HTTP OTLP receiver on loopback, stopped
// when the test ends.
func NewOTLPHTTPReceiver(tb testing.TB) *OTLPReceiver {
	tb.Helper()
	r := &OTLPReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || req.Header.Get("content-type") != "application/x-protobuf" {
			http.Error(w, "want POST /v1/traces with a protobuf body", http.StatusBadRequest)
			return
		}
		body, err := io.ReadAll(req.Body)
		var ex collectortrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &ex)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.keep(&ex, body)
		r.mu.Lock()
		r.header = req.Header.Clone()
		r.mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("content-type", "application/x-protobuf")
		w.Write(out)
	}))
	tb.Cleanup(srv.Close)
	r.Endpoint = srv.URL + "/v1/traces"
	return r
}

// Export is the gRPC TraceService method.
func (r *OTLPReceiver) Export(_ context.Context, ex *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	raw, err := proto.Marshal(ex)
	if err != nil {
		return nil, err
	}
	r.keep(ex, raw)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *OTLPReceiver) keep(ex *collectortrace.ExportTraceServiceRequest, raw []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exports = append(r.exports, ex)
	r.raw = append(r.raw, raw)
}

// Exports is how many export requests arrived.
func (r *OTLPReceiver) Exports() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.exports)
}

// Header is the header of the last export an HTTP receiver took.
func (r *OTLPReceiver) Header() http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.header
}

// ReceivedSpan is one span with the service.name of its resource.
type ReceivedSpan struct {
	*tracev1.Span
	Service string
}

// Spans returns every span received, in arrival order.
func (r *OTLPReceiver) Spans() []ReceivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []ReceivedSpan
	for _, ex := range r.exports {
		for _, rs := range ex.GetResourceSpans() {
			service := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					out = append(out, ReceivedSpan{s, service})
				}
			}
		}
	}
	return out
}

// Contains reports whether any export, as received on the wire, holds s
// anywhere (attribute, name, resource, event).
func (r *OTLPReceiver) Contains(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, raw := range r.raw {
		if bytes.Contains(raw, []byte(s)) {
			return true
		}
	}
	return false
}

// Attr returns a string or integer span attribute as text ("" when
// absent).
func (s ReceivedSpan) Attr(key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() != key {
			continue
		}
		switch v := kv.GetValue().GetValue().(type) {
		case *commonv1.AnyValue_StringValue:
			return v.StringValue
		case *commonv1.AnyValue_IntValue:
			return strconv.FormatInt(v.IntValue, 10)
		}
	}
	return ""
}
