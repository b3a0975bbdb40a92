package client

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// fakeBuilder accepts one build: it records the options and the context
// the client sends, announces the build's ID, and answers with a result,
// or, with hold, waits for the client to go away.
type fakeBuilder struct {
	builderv1.UnimplementedBuildServiceServer
	hold bool

	mu       sync.Mutex
	opts     *builderv1.BuildOptions
	tar      []byte
	entries  int
	secrets  map[string][]byte
	canceled []string
}

func (f *fakeBuilder) Build(stream grpc.BidiStreamingServer[builderv1.BuildRequest, builderv1.BuildResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.opts = first.GetOptions()
	f.secrets = map[string][]byte{}
	f.mu.Unlock()
	for range f.opts.GetSecretIds() {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.secrets[m.GetSecret().GetId()] = m.GetSecret().GetValue()
		f.mu.Unlock()
	}
	switch {
	case f.opts.GetContextTar():
		for {
			m, err := stream.Recv()
			if err != nil {
				return err
			}
			if len(m.GetContextTar()) == 0 {
				break
			}
			f.mu.Lock()
			f.tar = append(f.tar, m.GetContextTar()...)
			f.mu.Unlock()
		}
	case f.opts.GetContextBlob() == "":
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.entries = len(m.GetEntries().GetEntries())
		f.mu.Unlock()
	}
	accepted := &builderv1.BuildEvent{Sequence: 1, Event: &builderv1.BuildEvent_Accepted{Accepted: &builderv1.BuildAccepted{BuildId: "b1"}}}
	if err := stream.Send(&builderv1.BuildResponse{Response: &builderv1.BuildResponse_Event{Event: accepted}}); err != nil {
		return err
	}
	if f.hold {
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	return stream.Send(&builderv1.BuildResponse{Response: &builderv1.BuildResponse_Result{Result: &builderv1.BuildResult{ImageId: "sha256:1", BuildId: "b1"}}})
}

func (f *fakeBuilder) CancelBuild(_ context.Context, req *builderv1.CancelBuildRequest) (*builderv1.CancelBuildResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.canceled = append(f.canceled, req.GetBuildId())
	return &builderv1.CancelBuildResponse{}, nil
}

func startFake(t *testing.T, f *fakeBuilder) *Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	builderv1.RegisterBuildServiceServer(srv, f)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	addr := l.Addr().String()
	c, err := New(context.Background(), WithConfig(Config{Builder: addr, Metadata: addr, Blobstore: addr}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestBuildFromATarStream(t *testing.T) {
	f := &fakeBuilder{}
	c := startFake(t, f)
	tar := bytes.Repeat([]byte("x"), 3<<20/2) // more than one message
	var ids []string
	res, err := c.Build(context.Background(), "ignored", BuildOptions{Tags: []string{"app"}, ContextTar: bytes.NewReader(tar), Dockerfile: "docker/Dockerfile",
		OnEvent: func(ev *BuildEvent) { ids = append(ids, ev.GetAccepted().GetBuildId()) }})
	if err != nil || res.GetBuildId() != "b1" {
		t.Fatalf("Build = %v, %v; want the result of build b1", res, err)
	}
	if len(ids) != 1 || ids[0] != "b1" {
		t.Errorf("OnEvent saw accepted IDs %q, want [b1]", ids)
	}
	if !f.opts.GetContextTar() || f.opts.GetDockerfile() != "docker/Dockerfile" || !proto.Equal(f.opts, &builderv1.BuildOptions{
		Tags: []string{"app"}, ContextTar: true, Dockerfile: "docker/Dockerfile", BuildArgs: map[string]string{}, Labels: map[string]string{}}) {
		t.Errorf("options = %v, want a tar context with the Dockerfile named inside it", f.opts)
	}
	if !bytes.Equal(f.tar, tar) {
		t.Errorf("the builder got %d bytes of tar, want %d", len(f.tar), len(tar))
	}
}

func TestBuildFromABlobAndWithoutAContext(t *testing.T) {
	f := &fakeBuilder{}
	c := startFake(t, f)
	blob := "sha256:" + string(bytes.Repeat([]byte("a"), 64))
	if _, err := c.Build(context.Background(), "", BuildOptions{ContextBlob: blob}); err != nil {
		t.Fatal(err)
	}
	if f.opts.GetContextBlob() != blob || f.opts.GetContextTar() {
		t.Errorf("options = %v, want the blob as the context", f.opts)
	}
	if _, err := c.Build(context.Background(), "", BuildOptions{NoContext: true, DockerfileContent: []byte("FROM scratch\n")}); err != nil {
		t.Fatal(err)
	}
	if string(f.opts.GetDockerfileContent()) != "FROM scratch\n" || f.entries != 0 {
		t.Errorf("options = %v with %d entries, want the Dockerfile and no context", f.opts, f.entries)
	}
	if _, err := c.Build(context.Background(), "", BuildOptions{NoContext: true, ContextBlob: blob, DockerfileContent: []byte("FROM scratch\n")}); err == nil {
		t.Error("Build with two contexts: no error")
	}
}

// Canceling Build's context cancels the build on the builder, which would
// otherwise outlive its stream for the detached grace.
func TestCancelingBuildCancelsTheBuild(t *testing.T) {
	f := &fakeBuilder{hold: true}
	c := startFake(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := c.Build(ctx, "", BuildOptions{NoContext: true, DockerfileContent: []byte("FROM scratch\n"), OnEvent: func(ev *BuildEvent) {
		if ev.GetAccepted() != nil {
			time.AfterFunc(10*time.Millisecond, cancel)
		}
	}})
	if err == nil {
		t.Fatal("Build after its context was canceled: no error")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.canceled) != 1 || f.canceled[0] != "b1" {
		t.Errorf("CancelBuild calls %q, want [b1]", f.canceled)
	}
}
