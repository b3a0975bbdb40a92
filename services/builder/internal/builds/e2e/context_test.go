package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// ctxTar is a gzipped context tar of files (name → body).
func ctxTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// tarBuild builds over gRPC with opts, sending tarBytes as the context
// stream when it is not nil, and returns the RUN output and the result.
func (s *stack) tarBuild(t *testing.T, opts *builderv1.BuildOptions, tarBytes []byte) (string, *builderv1.BuildResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := s.builds(t).Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Options{Options: opts}})
	if tarBytes != nil {
		for off := 0; off < len(tarBytes); off += 4096 {
			stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_ContextTar{ContextTar: tarBytes[off:min(off+4096, len(tarBytes))]}})
		}
		stream.CloseSend()
	}
	var out strings.Builder
	for {
		resp, err := stream.Recv()
		if err != nil {
			return out.String(), nil, err
		}
		if o := resp.GetEvent().GetOutput(); o != nil {
			out.WriteString(o.GetText())
		}
		if r := resp.GetResult(); r != nil {
			return out.String(), r, nil
		}
	}
}

func TestBuildFromATarContextAndFromABlob(t *testing.T) {
	s := startStack(t)
	tarBytes := ctxTar(t, map[string]string{
		"./sub/Dockerfile.app": "FROM busybox\nCOPY hello.txt /app/\nRUN cat /app/hello.txt\n",
		"./hello.txt":          "hello from a tar context\n",
	})
	out, res, err := s.tarBuild(t, &builderv1.BuildOptions{ContextTar: true, Dockerfile: "sub/Dockerfile.app", Tags: []string{"tarctx:1"}}, tarBytes)
	if err != nil {
		t.Fatalf("build from a tar stream: %v", err)
	}
	if !strings.Contains(out, "hello from a tar context") || res.GetImageId() == "" {
		t.Errorf("output %q, result %v: want the COPYed file's content", out, res)
	}

	// The same tar in the blob store: the same image, from the cache.
	p := filepath.Join(t.TempDir(), "ctx.tar.gz")
	os.WriteFile(p, tarBytes, 0o644)
	d := strings.TrimSpace(s.cli(t, nil, "blob", "put", p))
	_, res2, err := s.tarBuild(t, &builderv1.BuildOptions{ContextBlob: d, Dockerfile: "sub/Dockerfile.app"}, nil)
	if err != nil || res2.GetImageId() != res.GetImageId() {
		t.Errorf("build from blob %s = %v, %v; want image %s", d, res2, err, res.GetImageId())
	}

	// `strata build - < ctx.tar`, Docker's way.
	got := s.cli(t, bytes.NewReader(tarBytes), "build", "-q", "-f", "sub/Dockerfile.app", "-t", "tarctx:cli", "-")
	if strings.TrimSpace(got) != res.GetImageId() {
		t.Errorf("strata build - < ctx.tar printed %q, want %s", got, res.GetImageId())
	}

	bad := ctxTar(t, map[string]string{"Dockerfile": "FROM busybox\n", "../../escape": "x"})
	if _, _, err := s.tarBuild(t, &builderv1.BuildOptions{ContextTar: true}, bad); errdefs.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"../../escape"`) {
		t.Errorf("a tar with ../../escape: %v, want INVALID_ARGUMENT naming the entry", err)
	}
}

// cli runs the strata CLI against the stack with stdin and returns its
// standard output, failing the test unless it succeeds.
func (s *stack) cli(t *testing.T, stdin *bytes.Reader, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(s.Bin, "strata"), args...)
	cmd.Env = append(append(os.Environ(), "HOME="+t.TempDir()), s.Env()...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("strata %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// A failed RUN step's error says, in ErrorInfo, where and how it failed.
func TestRunFailureCarriesItsLineAndExitCode(t *testing.T) {
	s := startStack(t)
	_, _, err := s.tarBuild(t, &builderv1.BuildOptions{ContextTar: true}, ctxTar(t, map[string]string{"Dockerfile": "FROM busybox\n\nRUN echo failing && exit 3\n"}))
	var e *errdefs.Error
	if !errors.As(err, &e) || errdefs.Code(err) != codes.InvalidArgument {
		t.Fatalf("build = %v, want INVALID_ARGUMENT", err)
	}
	want := map[string]string{"file": "Dockerfile", "line": "3", "instruction": "RUN", "source": "RUN echo failing && exit 3", "exit_code": "3"}
	if diff := cmp.Diff(want, e.Details()); e.Reason() != "RUN_FAILED" || diff != "" {
		t.Errorf("reason %q (want RUN_FAILED), details (-want +got):\n%s", e.Reason(), diff)
	}
}
