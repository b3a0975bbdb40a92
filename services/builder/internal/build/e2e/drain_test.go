package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// A builder told to stop (SIGTERM) drains, as a rolling restart needs: its
// health turns NOT_SERVING, a new build is refused with UNAVAILABLE, the
// build it runs finishes and records its image, and then it exits cleanly.
func TestSIGTERMDrainsRunningBuilds(t *testing.T) {
	s := withBusybox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	running := openBuild(t, ctx, s.BuilderAddr, &builderv1.BuildOptions{
		DockerfileContent: []byte("FROM busybox\nRUN sleep 3; echo slept > /s\n"), Tags: []string{"drained"},
	}, nil)
	for {
		ev := running.next().GetEvent()
		if st := ev.GetStarted(); st != nil && strings.HasPrefix(st.GetInstruction(), "RUN") {
			break
		}
	}

	exited := make(chan struct{})
	go func() { defer close(exited); s.Builder.Terminate() }()

	conn, err := grpc.NewClient(s.BuilderAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatalf("health check while draining: %v", err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("health never turned NOT_SERVING after SIGTERM")
		case <-time.After(20 * time.Millisecond):
		}
	}
	_, err = rawBuild(t, s.BuilderAddr, &builderv1.BuildOptions{DockerfileContent: []byte("FROM busybox\nRUN true\n")}, nil, nil)
	if errdefs.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
		t.Errorf("a new build while draining: %v, want UNAVAILABLE saying the builder is shutting down", err)
	}

	var result *builderv1.BuildResult
	for result == nil {
		resp, err := running.Recv()
		if err != nil {
			t.Fatalf("the build running across SIGTERM: %v, want it to finish", err)
		}
		result = resp.GetResult()
	}
	<-exited
	if code := s.Builder.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("builder exit code after draining: %d, want 0", code)
	}
	images, _ := s.clients(t)
	res, err := images.GetImage(context.Background(), &metadatav1.GetImageRequest{Reference: "drained"})
	if err != nil || res.GetImage().GetId() != result.GetImageId() {
		t.Errorf("GetImage(drained) = %v, %v; want image %s", res.GetImage().GetId(), err, result.GetImageId())
	}
}
