package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
)

// benchSize is the blob of the benchmark: 1 GiB, incompressible
// (STRATA_BENCH_MIB overrides it, for a quick look).
var benchSize = int64(1 << 30)

// BenchmarkBlobTransfer uploads and downloads a 1 GiB blob through
// strata-blobstore (S3 backend) and, in the same run, straight to the same
// versitygw with minio-go's PutObject/GetObject, and reports the throughput
// of each, their ratios, and the peak RSS of strata-blobstore during the
// upload. Targets: ratios of 0.9 or more, peak RSS of 128 MiB or less.
func BenchmarkBlobTransfer(b *testing.B) {
	if mib, err := strconv.Atoi(os.Getenv("STRATA_BENCH_MIB")); err == nil && mib > 0 {
		benchSize = int64(mib) << 20
	}
	s3 := harness.StartS3(b)
	dir := b.TempDir()
	file := filepath.Join(dir, "blob")
	d := writeRandomFile(b, file, benchSize)

	server := harness.Binary(b, "strata-blobstore")
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
	env := []string{"STRATA_S3_ACCESS_KEY=" + s3.AccessKey, "STRATA_S3_SECRET_KEY=" + s3.SecretKey, "STRATA_LOG_LEVEL=warn"}
	if v := os.Getenv("STRATA_BENCH_SERVER_ENV"); v != "" {
		env = append(env, strings.Fields(v)...)
	}
	proc := harness.Start(b, env,
		server, "--listen", addr, "--backend", "s3", "--s3-endpoint", s3.Endpoint, "--s3-path-style", "--s3-create-bucket", "--s3-bucket", "bench")
	conn, err := grpcclient.Dial(addr, grpcclient.Config{}, blobclient.DialOptions()...)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	bc := blobclient.New(conn)
	harness.WaitFor(b, "strata-blobstore", 30*time.Second, func(ctx context.Context) error {
		_, err := bc.Stat(ctx, digest.FromString("ready?"))
		if err != nil && !strings.Contains(err.Error(), "not found") {
			return err
		}
		return nil
	})

	mc, err := minio.New(s3.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s3.AccessKey, s3.SecretKey, ""), BucketLookup: minio.BucketLookupPath})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := mc.MakeBucket(ctx, "direct", minio.MakeBucketOptions{}); err != nil {
		b.Fatal(err)
	}

	// Each run times the two back to back, and the ratio of a pair counts:
	// on a shared machine a neighbour slows both of a pair alike, and the
	// median of the pairs' ratios leaves out the runs it slowed unevenly.
	var upDirect, upStrata, downDirect, downStrata []time.Duration
	var peakRSS int64
	var upCPU, upClientCPU, downCPU, clientCPU time.Duration
	b.ResetTimer()
	for i := range b.N {
		// Straight to S3.
		f := open(b, file)
		start := time.Now()
		if _, err := mc.PutObject(ctx, "direct", "blob", f, benchSize, minio.PutObjectOptions{}); err != nil {
			b.Fatal(err)
		}
		upDirect = append(upDirect, time.Since(start))
		f.Close()

		// Through the blob store.
		if i > 0 {
			if err := bc.Delete(ctx, d); err != nil {
				b.Fatal(err)
			}
		}
		f = open(b, file)
		resetHWM(b, proc.Cmd.Process.Pid) // the peak during this upload, not since start
		cpu0, self0 := cpuTime(b, proc.Cmd.Process.Pid), cpuTime(b, os.Getpid())
		start = time.Now()
		if _, err := bc.Put(ctx, f, d, benchSize); err != nil {
			b.Fatal(err)
		}
		upStrata = append(upStrata, time.Since(start))
		upCPU += cpuTime(b, proc.Cmd.Process.Pid) - cpu0
		upClientCPU += cpuTime(b, os.Getpid()) - self0
		f.Close()
		peakRSS = max(peakRSS, vmHWM(b, proc.Cmd.Process.Pid))

		start = time.Now()
		obj, err := mc.GetObject(ctx, "direct", "blob", minio.GetObjectOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, obj); err != nil || n != benchSize {
			b.Fatalf("GetObject: %d bytes, %v", n, err)
		}
		obj.Close()
		downDirect = append(downDirect, time.Since(start))

		cpu0, self0 = cpuTime(b, proc.Cmd.Process.Pid), cpuTime(b, os.Getpid())
		start = time.Now()
		r, err := bc.Open(ctx, d, 0, 0)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := r.WriteTo(io.Discard); err != nil || n != benchSize {
			b.Fatalf("Read: %d bytes, %v", n, err)
		}
		r.Close()
		downStrata = append(downStrata, time.Since(start))
		downCPU += cpuTime(b, proc.Cmd.Process.Pid) - cpu0
		clientCPU += cpuTime(b, os.Getpid()) - self0
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(benchSize) / (1 << 20) / d.Seconds() }
	upRatio, downRatio := medianRatio(upDirect, upStrata), medianRatio(downDirect, downStrata)
	b.ReportMetric(mbps(median(upDirect)), "direct-up-MiB/s")
	b.ReportMetric(mbps(median(upStrata)), "strata-up-MiB/s")
	b.ReportMetric(mbps(median(downDirect)), "direct-down-MiB/s")
	b.ReportMetric(mbps(median(downStrata)), "strata-down-MiB/s")
	b.ReportMetric(upRatio, "up-ratio")
	b.ReportMetric(downRatio, "down-ratio")
	b.ReportMetric(float64(peakRSS)/(1<<20), "peak-RSS-MiB")
	gib := float64(benchSize) / (1 << 30) * float64(b.N)
	b.ReportMetric(upCPU.Seconds()/gib, "server-CPU-s/GiB-up")
	b.ReportMetric(upClientCPU.Seconds()/gib, "client-CPU-s/GiB-up")
	b.ReportMetric(downCPU.Seconds()/gib, "server-CPU-s/GiB-down")
	b.ReportMetric(clientCPU.Seconds()/gib, "client-CPU-s/GiB-down")
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("blobstore bench (%d MiB, medians of %d runs): upload %.0f MiB/s vs direct %.0f MiB/s (ratio %.2f, target >= 0.9); "+
		"download %.0f MiB/s vs direct %.0f MiB/s (ratio %.2f, target >= 0.9); strata-blobstore peak RSS during an upload %.0f MiB (target <= 128); "+
		"CPU-s/GiB server/client: up %.2f/%.2f, down %.2f/%.2f; load average %s\n",
		benchSize>>20, b.N, mbps(median(upStrata)), mbps(median(upDirect)), upRatio,
		mbps(median(downStrata)), mbps(median(downDirect)), downRatio, float64(peakRSS)/(1<<20),
		upCPU.Seconds()/gib, upClientCPU.Seconds()/gib, downCPU.Seconds()/gib, clientCPU.Seconds()/gib, strings.Join(strings.Fields(string(load))[:3], " "))
}

