package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// lateContext runs a build whose Dockerfile has a RUN before its COPY and
// sends the COPY's file only once the RUN has printed its output: the
// builder asks for the Dockerfile first and runs the steps that need no
// context while the rest of it is still on its way. body is what the client
// sends for the file (its listed digest is always that of want).
func lateContext(t *testing.T, s *stack, tag string, want, body []byte) (*builderv1.BuildResult, error) {
	t.Helper()
	df := []byte("FROM busybox\nRUN echo before-the-copy of " + tag + "\nCOPY big /big\n")
	conn, err := grpc.NewClient(s.BuilderAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := builderv1.NewBuildServiceClient(conn).Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Options{Options: &builderv1.BuildOptions{Tags: []string{tag}, Dockerfile: "Dockerfile"}}})
	stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Entries{Entries: &builderv1.ContextEntries{
		Entries: []*builderv1.FileEntry{fileEntry("Dockerfile", df), fileEntry("big", want)}, Last: true,
	}}})
	resp, err := stream.Recv()
	if err == nil && resp.GetEvent().GetAccepted() != nil { // every build's first event
		resp, err = stream.Recv()
	}
	if err != nil {
		t.Fatal(err)
	}
	asked := resp.GetContextRequest().GetDigests()
	dfDigest, bigDigest := string(digest.FromBytes(df)), string(digest.FromBytes(want))
	switch {
	case len(asked) == 2 && asked[0] == dfDigest && asked[1] == bigDigest:
		stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_FileData{FileData: &builderv1.FileData{Digest: dfDigest, Data: df, Eof: true}}})
	case len(asked) == 1 && asked[0] == bigDigest: // the builder holds the Dockerfile from an earlier build
	default:
		t.Fatalf("the builder asked for %v, want the Dockerfile's content (unless it has it) first, then big's", asked)
	}
	sent := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			if !sent {
				t.Fatalf("the build ended before the COPY's content was sent: %v", err)
			}
			return nil, err
		}
		if out := resp.GetEvent().GetOutput(); out != nil && strings.Contains(string(out.GetData()), "before-the-copy") && !sent {
			sent = true
			for off := 0; off < len(body); off += 1 << 20 {
				end := min(off+1<<20, len(body))
				stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_FileData{FileData: &builderv1.FileData{
					Digest: bigDigest, Offset: int64(off), Data: body[off:end], Eof: end == len(body),
				}}})
			}
			stream.CloseSend()
		}
		if r := resp.GetResult(); r != nil {
			if !sent {
				t.Fatal("the build finished before the COPY's content was sent")
			}
			return r, nil
		}
	}
}

func TestBuildRunsWhileTheContextArrives(t *testing.T) {
	s := withBusybox(t)
	big := []byte(strings.Repeat("late content\n", 300_000)) // 3.9 MB, several messages
	res, err := lateContext(t, s, "late", big, big)
	if err != nil {
		t.Fatal(err)
	}
	img := readArchive(t, s.save(t, res.GetImageId()))
	sum := sha256.Sum256(big)
	if got, want := img.files["/big"], "file 0644 0:0 "+hex.EncodeToString(sum[:8]); got != want {
		t.Errorf("/big = %q, want %q", got, want)
	}

	// Content that does not match its listed digest fails the build, even
	// though its first steps ran already, and tags nothing.
	other := append([]byte("other "), big...)
	bad := append([]byte("OTHER "), big...) // as long as other, so only its digest is wrong
	if _, err := lateContext(t, s, "late-bad", other, bad); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "does not match its digest") {
		t.Fatalf("build with tampered content: err = %v, want INVALID_ARGUMENT naming the digest mismatch", err)
	}
	if r := s.strata(t, "", "image", "inspect", "late-bad"); r.code == 0 {
		t.Error("late-bad was tagged although its context was refused")
	}
}
