package httpauthz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/modelguard/modelguard/httpauthz/httpsettings"
)

// Server is the running HTTP authorization listener.
type Server struct {
	http  *http.Server
	lis   net.Listener
	grace time.Duration
	log   *slog.Logger
}

// Listen binds s.Address; grace bounds Shutdown's wait for checks in
// flight (server.shutdown_grace).
func Listen(s httpsettings.Settings, d Decider, grace time.Duration, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lis, err := net.Listen("tcp", s.Address)
	if err != nil {
		return nil, fmt.Errorf("listen http %s: %w", s.Address, err)
	}
	return &Server{
		http: &http.Server{
			Handler:           NewHandler(d, s, log),
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		lis: lis, grace: grace, log: log,
	}, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Serve serves until Shutdown; it returns nil after a clean shutdown.
func (s *Server) Serve() error {
	if err := s.http.Serve(s.lis); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http authorization listener: %w", err)
	}
	return nil
}

// Shutdown stops taking requests and waits up to the grace (or ctx) for
// those in flight, then closes the remaining connections.
func (s *Server) Shutdown(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.grace)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		s.log.Warn("shutdown grace elapsed; closing remaining HTTP authorization connections", "grace", s.grace)
		s.http.Close()
	}
}
