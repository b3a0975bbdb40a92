package layer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	digest "github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/builder/internal/content"
	"github.com/strata-build/strata/services/builder/internal/layer"
)

// TestStoreRoundTrip sends a layer through the real blob store service and
// back: what is stored is what the descriptor says, and unpacking it gives
// the directory that was diffed.
func TestStoreRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (owners, device nodes)")
	}
	store := startBlobstore(t, "fs")
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "upper")
	for path, content := range map[string]string{"etc/app.conf": "x=1\n", "data/big": strings.Repeat("0123456789", 300000), "empty": ""} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, path), []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/dev/stdout", filepath.Join(dir, "log")); err != nil {
		t.Fatal(err)
	}
	w, err := store.Writer(ctx, layer.MediaTypeGzip)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := layer.WriteDiff(ctx, w, layer.DirSource(dir))
	if err != nil {
		t.Fatalf("WriteDiff into the blob store: %v", err)
	}
	if want := int64(4 + 3000000 + len("/dev/stdout")); desc.DiffSize != want {
		t.Errorf("DiffSize = %d, want %d", desc.DiffSize, want)
	}

	rc, err := store.Open(ctx, desc.Digest)
	if err != nil {
		t.Fatalf("Open(%s): %v", desc.Digest, err)
	}
	defer rc.Close()
	blob, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(blob); got != desc.Digest || int64(len(blob)) != desc.Size {
		t.Errorf("stored blob: %s, %d bytes; descriptor says %s, %d bytes", got, len(blob), desc.Digest, desc.Size)
	}
	target := filepath.Join(t.TempDir(), "unpacked")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := layer.Unpack(ctx, bytes.NewReader(blob), target, layer.WithDiffID(desc.DiffID)); err != nil {
		t.Fatalf("Unpack of the stored blob: %v", err)
	}
	for _, p := range []string{"etc/app.conf", "data/big", "empty"} {
		a, _ := os.ReadFile(filepath.Join(dir, p))
		b, err := os.ReadFile(filepath.Join(target, p))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s after the round trip: %d bytes, %v; want %d bytes", p, len(b), err, len(a))
		}
	}
	if l, err := os.Readlink(filepath.Join(target, "log")); err != nil || l != "/dev/stdout" {
		t.Errorf("log -> %q, %v; want /dev/stdout", l, err)
	}
}

// The layer pipeline end to end, as a build step uses it: an upper
// directory → tar → parallel gzip → the real blob store service (fs backend,
// and S3 on versitygw as the benchmark deploys it), over gRPC on loopback.

var (
	blobstoreOnce sync.Once
	blobstoreBin  string
	blobstoreErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if blobstoreBin != "" {
		os.RemoveAll(filepath.Dir(blobstoreBin))
	}
	os.Exit(code)
}

func blobstoreBinary(b testing.TB) string {
	blobstoreOnce.Do(func() {
		dir, err := os.MkdirTemp("", "strata-layer-bench-")
		if err != nil {
			blobstoreErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", dir+"/", "./services/blobstore/cmd/strata-blobstore")
		cmd.Dir = harness.RepoRoot(b)
		if out, err := cmd.CombinedOutput(); err != nil {
			blobstoreErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
		blobstoreBin = filepath.Join(dir, "strata-blobstore")
	})
	if blobstoreErr != nil {
		b.Fatal(blobstoreErr)
	}
	return blobstoreBin
}

// startBlobstore starts the blob store with the backend and returns a
// content store over it.
func startBlobstore(b testing.TB, backend string) *content.Store {
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
	args := []string{"--listen", addr}
	switch backend {
	case "fs":
		args = append(args, "--backend", "fs", "--fs-root", b.TempDir())
	case "s3":
		s3 := harness.StartS3(b)
		mc, err := minio.New(s3.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s3.AccessKey, s3.SecretKey, "")})
		if err != nil {
			b.Fatal(err)
		}
		if err := mc.MakeBucket(context.Background(), "bench", minio.MakeBucketOptions{}); err != nil {
			b.Fatal(err)
		}
		args = append(args, "--backend", "s3", "--s3-endpoint", s3.Endpoint, "--s3-bucket", "bench", "--s3-path-style",
			"--s3-access-key", s3.AccessKey, "--s3-secret-key", s3.SecretKey, "--s3-region", "us-east-1")
	}
	harness.Start(b, nil, blobstoreBinary(b), args...)
	harness.WaitForTCP(b, "blobstore", addr, 60*time.Second)
	conn, err := grpcclient.Dial(addr, grpcclient.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return content.New(blobclient.New(conn))
}

func benchStore(b *testing.B, fill func(b *testing.B, dir string)) {
	for _, backend := range []string{"fs", "s3"} {
		b.Run(backend, func(b *testing.B) {
			store := startBlobstore(b, backend)
			dir := filepath.Join(b.TempDir(), "upper")
			fill(b, dir)
			ctx := context.Background()
			var size int64
			for b.Loop() {
				w, err := store.Writer(ctx, layer.MediaTypeGzip)
				if err != nil {
					b.Fatal(err)
				}
				desc, err := layer.WriteDiff(ctx, w, layer.DirSource(dir))
				if err != nil {
					b.Fatal(err)
				}
				size = desc.DiffSize
			}
			b.SetBytes(size)
		})
	}
}

func BenchmarkStore200MBRandom(b *testing.B) {
	benchStore(b, func(b *testing.B, dir string) {
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 200<<20)
		rand.Read(buf)
		if err := os.WriteFile(filepath.Join(dir, "data/blob"), buf, 0o644); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkStore2000SmallFiles(b *testing.B) {
	benchStore(b, func(b *testing.B, dir string) {
		if err := os.MkdirAll(filepath.Join(dir, "data/small"), 0o755); err != nil {
			b.Fatal(err)
		}
		for i := range 2000 {
			if err := os.WriteFile(filepath.Join(dir, "data/small", fmt.Sprintf("f%d", i)), fmt.Appendf(nil, "line %d\n", i), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	})
}
