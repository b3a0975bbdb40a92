// Package grpcserver is the platform every Strata service runs on: one gRPC
// server with health and reflection, request IDs, structured logs,
// Prometheus metrics, panic recovery, error mapping, TLS, mutual TLS and
// bearer-token auth, message-size and keepalive limits, and a graceful stop.
package grpcserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/errdefs"
)

// Server is a gRPC server with Strata's platform around it. Register the
// service implementations on GRPC, then call Run or Serve.
type Server struct {
	// GRPC is the underlying server.
	GRPC *grpc.Server
	// Metrics is the server's Prometheus registry; services add their own
	// collectors to it.
	Metrics *prometheus.Registry
	// HTTP, when a service sets it, makes the server an HTTP server (HTTP/1.1
	// and HTTP/2, with TLS when configured) on its listener: gRPC requests
	// (health, reflection) still go to GRPC, every other request to HTTP.
	// The HTTP handler does its own auth; the health service stays open.
	HTTP http.Handler

	cfg     Config
	log     *slog.Logger
	health  *health.Server
	grpcMet *grpcprom.ServerMetrics
	auth    *auth.Checker
	probe   Probe

	// statusMu orders health changes: the probe's and SetDraining's.
	statusMu sync.Mutex
	draining bool
}

// New builds a server from a validated cfg. extra options come after
// Strata's own, for a service with needs of its own (buffer sizes for bulk
// transfer).
func New(cfg Config, log *slog.Logger, extra ...grpc.ServerOption) (*Server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	met := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	reg.MustRegister(met)

	notHealth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service != healthpb.Health_ServiceDesc.ServiceName
	})
	checker, err := auth.NewChecker(auth.CheckerConfig{
		Token: cfg.AuthToken, TokenFile: cfg.AuthTokenFile, ClientCerts: cfg.TLSClientCA != "", Log: log,
	})
	if err != nil {
		return nil, err
	}
	// Every call is logged when it finishes with who made it and the role
	// it needs: an audit trail of every change, never with a token.
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall), logging.WithFieldsFromContextAndCallMeta(callerFields)}
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return errdefs.ToGRPC(errdefs.Internal("internal error: %v", p))
	})

	// Callers are identified before the log interceptor, which names
	// them, and refused after the error interceptor, which maps the refusal.
	unary := []grpc.UnaryServerInterceptor{
		unaryHeaders,
		checker.UnaryIdentify(),
		met.UnaryServerInterceptor(),
		selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(interceptorLogger(log), logOpts...), notHealth),
		unaryErrors,
		checker.UnaryAuthorize(),
		recovery.UnaryServerInterceptor(recoverOpt),
	}
	stream := []grpc.StreamServerInterceptor{
		streamHeaders,
		checker.StreamIdentify(),
		met.StreamServerInterceptor(),
		selector.StreamServerInterceptor(logging.StreamServerInterceptor(interceptorLogger(log), logOpts...), notHealth),
		streamErrors,
		checker.StreamAuthorize(),
		recovery.StreamServerInterceptor(recoverOpt),
	}

	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(cfg.MaxSendMsgSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    2 * time.Minute,
			Timeout: 20 * time.Second,
		}),
	}
	opts = append(opts, extra...)
	if cfg.TLSCert != "" {
		tlsCfg, err := auth.ServerTLS(cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}

	s := &Server{
		GRPC:    grpc.NewServer(opts...),
		Metrics: reg,
		cfg:     cfg,
		log:     log,
		health:  health.NewServer(),
		grpcMet: met,
		auth:    checker,
	}
	healthpb.RegisterHealthServer(s.GRPC, s.health)
	if err := registerReflection(s.GRPC); err != nil {
		return nil, err
	}
	return s, nil
}

// Auth returns the server's checker, for an HTTP handler to identify its
// callers by the same tokens and client certificates as the gRPC services.
func (s *Server) Auth() *auth.Checker { return s.auth }

// Run listens on the configured addresses and serves until ctx is done, then
// stops gracefully.
func (s *Server) Run(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.cfg.Listen, err)
	}
	var metricsLis net.Listener
	if s.cfg.MetricsAddr != "" {
		metricsLis, err = net.Listen("tcp", s.cfg.MetricsAddr)
		if err != nil {
			lis.Close()
			return fmt.Errorf("listening on %s for metrics: %w", s.cfg.MetricsAddr, err)
		}
	}
	return s.Serve(ctx, lis, metricsLis)
}

