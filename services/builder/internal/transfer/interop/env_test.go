// Package interop tests Strata's transfers against the real peers users
// move images with: the machine's Docker Engine, skopeo, umoci, a
// distribution registry and crane, all on loopback. The blob store is the
// real service, started from its binary.
package interop

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/builder/internal/archive"
	"github.com/strata-build/strata/services/builder/internal/content"
	"github.com/strata-build/strata/services/builder/internal/egress"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// env is a transfer service over the real blob store and metadata
// services, started from their binaries on loopback.
type env struct {
	dir                string
	blobAddr, metaAddr string
	svc                *transfer.Service
	archive            *archive.Service
	images             *image.Store
	meta               metadatav1.ImageServiceClient
	blobs              *blobclient.Client
}

func newEnv(t testing.TB, opts ...transfer.Option) *env {
	t.Helper()
	st := harness.StartStack(t, harness.StackOptions{NoBuilder: true})
	dir, blobAddr, metaAddr := st.Dir, st.BlobstoreAddr, st.MetadataAddr
	// The blob store's connection has the bulk options strata-builder
	// dials it with (buffers and windows of a few MiB, pooled buffers).
	blobConn := dial(t, blobAddr, blobclient.DialOptions()...)
	metaConn := dial(t, metaAddr)
	bc := blobclient.New(blobConn)
	blobs := content.New(bc)
	meta := metadatav1.NewImageServiceClient(metaConn)
	images := image.NewStore(blobs, meta)
	// The registries of these tests listen on loopback, as make run's may.
	loopback := egress.Policy{Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	opts = append([]transfer.Option{transfer.WithRetryBackoff(10 * time.Millisecond), transfer.WithEgress(loopback)}, opts...)
	svc := transfer.New(blobs, images, slog.New(slog.DiscardHandler), opts...)
	return &env{
		dir:      dir,
		blobAddr: blobAddr,
		metaAddr: metaAddr,
		svc:      svc,
		archive:  archive.New(svc, blobs, images),
		images:   images,
		meta:     meta,
		blobs:    bc,
	}
}

// dial waits until a service serves and connects to it.
func dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	harness.WaitServing(t, addr)
	conn, err := grpcclient.Dial(addr, grpcclient.Config{}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// imageCount returns how many images the metadata service holds.
func (e *env) imageCount(t testing.TB) int {
	t.Helper()
	resp, err := e.meta.ListImages(context.Background(), &metadatav1.ListImagesRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.GetImages())
}

// tag points one more tag at an image.
func (e *env) tag(t testing.TB, source, target string) {
	t.Helper()
	if _, err := e.meta.TagImage(context.Background(), &metadatav1.TagImageRequest{Source: source, Target: target}); err != nil {
		t.Fatal(err)
	}
}

// busyboxRootfs writes a busybox-static root filesystem tarball, as
// ../shared/bench/make-rootfs.sh does.
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(p, harness.BusyboxRootfs(t), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs a command, failing the test with its output when it fails.
func run(t *testing.T, stdin io.Reader, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = stdin
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// docker runs the docker CLI against the machine's engine.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, nil, harness.Tool(t, "docker"), args...)
}

// uniqueTag gives names that do not collide with other runs on the engine.
func uniqueTag(t *testing.T) string {
	return fmt.Sprintf("t%d", time.Now().UnixNano())
}

// importBusybox imports the busybox rootfs into Strata under tag.
func (e *env) importBusybox(t *testing.T, rootfs, tag string, changes ...string) digest.Digest {
	t.Helper()
	f, err := os.Open(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := e.archive.Import(context.Background(), f, archive.ImportOptions{Reference: tag, Changes: changes}, nil)
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	return res.ImageID
}

// dockerCLI is the docker CLI's path.
func dockerCLI(t *testing.T) string { return harness.Tool(t, "docker") }

// runQuiet runs a cleanup command, ignoring its output.
func runQuiet(name string, args ...string) error { return exec.Command(name, args...).Run() }

func itoa(n int64) string { return fmt.Sprint(n) }

// builder starts the strata-builder binary over the env's services and
// returns a client of its BuildService.
func (e *env) builder(t testing.TB) builderv1.BuildServiceClient {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	harness.Start(t, []string{"STRATA_LISTEN=" + addr, "STRATA_STATE_DIR=" + filepath.Join(e.dir, "builder"),
		"STRATA_BLOBSTORE_ADDR=" + e.blobAddr, "STRATA_METADATA_ADDR=" + e.metaAddr, "STRATA_ALLOW_REGISTRIES=127.0.0.0/8,::1"},
		harness.Binary(t, "strata-builder"))
	return builderv1.NewBuildServiceClient(dial(t, addr))
}
