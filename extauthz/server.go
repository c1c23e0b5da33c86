package extauthz

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/models"
)

// Decider is the core, as the server uses it: *policy.Engine.
type Decider interface {
	Decide(ctx context.Context, req *policy.Request) *policy.Decision
	Deny(id string, status int, reason, message string) *policy.Decision
	// MaxBodyBytes is the largest body any model accepts.
	MaxBodyBytes() int
}

// BodyBudget bounds the request bytes held by checks in flight
// (admission.max_inflight_body_bytes); *policy.Engine implements it.
type BodyBudget interface {
	// ReserveBody takes n bytes, waiting briefly; false means overloaded.
	ReserveBody(ctx context.Context, n int64) bool
	ReleaseBody(n int64)
}

// Authorization implements envoy.service.auth.v3.Authorization.
type Authorization struct {
	authv3.UnimplementedAuthorizationServer
	decider Decider
	log     *slog.Logger
	// budget is the decider's BodyBudget, nil when it has none; maxMessage
	// is what a message still being read counts against it.
	budget     BodyBudget
	maxMessage int64
}

// NewAuthorization returns the Check handler over d. When d is also a
// BodyBudget, checks served by Listen's server take room in it.
func NewAuthorization(d Decider, log *slog.Logger) *Authorization {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Authorization{decider: d, log: log}
	a.budget, _ = d.(BodyBudget)
	return a
}

// authorizationService is envoy.service.auth.v3.Authorization with Check
// served by a stream handler. grpc-go reads and decodes a unary request
// before the handler or any interceptor runs, so 200 concurrent 8 MiB
// checks would all be in memory before modelguard could refuse one; a
// stream handler runs first and takes room in the body budget before it
// reads the message. On the wire a unary call and this are the same.
var authorizationService = grpc.ServiceDesc{
	ServiceName: authv3.Authorization_ServiceDesc.ServiceName,
	HandlerType: (*authv3.AuthorizationServer)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName: "Check",
		Handler: func(srv any, stream grpc.ServerStream) error {
			return srv.(*Authorization).serveCheck(stream)
		},
	}},
	Metadata: authv3.Authorization_ServiceDesc.Metadata,
}

// serveCheck holds a whole max message of the body budget while reading
// (the size is not known before), then only the decoded message's size
// until the answer is sent. Without room it answers 503 overloaded at once
// without reading the message: a CheckResponse rather than a gRPC error,
// which Envoy would turn into status_on_error.
func (a *Authorization) serveCheck(stream grpc.ServerStream) error {
	ctx := stream.Context()
	var held int64
	if a.budget != nil {
		held = a.maxMessage
		if !a.budget.ReserveBody(ctx, held) {
			d := a.decider.Deny(policy.NewDecisionID(), 0, "", "")
			d.SetOverloaded()
			a.log.Warn("overloaded: check shed before reading its message", "decision_id", d.ID, "limit", "body_bytes")
			return stream.SendMsg(toResponse(d))
		}
		defer func() { a.budget.ReleaseBody(held) }()
	}
	m := sizedCheck{CheckRequest: new(authv3.CheckRequest), size: -1}
	if err := stream.RecvMsg(&m); err != nil {
		return err
	}
	// Listen's server decodes with sizingCodec, which sets the size; a
	// message of unknown size keeps the whole max message held.
	if size := int64(m.size); size >= 0 && held > size {
		a.budget.ReleaseBody(held - size)
		held = size
	}
	return stream.SendMsg(answer{a.decide(ctx, m.CheckRequest)}) // the codec encodes it
}

// Check answers every request with a CheckResponse, never a gRPC error: an
// error would hand the outcome to Envoy's failure_mode_allow. A panic in
// translation denies with 503.
func (a *Authorization) Check(ctx context.Context, cr *authv3.CheckRequest) (resp *authv3.CheckResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = toResponse(a.internalError(r)), nil
		}
	}()
	return toResponse(a.decide(ctx, cr)), nil
}

// decide translates cr and decides it; a panic, or no decision, denies
// with 503. The decision is never nil: the codec encodes it outside any
// recover.
func (a *Authorization) decide(ctx context.Context, cr *authv3.CheckRequest) (d *policy.Decision) {
	defer func() {
		if r := recover(); r != nil {
			d = a.internalError(r)
		}
	}()
	req := toRequest(cr, a.decider.MaxBodyBytes())
	if d = a.decider.Decide(ctx, req); d == nil {
		return a.internalError("the decider returned no decision")
	}
	if d.Reason == models.ReasonBodyNotForwarded {
		a.log.Error("a model request arrived without its body: set with_request_body on Envoy's ext_authz filter so bodies can be checked",
			"decision_id", d.ID, "path", req.Path)
	}
	return d
}

// internalError logs what went wrong while checking (a recovered panic)
// and returns its denial.
func (a *Authorization) internalError(cause any) *policy.Decision {
	d := a.decider.Deny(policy.NewDecisionID(), http.StatusServiceUnavailable, "internal_error", "service unavailable")
	a.log.Error("internal error in Check: denied", "decision_id", d.ID, "cause", cause, "stack", string(debug.Stack()))
	return d
}