// median returns the middle of ds (the mean of the two middle ones for an
// even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}

// medianRatio is the median of direct[i]/strata[i]: above 1, the blob store
// was the faster.
func medianRatio(direct, strata []time.Duration) float64 {
	r := make([]float64, len(direct))
	for i := range direct {
		r[i] = direct[i].Seconds() / strata[i].Seconds()
	}
	slices.Sort(r)
	return (r[(len(r)-1)/2] + r[len(r)/2]) / 2
}

// resetHWM resets a process's peak resident set size to its current size.
func resetHWM(b *testing.B, pid int) {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		b.Fatal(err)
	}
}

func open(b *testing.B, name string) *os.File {
	f, err := os.Open(name)
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// writeRandomFile writes n incompressible bytes and returns their digest.
func writeRandomFile(b testing.TB, name string, n int64) digest.Digest {
	f, err := os.Create(name)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	r := rand.NewChaCha8([32]byte{42})
	if _, err := io.CopyN(io.MultiWriter(f, h), r, n); err != nil {
		b.Fatal(err)
	}
	return digest.NewDigest(digest.SHA256, h)
}

// cpuTime returns the CPU time a process used so far.
func cpuTime(b *testing.B, pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which ends with ')': utime and stime
	// are the 12th and 13th, in clock ticks (100 a second on Linux).
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// vmHWM returns the peak resident set size of a process, in bytes.
func vmHWM(b *testing.B, pid int) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmHWM in /proc/PID/status")
	return 0
}
