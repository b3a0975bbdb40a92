package grpcserver

import (
	"context"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Probe checks a dependency a service cannot serve without, such as its
// storage. While the check fails the server's health is NOT_SERVING, so
// that load balancers, orchestrators and clients that check health send
// calls to other replicas; once it passes again, SERVING.
type Probe struct {
	// Check reaches the dependency; its context ends after Interval.
	Check func(context.Context) error
	// Interval is the time between the end of one check and the next.
	Interval time.Duration
}

// SetProbe has Serve run p, from its start, for as long as it serves.
// Call it before Serve.
func (s *Server) SetProbe(p Probe) { s.probe = p }

// setStatus sets the health of the server and of every service it
// serves; NOT_SERVING for good once it drains.
func (s *Server) setStatus(status healthpb.HealthCheckResponse_ServingStatus) {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	if s.draining {
		status = healthpb.HealthCheckResponse_NOT_SERVING
	}
	for name := range s.GRPC.GetServiceInfo() {
		s.health.SetServingStatus(name, status)
	}
	s.health.SetServingStatus("", status)
}

// SetDraining marks the server NOT_SERVING for good, whatever its probe
// says, so that load balancers and clients that check health send new
// calls to other replicas while the calls it runs finish.
func (s *Server) SetDraining() {
	s.statusMu.Lock()
	s.draining = true
	s.statusMu.Unlock()
	s.setStatus(healthpb.HealthCheckResponse_NOT_SERVING)
}

// watch runs the probe until ctx ends, setting the health of the server
// and of every service it serves from each result and logging each change.
func (s *Server) watch(ctx context.Context) {
	serving := true
	for {
		cctx, cancel := context.WithTimeout(ctx, s.probe.Interval)
		err := s.probe.Check(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if (err == nil) != serving {
			serving = err == nil
			status := healthpb.HealthCheckResponse_SERVING
			if serving {
				s.log.InfoContext(ctx, "dependency is back: health is SERVING")
			} else {
				status = healthpb.HealthCheckResponse_NOT_SERVING
				s.log.WarnContext(ctx, "dependency check failed: health is NOT_SERVING until it passes", "error", err.Error())
			}
			s.setStatus(status)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.probe.Interval):
		}
	}
}