// Service is the running ext_authz server: gRPC (Check, health,
// reflection) and the admin HTTP listener (/healthz, /readyz, /metrics).
type Service struct {
	grpc     *grpc.Server
	health   *health.Server
	admin    *http.Server
	grpcLis  net.Listener
	adminLis net.Listener
	grace    time.Duration
	draining atomic.Bool
	log      *slog.Logger
	// policy names the policy in force ("" before a bundle source's first
	// bundle); nil when the decider does not say.
	policy interface{ PolicyRevision() string }
}

// Listen binds the configured addresses. gatherer serves /metrics.
func Listen(cfg *config.Config, d Decider, gatherer prometheus.Gatherer, log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sc := cfg.Server
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(sc.MaxMessageBytes),
		grpc.ForceServerCodecV2(newSizingCodec()),
		// Long-lived workers keep the stacks Rego's recursive evaluator
		// grows; a fresh goroutine per check would grow (copy) its stack
		// on every request. gRPC starts a goroutine for each stream that
		// finds every worker busy, so there are workers for the checks a
		// gateway keeps in flight, not a few per CPU: with 4 per CPU, stack
		// growth was a quarter of the CPU time at 50 concurrent checks.
		// Not many more: work rotates over all workers, and each GC
		// shrinks the idle ones' stacks (256 workers: 7% of the CPU and
		// 40 MB more memory than 64, which gave 2%; README, Performance).
		grpc.NumStreamWorkers(uint32(max(64, 16*runtime.GOMAXPROCS(0)))),
	}
	if sc.TLS.Enabled() {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	s := &Service{grpc: grpc.NewServer(opts...), health: health.NewServer(), grace: sc.ShutdownGrace, log: log}
	s.policy, _ = d.(interface{ PolicyRevision() string })
	a := NewAuthorization(d, log)
	a.maxMessage = int64(sc.MaxMessageBytes)
	s.grpc.RegisterService(&authorizationService, a)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)

	lis, err := net.Listen("tcp", sc.GRPCAddress)
	if err != nil {
		return nil, fmt.Errorf("listen grpc %s: %w", sc.GRPCAddress, err)
	}
	s.grpcLis = lis
	if sc.AdminAddress != "off" && sc.AdminAddress != "" {
		alis, err := net.Listen("tcp", sc.AdminAddress)
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("listen admin %s: %w", sc.AdminAddress, err)
		}
		s.adminLis = alis
		s.admin = &http.Server{Handler: s.adminHandler(gatherer), ReadHeaderTimeout: 5 * time.Second}
	}
	return s, nil
}

func (s *Service) adminHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.draining.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		if !s.hasPolicy() {
			http.Error(w, "no policy yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	if g != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	}
	return mux
}

// GRPCAddr and AdminAddr return the bound addresses (useful with port 0).
func (s *Service) GRPCAddr() net.Addr { return s.grpcLis.Addr() }

// AdminAddr returns the admin listener's address, nil when disabled.
func (s *Service) AdminAddr() net.Addr {
	if s.adminLis == nil {
		return nil
	}
	return s.adminLis.Addr()
}

// Serve serves until Shutdown. It returns nil after a clean shutdown.
func (s *Service) Serve() error {
	if s.admin != nil {
		go func() {
			if err := s.admin.Serve(s.adminLis); !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("admin listener failed", "error", err)
			}
		}()
	}
	s.awaitPolicy()
	err := s.grpc.Serve(s.grpcLis)
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("grpc: %w", err)
	}
	return nil
}

// hasPolicy reports whether a policy is in force. A policy from a bundle
// service is absent until its first bundle, and every check would answer
// 503 policy_unavailable: the replica is not ready for traffic yet.
func (s *Service) hasPolicy() bool {
	return s.policy == nil || s.policy.PolicyRevision() != ""
}

// awaitPolicy reports the Authorization service NOT_SERVING to gRPC health
// checks (the Helm chart's readiness probe asks for it by name) until a
// policy is in force, looking again four times a second.
func (s *Service) awaitPolicy() {
	if s.hasPolicy() {
		return
	}
	name := authv3.Authorization_ServiceDesc.ServiceName
	s.health.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	go func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			if s.draining.Load() {
				return // Shutdown reports NOT_SERVING for good
			}
			if s.hasPolicy() {
				s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
				return
			}
		}
	}()
}

// Shutdown stops taking new checks, reports NOT_SERVING and not ready, and
// waits up to the configured grace for in-flight checks to finish before
// closing connections.
func (s *Service) Shutdown(ctx context.Context) {
	s.draining.Store(true)
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	timer := time.NewTimer(s.grace)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		s.log.Warn("shutdown grace elapsed; closing remaining connections", "grace", s.grace)
		s.grpc.Stop()
	case <-ctx.Done():
		s.grpc.Stop()
	}
	if s.admin != nil {
		actx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.admin.Shutdown(actx)
	}
}

func tlsConfig(cfg *config.Config) (*tls.Config, error) {
	t := cfg.Server.TLS
	cert, err := tls.LoadX509KeyPair(cfg.Path(t.CertFile), cfg.Path(t.KeyFile))
	if err != nil {
		return nil, cfg.Error(&config.FieldError{Path: "server.tls.cert_file", Err: err})
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.Path(t.ClientCAFile))
		if err != nil {
			return nil, cfg.Error(&config.FieldError{Path: "server.tls.client_ca_file", Err: err})
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, cfg.Error(&config.FieldError{Path: "server.tls.client_ca_file", Err: errors.New("no PEM certificates found")})
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}
