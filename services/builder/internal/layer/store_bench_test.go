package layer_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/builder/internal/content"
	"github.com/strata-build/strata/services/builder/internal/layer"
)

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

func blobstoreBinary(b *testing.B) string {
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
func startBlobstore(b *testing.B, backend string) *content.Store {
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
				desc, err := layer.WriteDiff(ctx, w, dir)
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