// Serve serves gRPC on lis and, when metricsLis is not nil, metrics on it,
// until ctx is done, running the probe (SetProbe) meanwhile. Then it stops
// taking new calls, marks itself NOT_SERVING and waits for running calls up
// to the shutdown timeout before cutting them off.
func (s *Server) Serve(ctx context.Context, lis net.Listener, metricsLis net.Listener) error {
	s.grpcMet.InitializeMetrics(s.GRPC)
	s.setStatus(healthpb.HealthCheckResponse_SERVING)
	if s.probe.Check != nil {
		probeCtx, stopProbe := context.WithCancel(ctx)
		probed := make(chan struct{})
		go func() { defer close(probed); s.watch(probeCtx) }()
		defer func() { stopProbe(); <-probed }()
	}

	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		if err := s.auth.Watch(watchCtx); err != nil {
			s.log.Warn("token file changes are not watched; send SIGHUP after changing it", "error", err.Error())
		}
	}()
	defer func() { stopWatch(); <-watched }()

	var metricsSrv *http.Server
	if metricsLis != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.Metrics, promhttp.HandlerOpts{Registry: s.Metrics}))
		if s.cfg.Pprof {
			// No /debug/pprof/cmdline: the listener has no authentication,
			// and a command line may carry --auth-token or --s3-secret-key.
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := metricsSrv.Serve(metricsLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("metrics server stopped", "error", err)
			}
		}()
		s.log.Info("serving metrics", "addr", metricsLis.Addr().String())
	}

	if s.HTTP != nil {
		return s.serveHTTP(ctx, lis, metricsSrv)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.GRPC.Serve(lis) }()
	s.log.Info("serving gRPC", "addr", lis.Addr().String(), "tls", s.cfg.TLSCert != "", "mtls", s.cfg.TLSClientCA != "",
		"auth", s.auth.Enabled())

	var err error
	select {
	case err = <-serveErr:
		// Serve failed on its own; nothing to drain.
	case <-ctx.Done():
		s.log.Info("stopping gracefully", "timeout", s.cfg.ShutdownTimeout.String())
		s.health.Shutdown()
		stopped := make(chan struct{})
		go func() { s.GRPC.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(s.cfg.ShutdownTimeout):
			s.log.Warn("graceful stop timed out; cutting off running calls")
			s.GRPC.Stop()
		}
		err = <-serveErr
	}
	stopMetrics(metricsSrv)
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

// serveHTTP is Serve for a server with an HTTP handler: one http.Server
// speaks HTTP/1.1 and HTTP/2 (h2c without TLS, so that gRPC health probes
// work on a plain port) and hands gRPC requests to the gRPC server.
func (s *Server) serveHTTP(ctx context.Context, lis net.Listener, metricsSrv *http.Server) error {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				s.GRPC.ServeHTTP(w, r)
				return
			}
			s.HTTP.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 30 * time.Second,
		Protocols:         &protocols,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.cfg.TLSCert != "" {
		tlsCfg, err := auth.ServerTLS(s.cfg.TLSCert, s.cfg.TLSKey, s.cfg.TLSClientCA)
		if err != nil {
			lis.Close()
			return err
		}
		tlsCfg.NextProtos = []string{"h2", "http/1.1"}
		srv.TLSConfig = tlsCfg
		lis = tls.NewListener(lis, tlsCfg)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	s.log.Info("serving HTTP", "addr", lis.Addr().String(), "tls", s.cfg.TLSCert != "", "mtls", s.cfg.TLSClientCA != "")
	var err error
	select {
	case err = <-serveErr:
	case <-ctx.Done():
		s.log.Info("stopping gracefully", "timeout", s.cfg.ShutdownTimeout.String())
		s.health.Shutdown()
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		if serr := srv.Shutdown(sctx); serr != nil {
			s.log.Warn("graceful stop timed out; cutting off running requests")
			srv.Close()
		}
		err = <-serveErr
	}
	s.GRPC.Stop()
	stopMetrics(metricsSrv)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func stopMetrics(metricsSrv *http.Server) {
	if metricsSrv != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = metricsSrv.Shutdown(shutdownCtx)
	}
}

// ReloadTokens reads the token file again (on SIGHUP); the tokens in use
// stay when it cannot be used.
func (s *Server) ReloadTokens() error { return s.auth.Reload() }

// callerFields names the caller on a call's log line, and the role the
// call needs, so that changes (roles above read) can be picked out.
func callerFields(ctx context.Context, c interceptors.CallMeta) logging.Fields {
	var f logging.Fields
	if role, ok := auth.RoleFor(c.FullMethod()); ok {
		f = append(f, "auth.role", string(role))
	}
	if id, ok := auth.IdentityFrom(ctx); ok {
		if id.Name != "" {
			f = append(f, "auth.caller", id.Name)
		}
		if id.Via != "" {
			f = append(f, "auth.via", id.Via)
		}
	}
	return f
}

// interceptorLogger adapts slog to the logging interceptor.
func interceptorLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}
