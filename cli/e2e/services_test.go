package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// stack is the three services, running with their embedded defaults (blobs
// in a directory, metadata in SQLite).
type stack struct{ *harness.Stack }

func startStack(t *testing.T) *stack {
	t.Helper()
	return &stack{harness.StartStack(t, harness.StackOptions{})}
}

// out is one run of the strata binary.
type out struct {
	code           int
	stdout, stderr string
}

// strata runs the CLI against the stack, with stdin.
func (s *stack) strata(t *testing.T, stdin string, args ...string) out {
	t.Helper()
	cmd := exec.Command(filepath.Join(s.Bin, "strata"), args...)
	cmd.Env = append(append(os.Environ(), "TZ=UTC"), s.Env()...)
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
	for _, want := range []string{"Client:", "Service builder:", "Service metadata:", "Service blobstore:", s.BuilderAddr, s.MetadataAddr, s.BlobstoreAddr} {
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
	bin := harness.Binaries(t, "strata")
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

// With mutual TLS and a token on every service, the CLI and the services
// calling one another connect with the client certificate and the token
// (the STRATA_CLIENT_… settings): an import goes CLI → builder → blob store
// and metadata → blob store, a build adds the builder's cache lookups in
// metadata. A wrong token or no certificate is refused.
func TestSecureStack(t *testing.T) {
	s := &stack{harness.StartStack(t, harness.StackOptions{Secure: true})}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs.tar")
	if err := os.WriteFile(rootfs, harness.BusyboxRootfs(t), 0o644); err != nil {
		t.Fatal(err)
	}
	s.ok(t, "", "import", rootfs, "busybox")
	buildCtx := filepath.Join(dir, "ctx")
	if err := os.Mkdir(buildCtx, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(buildCtx, "Dockerfile"), []byte("FROM busybox\nRUN echo secure > /secure\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.ok(t, "", "build", "-q", "-t", "secure", buildCtx)
	if got, want := s.ok(t, "", "images", "--format", "{{.Repository}}:{{.Tag}}"), "secure:latest\nbusybox:latest\n"; got != want {
		t.Errorf("images = %q, want %q", got, want)
	}
	if r := s.strata(t, "", "--token", "wrong", "images"); r.code != 1 || !strings.Contains(r.stderr, "invalid bearer token") {
		t.Errorf("images with a wrong token: exit %d, %q; want exit 1 naming the invalid token", r.code, r.stderr)
	}
	cmd := exec.Command(filepath.Join(s.Bin, "strata"), "--metadata", s.MetadataAddr, "--tlscacert", s.Client.CAFile, "images")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("images without a client certificate succeeded:\n%s", out)
	}

	// A write token may tag but not prune, which needs admin.
	write := s.Tokens[auth.RoleWrite]
	s.ok(t, "", "--token", write, "tag", "secure", "secure:2")
	r := s.strata(t, "", "--token", write, "image", "prune", "-f")
	if want := "strata.metadata.v1.ImageService/PruneImages needs the admin role; write-user has the write role"; r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("image prune with a write token: exit %d, %q; want exit 1 saying %q", r.code, r.stderr, want)
	}

	// The event stream says who did what: the builder records images for
	// the user who asked, and a tag is the tagger's.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	events, err := metadatav1.NewImageServiceClient(s.Dial(t, s.MetadataAddr)).WatchEvents(ctx, &metadatav1.WatchEventsRequest{Since: timestamppb.New(time.Unix(1, 0))})
	if err != nil {
		t.Fatal(err)
	}
	type who struct{ action, ref, actor, via string }
	var got []who
	for {
		resp, err := events.Recv()
		if err != nil {
			t.Fatalf("events until the tag secure:2: %v; got %v", err, got)
		}
		ev := resp.GetEvent()
		got = append(got, who{strings.ToLower(strings.TrimPrefix(ev.GetAction().String(), "EVENT_ACTION_")), ev.GetReference(), ev.GetActor(), ev.GetVia()})
		if ev.GetReference() == "secure:2" {
			break
		}
	}
	for _, want := range []who{
		{"import", "", "admin-user", "service-user"},
		{"build", "", "admin-user", "service-user"},
		{"tag", "secure:latest", "admin-user", "service-user"},
		{"tag", "secure:2", "write-user", ""},
	} {
		if !slices.Contains(got, want) {
			t.Errorf("events %v lack %v", got, want)
		}
	}
}
