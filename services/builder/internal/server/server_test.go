package server

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
)

func TestBuildRequestConvertsTheOptions(t *testing.T) {
	opts := &builderv1.BuildOptions{
		Tags: []string{"app:1"}, Target: "run", NoCache: true, BuildArgs: map[string]string{"A": "1"},
		Labels: map[string]string{"l": "v"}, Network: builderv1.NetworkMode_NETWORK_MODE_NONE,
	}
	sess := &buildctx.Session{Dockerfile: []byte("FROM scratch\n")}
	r := buildRequest(opts, sess)
	if string(r.Dockerfile) != "FROM scratch\n" || r.Target != "run" || !r.NoCache || r.Network != opts.Network ||
		!cmp.Equal(r.Tags, opts.Tags) || !cmp.Equal(r.BuildArgs, opts.BuildArgs) || !cmp.Equal(r.Labels, opts.Labels) {
		t.Errorf("buildRequest(%v) = %+v", opts, r)
	}
	r.BuildArgs["B"] = "2"
	if _, ok := opts.GetBuildArgs()["B"]; ok {
		t.Error("the request's build args are the options' map: a build would change the message")
	}
}

func TestBuildError(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	live := context.Background()
	failed := errdefs.InvalidArgument("Dockerfile line 1: unknown instruction")
	tests := []struct {
		name     string
		err      error
		ctx, rpc context.Context
		kind     error
	}{
		{"the build's own error", failed, live, live, errdefs.ErrInvalidArgument},
		{"the client went away", context.Canceled, canceled, canceled, errdefs.ErrCanceled},
		{"stopping the builder keeps the build's error", failed, canceled, live, errdefs.ErrInvalidArgument},
		{"a neighbour is down", errdefs.Unavailable("blob store: connection refused"), live, live, errdefs.ErrUnavailable},
	}
	for _, tt := range tests {
		got := buildError(tt.err, &buildctx.Session{}, tt.ctx, tt.rpc)
		if !errors.Is(got, tt.kind) {
			t.Errorf("%s: buildError(%v) = %v, want %v", tt.name, tt.err, got, tt.kind)
		}
	}
}

// sendStream records what is sent, failing from the failAt-th send on (0:
// never).
type sendStream struct {
	sent   []*builderv1.BuildResponse
	failAt int
}

func (s *sendStream) Send(m *builderv1.BuildResponse) error {
	if s.failAt > 0 && len(s.sent)+1 >= s.failAt {
		return io.ErrClosedPipe
	}
	s.sent = append(s.sent, m)
	return nil
}

func TestEventSender(t *testing.T) {
	ev := &builderv1.BuildEvent{Step: 1}
	res := &builderv1.BuildResult{ImageId: "sha256:1"}

	s := &sendStream{}
	e := &eventSender{stream: s, cancel: func() { t.Error("a build whose sends succeed was canceled") }}
	e.send(ev)
	if err := e.result(res); err != nil {
		t.Fatalf("result: %v", err)
	}
	want := []*builderv1.BuildResponse{
		{Response: &builderv1.BuildResponse_Event{Event: ev}},
		{Response: &builderv1.BuildResponse_Result{Result: res}},
	}
	if diff := cmp.Diff(want, s.sent, protocmp.Transform()); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}

	canceled := false
	e = &eventSender{stream: &sendStream{failAt: 1}, cancel: func() { canceled = true }}
	e.send(ev)
	e.send(ev)
	if err := e.result(res); !errors.Is(err, io.ErrClosedPipe) || !canceled {
		t.Errorf("after a failed send: result = %v, canceled = %v; want the send's error and a canceled build", err, canceled)
	}
}

func TestRecvReader(t *testing.T) {
	msgs := []*builderv1.ImportRequest{
		{Request: &builderv1.ImportRequest_Data{Data: []byte("ab")}},
		{Request: &builderv1.ImportRequest_Data{Data: []byte("c")}},
	}
	recv := func() (*builderv1.ImportRequest, error) {
		if len(msgs) == 0 {
			return nil, io.EOF
		}
		m := msgs[0]
		msgs = msgs[1:]
		return m, nil
	}
	got, err := io.ReadAll(&recvReader{recv: dataOf[builderv1.ImportOptions]("import", recv)})
	if err != nil || string(got) != "abc" {
		t.Errorf("read %q, %v; want \"abc\"", got, err)
	}

	msgs = []*builderv1.ImportRequest{{Request: &builderv1.ImportRequest_Options{Options: &builderv1.ImportOptions{}}}}
	// The reader reports every receive error but EOF as UNAVAILABLE, the
	// client's protocol error too (kept as it is in a redesign that changes
	// no behaviour).
	if _, err := io.ReadAll(&recvReader{recv: dataOf[builderv1.ImportOptions]("import", recv)}); err == nil || !strings.Contains(err.Error(), "options may only be sent first") {
		t.Errorf("options after the first message: err = %v, want it named", err)
	}
}

func TestSendWriterChunks(t *testing.T) {
	var sizes []int
	w := sendWriter(func(p []byte) error { sizes = append(sizes, len(p)); return nil })
	if n, err := w.Write(make([]byte, 2*saveChunk+1)); err != nil || n != 2*saveChunk+1 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if diff := cmp.Diff([]int{saveChunk, saveChunk, 1}, sizes); diff != "" {
		t.Errorf("message sizes (-want +got):\n%s", diff)
	}
}
