package server

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/builds"
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
	live := context.Background()
	canceledBy := func(cause error) context.Context {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		return ctx
	}
	failed := errdefs.InvalidArgument("Dockerfile line 1: unknown instruction")
	tests := []struct {
		name string
		err  error
		ctx  context.Context
		kind error
	}{
		{"the build's own error", failed, live, errdefs.ErrInvalidArgument},
		{"the client went away", context.Canceled, canceledBy(errClientGone), errdefs.ErrCanceled},
		{"CancelBuild", context.Canceled, canceledBy(builds.ErrCanceledByRequest), errdefs.ErrCanceled},
		{"the detached grace ended", context.Canceled, canceledBy(builds.ErrNoWatcher), errdefs.ErrCanceled},
		{"stopping the builder keeps the build's error", failed, canceledBy(errStopping), errdefs.ErrInvalidArgument},
		{"a neighbour is down", errdefs.Unavailable("blob store: connection refused"), live, errdefs.ErrUnavailable},
	}
	for _, tt := range tests {
		got := buildError(tt.err, &buildctx.Session{}, tt.ctx)
		if !errors.Is(got, tt.kind) {
			t.Errorf("%s: buildError(%v) = %v, want %v", tt.name, tt.err, got, tt.kind)
		}
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

func TestOnlyTheRequesterOrAnAdminTouchesABuild(t *testing.T) {
	b := builds.NewRegistry(time.Hour, 1).Start(nil, "alice", func(error) {})
	tests := []struct {
		name string
		ctx  context.Context
		ok   bool
	}{
		{"no auth", context.Background(), true},
		{"the requester", auth.WithIdentity(context.Background(), auth.Identity{Name: "alice", Role: auth.RoleWrite}), true},
		{"another writer", auth.WithIdentity(context.Background(), auth.Identity{Name: "bob", Role: auth.RoleWrite}), false},
		{"an admin", auth.WithIdentity(context.Background(), auth.Identity{Name: "root", Role: auth.RoleAdmin}), true},
	}
	for _, tt := range tests {
		err := mayTouch(tt.ctx, b, "cancel")
		if (err == nil) != tt.ok || err != nil && !errors.Is(err, errdefs.ErrPermissionDenied) {
			t.Errorf("%s: mayTouch = %v, want allowed %v", tt.name, err, tt.ok)
		}
	}
}

func TestOutputGetsItsTextWhenItIsUTF8(t *testing.T) {
	var got []string
	send := withText(func(ev *builderv1.BuildEvent) { got = append(got, ev.GetOutput().GetText()) })
	send(&builderv1.BuildEvent{Event: &builderv1.BuildEvent_Output{Output: &builderv1.StepOutput{Data: []byte("héllo\n")}}})
	send(&builderv1.BuildEvent{Event: &builderv1.BuildEvent_Output{Output: &builderv1.StepOutput{Data: []byte{0xff, 0xfe, '\n'}}}})
	if diff := cmp.Diff([]string{"héllo\n", ""}, got); diff != "" {
		t.Errorf("texts (-want +got):\n%s", diff)
	}
}

func TestDockerfileErrorsCarryFileLineAndInstruction(t *testing.T) {
	df := []byte("FROM busybox\n\n  run exit 3\n")
	tests := []struct {
		name   string
		err    error
		reason string
		want   map[string]string
	}{
		{"a RUN failure", errdefs.InvalidArgument("Dockerfile:3: The command '/bin/sh -c exit 3' returned a non-zero code: 3").WithReason("RUN_FAILED").WithDetail("exit_code", "3"),
			"RUN_FAILED", map[string]string{"file": "app.Dockerfile", "line": "3", "instruction": "RUN", "source": "run exit 3", "exit_code": "3"}},
		{"a Dockerfile error", errdefs.InvalidArgument("Dockerfile:1: FROM: bad"),
			"DOCKERFILE_ERROR", map[string]string{"file": "app.Dockerfile", "line": "1", "instruction": "FROM", "source": "FROM busybox"}},
		{"a line past the end", errdefs.NotFound("Dockerfile:9: COPY x: not found"),
			"", map[string]string{"file": "app.Dockerfile", "line": "9"}},
		{"no line", errdefs.InvalidArgument("build: bad options"), "", nil},
	}
	for _, tt := range tests {
		got := withDockerfileDetails(tt.err, "app.Dockerfile", df)
		var e *errdefs.Error
		if !errors.As(got, &e) || errdefs.KindOf(got) != errdefs.KindOf(tt.err) || got.Error() != tt.err.Error() {
			t.Fatalf("%s: withDockerfileDetails = %v, want the same kind and message", tt.name, got)
		}
		if e.Reason() != tt.reason {
			t.Errorf("%s: reason %q, want %q", tt.name, e.Reason(), tt.reason)
		}
		if diff := cmp.Diff(tt.want, e.Details()); diff != "" {
			t.Errorf("%s: details (-want +got):\n%s", tt.name, diff)
		}
	}
}
