// Package e2e tests builds end to end: the strata binary against the three
// real services (blob store on versitygw, metadata on SQLite, the builder
// with runc), and against the machine's Docker Engine for parity.
package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
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
		binDir, buildErr = os.MkdirTemp("", "strata-build-e2e-")
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

// stack is the three services, running on loopback.
type stack struct {
	bin                      string
	builder, metadata, blobs string
	home                     string // the CLI's HOME, where its context digest cache lives
	builderDir               string
}

// startStack starts versitygw, the blob store on it, metadata on SQLite
// and the builder, each on a free port, and stops them when the test ends.
func startStack(t *testing.T) *stack {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("the builder needs root for overlay mounts and runc")
	}
	bin := binaries(t)
	dir := t.TempDir()
	s3 := harness.StartS3(t)
	s := &stack{
		bin:        bin,
		builder:    fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
		metadata:   fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
		blobs:      fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
		home:       filepath.Join(dir, "home"),
		builderDir: filepath.Join(dir, "builder"),
	}
	clients := []string{"STRATA_BLOBSTORE_ADDR=" + s.blobs, "STRATA_METADATA_ADDR=" + s.metadata}
	harness.Start(t, []string{
		"STRATA_LISTEN=" + s.blobs, "STRATA_BACKEND=s3", "STRATA_S3_ENDPOINT=" + s3.Endpoint, "STRATA_S3_PATH_STYLE=true",
		"STRATA_S3_REGION=us-east-1", "STRATA_S3_ACCESS_KEY=" + s3.AccessKey, "STRATA_S3_SECRET_KEY=" + s3.SecretKey,
		"STRATA_S3_CREATE_BUCKET=true",
	}, filepath.Join(bin, "strata-blobstore"))
	harness.Start(t, append([]string{"STRATA_LISTEN=" + s.metadata, "STRATA_SQLITE_PATH=" + filepath.Join(dir, "metadata.db")}, clients...), filepath.Join(bin, "strata-metadata"))
	harness.Start(t, append([]string{"STRATA_LISTEN=" + s.builder, "STRATA_STATE_DIR=" + s.builderDir}, clients...), filepath.Join(bin, "strata-builder"))
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

// result is one run of the strata binary.
type result struct {
	code           int
	stdout, stderr string
}

// strata runs the CLI against the stack, in dir.
func (s *stack) strata(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(s.bin, "strata"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TZ=UTC", "HOME="+s.home, "XDG_CACHE_HOME="+filepath.Join(s.home, ".cache"),
		"STRATA_BUILDER_ADDR="+s.builder, "STRATA_METADATA_ADDR="+s.metadata, "STRATA_BLOBSTORE_ADDR="+s.blobs)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running strata %v: %v", args, err)
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// ok runs the CLI and fails the test unless it succeeds.
func (s *stack) ok(t *testing.T, dir string, args ...string) string {
	t.Helper()
	r := s.strata(t, dir, args...)
	if r.code != 0 {
		t.Fatalf("strata %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// rootfsTar writes the busybox-static root filesystem tarball that
// shared/bench/make-rootfs.sh writes, and returns its path.
func rootfsTar(t *testing.T) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox not found: apt-get install busybox-static (make deps)")
	}
	body, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		name, link, body string
		mode             int64
		dir              bool
	}
	entries := []entry{
		{name: "./", dir: true, mode: 0o755},
		{name: "./bin/", dir: true, mode: 0o755},
		{name: "./bin/busybox", body: string(body), mode: 0o755},
		{name: "./dev/", dir: true, mode: 0o755},
		{name: "./etc/", dir: true, mode: 0o755},
		{name: "./etc/group", body: "root:x:0:\nnogroup:x:65534:\n", mode: 0o644},
		{name: "./etc/passwd", body: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", mode: 0o644},
		{name: "./proc/", dir: true, mode: 0o755},
		{name: "./root/", dir: true, mode: 0o755},
		{name: "./sys/", dir: true, mode: 0o755},
		{name: "./tmp/", dir: true, mode: 0o1777},
	}
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" {
			entries = append(entries, entry{name: "./bin/" + a, link: "busybox", mode: 0o777})
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: time.Unix(0, 0), Format: tar.FormatGNU}
		switch {
		case e.dir:
			h.Typeflag = tar.TypeDir
		case e.link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.link
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeFiles writes a build context; names ending in "/" are directories,
// "name -> target" symlinks.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		if i := strings.Index(name, " -> "); i >= 0 {
			p := filepath.Join(dir, name[:i])
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.Symlink(name[i+4:], p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		p := filepath.Join(dir, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
