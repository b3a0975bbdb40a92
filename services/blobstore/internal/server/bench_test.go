package server

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
	"github.com/strata-build/strata/services/blobstore/internal/fsblob"
	"github.com/strata-build/strata/services/blobstore/internal/s3blob"
)

// BenchmarkTransfer moves a blob (64 MiB; STRATA_BENCH_MIB overrides it)
// through the client, the gRPC wire and the server in one process, over
// the fs backend and over S3 on versitygw, for profiles of both ends
// (go test -cpuprofile). make bench-blob measures the real binaries.
func BenchmarkTransfer(b *testing.B) {
	size := int64(64 << 20)
	if mib, err := strconv.Atoi(os.Getenv("STRATA_BENCH_MIB")); err == nil && mib > 0 {
		size = int64(mib) << 20
	}
	file := filepath.Join(b.TempDir(), "blob")
	d := randomFile(b, file, size)
	backends := map[string]func(b *testing.B) blob.Store{
		"fs": func(b *testing.B) blob.Store {
			s, err := fsblob.New(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
		"s3": func(b *testing.B) blob.Store {
			srv := harness.StartS3(b)
			s, err := s3blob.New(s3blob.Config{
				Endpoint: srv.Endpoint, Bucket: "bench", PathStyle: true,
				AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, CreateBucket: true,
			})
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
	}
	for _, name := range []string{"fs", "s3"} {
		b.Run(name, func(b *testing.B) {
			c := serve(b, backends[name](b))
			ctx := context.Background()
			put := func(b *testing.B) {
				f, err := os.Open(file)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				if _, err := c.Put(ctx, f, d, size); err != nil {
					b.Fatal(err)
				}
			}
			b.Run("upload", func(b *testing.B) {
				b.SetBytes(size)
				defer cpuPerGiB(b, size)()
				for range b.N {
					if err := c.Delete(ctx, d); err != nil && !errdefs.IsNotFound(err) {
						b.Fatal(err)
					}
					put(b)
				}
			})
			b.Run("download", func(b *testing.B) {
				if _, err := c.Stat(ctx, d); errdefs.IsNotFound(err) {
					put(b)
				}
				b.SetBytes(size)
				b.ResetTimer()
				defer cpuPerGiB(b, size)()
				for range b.N {
					r, err := c.Open(ctx, d, 0, 0)
					if err != nil {
						b.Fatal(err)
					}
					if n, err := r.WriteTo(io.Discard); err != nil || n != size {
						b.Fatalf("read %d bytes, %v", n, err)
					}
					r.Close()
				}
			})
		})
	}
}

func randomFile(b *testing.B, name string, n int64) digest.Digest {
	f, err := os.Create(name)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8([32]byte{7}), n); err != nil {
		b.Fatal(err)
	}
	return digest.NewDigest(digest.SHA256, h)
}

// cpuPerGiB reports, when the returned function is called, the CPU time the
// process (client and server) used since per GiB moved.
func cpuPerGiB(b *testing.B, size int64) func() {
	start := cpuTime(b)
	return func() {
		gib := float64(size) * float64(b.N) / (1 << 30)
		b.ReportMetric((cpuTime(b)-start).Seconds()/gib, "CPU-s/GiB")
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
