package client

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// watchingBuilder answers WatchBuild with each of watches in turn (an
// error, or the messages of a stream) and records CancelBuild.
type watchingBuilder struct {
	builderv1.BuildServiceClient
	watches  []any
	froms    []int64
	canceled []string
}

func (w *watchingBuilder) WatchBuild(_ context.Context, req *builderv1.WatchBuildRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[builderv1.WatchBuildResponse], error) {
	w.froms = append(w.froms, req.GetFromSequence())
	next := w.watches[0]
	w.watches = w.watches[1:]
	if err, ok := next.(error); ok {
		return nil, err
	}
	return &watchStream{msgs: next.([]*builderv1.WatchBuildResponse)}, nil
}

func (w *watchingBuilder) CancelBuild(_ context.Context, req *builderv1.CancelBuildRequest, _ ...grpc.CallOption) (*builderv1.CancelBuildResponse, error) {
	w.canceled = append(w.canceled, req.GetBuildId())
	return &builderv1.CancelBuildResponse{}, nil
}

type watchStream struct {
	grpc.ClientStream
	msgs []*builderv1.WatchBuildResponse
}

func (s *watchStream) Recv() (*builderv1.WatchBuildResponse, error) {
	if len(s.msgs) == 0 {
		return nil, io.EOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

func seq(n int64) *builderv1.BuildEvent {
	return &builderv1.BuildEvent{Sequence: n, Step: 1, Event: &builderv1.BuildEvent_Done{Done: &builderv1.StepDone{}}}
}

func watchEvent(ev *builderv1.BuildEvent) *builderv1.WatchBuildResponse {
	return &builderv1.WatchBuildResponse{Response: &builderv1.WatchBuildResponse_Event{Event: ev}}
}

// After a transient disconnect, Build reattaches where it left
// off, showing no event twice, and gets the result.
func TestBuildReattachesAfterADisconnect(t *testing.T) {
	var shown []int64
	f := &buildFollower{event: func(ev *builderv1.BuildEvent) { shown = append(shown, ev.GetSequence()) }}
	f.track(&builderv1.BuildEvent{Sequence: 1, Event: &builderv1.BuildEvent_Accepted{Accepted: &builderv1.BuildAccepted{BuildId: "b1"}}})
	f.track(seq(2))
	b := &watchingBuilder{watches: []any{
		status.Error(codes.Unavailable, "connection refused"), // the builder is not back yet
		[]*builderv1.WatchBuildResponse{watchEvent(seq(2)), watchEvent(seq(3)),
			{Response: &builderv1.WatchBuildResponse_Result{Result: &builderv1.BuildResult{ImageId: "sha256:1"}}}},
	}}
	res, err := f.recover(context.Background(), b, status.Error(codes.Unavailable, "connection reset"))
	if err != nil || res.GetImageId() != "sha256:1" {
		t.Fatalf("recover = %v, %v; want the result", res, err)
	}
	if diff := cmp.Diff([]int64{1, 2, 3}, shown); diff != "" {
		t.Errorf("events shown (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int64{2, 2}, b.froms); diff != "" {
		t.Errorf("WatchBuild from (-want +got):\n%s", diff)
	}
}

func TestBuildInterruptCancelsTheBuild(t *testing.T) {
	f := &buildFollower{event: func(*builderv1.BuildEvent) {}}
	f.track(&builderv1.BuildEvent{Sequence: 1, Event: &builderv1.BuildEvent_Accepted{Accepted: &builderv1.BuildAccepted{BuildId: "b1"}}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := &watchingBuilder{}
	if _, err := f.recover(ctx, b, context.Canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("recover = %v, want the interrupt", err)
	}
	if diff := cmp.Diff([]string{"b1"}, b.canceled); diff != "" {
		t.Errorf("CancelBuild calls (-want +got):\n%s", diff)
	}
}

func TestBuildErrorIsNotRetried(t *testing.T) {
	f := &buildFollower{event: func(*builderv1.BuildEvent) {}, id: "b1"}
	failed := status.Error(codes.InvalidArgument, "Dockerfile line 1: unknown instruction")
	b := &watchingBuilder{}
	if _, err := f.recover(context.Background(), b, failed); err != failed || len(b.froms) > 0 || len(b.canceled) > 0 {
		t.Errorf("recover(%v) = %v after %d watches, %d cancels; want the error as it is", failed, err, len(b.froms), len(b.canceled))
	}
}

// When the builder that ran a build is gone and the replica reached on
// reattach does not know the build, Build fails UNAVAILABLE saying the
// work is lost (what a caller retries), not NOT_FOUND.
func TestBuildLostWithItsBuilderIsUnavailable(t *testing.T) {
	f := &buildFollower{event: func(*builderv1.BuildEvent) {}, id: "b1"}
	b := &watchingBuilder{watches: []any{status.Error(codes.NotFound, `build "b1": no such build on this builder`)}}
	_, err := f.recover(context.Background(), b, status.Error(codes.Unavailable, "connection reset"))
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "build b1: the builder running it is unavailable") {
		t.Errorf("recover = %v, want UNAVAILABLE saying the build's builder is gone", err)
	}
	if len(b.froms) != 1 {
		t.Errorf("%d reattaches, want 1", len(b.froms))
	}
}
