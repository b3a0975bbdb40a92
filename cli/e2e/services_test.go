package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/strata-build/strata/lib/harness"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds strata and the three services once per test run.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "strata-e2e-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/",
			"./services/blobstore/cmd/strata-blobstore", "./services/metadata/cmd/strata-metadata",
			"./services/builder/cmd/strata-builder", "./cli/cmd/strata")
		cmd.Dir = harness.RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// stack is the three services, running.
type stack struct {
	bin                      string
	builder, metadata, blobs string
}

// startStack starts blobstore, metadata and builder with their embedded
// defaults (blobs in a directory, metadata in SQLite) under a test directory.
func startStack(t *testing.T) *stack {
	t.Helper()
	bin := binaries(t)
	dir := t.TempDir()
	s := &stack{
		bin:      bin,
		builder:  fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
		metadata: fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
		blobs:    fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
	}
	clients := []string{"STRATA_BLOBSTORE_ADDR=" + s.blobs, "STRATA_METADATA_ADDR=" + s.metadata, "STRATA_BUILDER_ADDR=" + s.builder}
	harness.Start(t, []string{"STRATA_LISTEN=" + s.blobs, "STRATA_FS_ROOT=" + filepath.Join(dir, "blobs")}, filepath.Join(bin, "strata-blobstore"))
	harness.Start(t, append([]string{"STRATA_LISTEN=" + s.metadata, "STRATA_SQLITE_PATH=" + filepath.Join(dir, "metadata.db")}, clients...), filepath.Join(bin, "strata-metadata"))
	harness.Start(t, append([]string{"STRATA_LISTEN=" + s.builder, "STRATA_STATE_DIR=" + filepath.Join(dir, "builder")}, clients...), filepath.Join(bin, "strata-builder"))
	for _, addr := range []string{s.blobs, s.metadata, s.builder} {
		waitServing(t, addr)
	}
	return s
}

func waitServing(t *testing.T, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	harness.WaitFor(t, "service at "+addr, 60*time.Second, func(ctx context.Context) error {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %v", resp.GetStatus())
		}
		return nil
	})
}

// out is one run of the strata binary.
type out struct {
	code           int
	stdout, stderr string
}

// strata runs the CLI against the stack, with stdin.
func (s *stack) strata(t *testing.T, stdin string, args ...string) out {
	t.Helper()
	cmd := exec.Command(filepath.Join(s.bin, "strata"), args...)
	cmd.Env = append(os.Environ(), "TZ=UTC",
		"STRATA_BUILDER_ADDR="+s.builder, "STRATA_METADATA_ADDR="+s.metadata, "STRATA_BLOBSTORE_ADDR="+s.blobs)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running strata %v: %v", args, err)
	}
	return out{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// ok runs the CLI and fails the test unless it succeeds.
func (s *stack) ok(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := s.strata(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("strata %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func TestVersionReachesEveryService(t *testing.T) {
	s := startStack(t)
	got := s.ok(t, "", "version")
	for _, want := range []string{"Client:", "Service builder:", "Service metadata:", "Service blobstore:", s.builder, s.metadata, s.blobs} {
		if !strings.Contains(got, want) {
			t.Errorf("strata version lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "(SERVING)"); n != 3 {
		t.Errorf("strata version shows %d serving services, want 3:\n%s", n, got)
	}
}

// A service that is down is an error naming the address, exit 1.
func TestServiceDownIsAClearError(t *testing.T) {
	bin := binaries(t)
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	cmd := exec.Command(filepath.Join(bin, "strata"), "--metadata", addr, "images")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 || !strings.HasPrefix(stderr.String(), "Error: ") || !strings.Contains(stderr.String(), addr) ||
		strings.Contains(stderr.String(), "goroutine") {
		t.Errorf("strata images with the service down: %v, stderr %q; want exit 1 and one Error line naming %s", err, stderr.String(), addr)
	}
}
