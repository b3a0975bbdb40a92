package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/harness"
)

func TestContextFileLongerThanDeclaredIsRefused(t *testing.T) {
	s := withBusybox(t)
	body := []byte("hello")
	entry := fileEntry("f", body)
	// The client declares 5 bytes, then streams 8 MiB under that digest.
	long := append(bytes.Clone(body), make([]byte, 8<<20)...)
	_, err := rawBuild(t, s.BuilderAddr, &builderv1.BuildOptions{DockerfileContent: []byte("FROM busybox\nCOPY f /f\n"), Tags: []string{"overlong"}},
		[]*builderv1.FileEntry{entry}, map[digest.Digest][]byte{digest.Digest(entry.Digest): long})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "more bytes than the 5 its entry declares") {
		t.Fatalf("build with a context file longer than declared = %v, want INVALID_ARGUMENT naming the declared size", err)
	}
	if out := s.ok(t, "", "images", "-q", "overlong"); out != "" {
		t.Errorf("the refused build recorded an image: %q", out)
	}
}

// buildStream is a Build stream a test drives message by message.
type buildStream struct {
	grpc.BidiStreamingClient[builderv1.BuildRequest, builderv1.BuildResponse]
	t *testing.T
}

func openBuild(t *testing.T, ctx context.Context, addr string, opts *builderv1.BuildOptions, entries []*builderv1.FileEntry) *buildStream {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := builderv1.NewBuildServiceClient(conn).Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Options{Options: opts}})
	stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Entries{Entries: &builderv1.ContextEntries{Entries: entries, Last: true}}})
	return &buildStream{BidiStreamingClient: stream, t: t}
}

// next returns the next message, past the BuildAccepted event that
// starts every build.
func (b *buildStream) next() *builderv1.BuildResponse {
	b.t.Helper()
	for {
		resp, err := b.Recv()
		if err != nil {
			b.t.Fatalf("build stream: %v", err)
		}
		if resp.GetEvent().GetAccepted() == nil {
			return resp
		}
	}
}

func TestBuildsWaitForASlotBeforeTheirContext(t *testing.T) {
	s := &stack{Stack: harness.StartStack(t, harness.StackOptions{S3: true, BuilderEnv: []string{"STRATA_MAX_BUILDS=1"}})}
	s.home = t.TempDir()
	s.ok(t, "", "import", rootfsTar(t), "busybox:latest")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	first := openBuild(t, ctx, s.BuilderAddr, &builderv1.BuildOptions{DockerfileContent: []byte("FROM busybox\nRUN sleep 2\n")}, nil)
	if first.next().GetContextRequest() == nil {
		t.Fatal("the first build did not ask for its context")
	}
	body := []byte("queued\n")
	entry := fileEntry("f", body)
	second := openBuild(t, ctx, s.BuilderAddr, &builderv1.BuildOptions{DockerfileContent: []byte("FROM busybox\nCOPY f /f\n")}, []*builderv1.FileEntry{entry})
	q := second.next().GetEvent().GetQueued()
	if q == nil || q.GetAhead() != 0 {
		t.Fatalf("the second build's first message = %v, want a queued event with no build ahead", q)
	}
	// The second build's context is asked for only once the first ran its
	// last step (it then ends and gives up its slot).
	firstDone := make(chan time.Time, 1)
	go func() {
		for {
			resp, err := first.Recv()
			if err != nil || resp.GetEvent().GetDone() != nil && resp.GetEvent().GetStep() == 2 {
				firstDone <- time.Now()
				return
			}
		}
	}()
	req := second.next().GetContextRequest()
	asked := time.Now()
	if req == nil {
		t.Fatal("the second build did not ask for its context once it had a slot")
	}
	select {
	case done := <-firstDone:
		if asked.Before(done) {
			t.Errorf("the second build asked for its context %v before the first build's RUN ended", done.Sub(asked))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the first build did not end")
	}
	second.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_FileData{FileData: &builderv1.FileData{Digest: entry.Digest, Data: body, Eof: true}}})
	for {
		resp := second.next()
		if resp.GetResult() != nil {
			break
		}
	}
}
