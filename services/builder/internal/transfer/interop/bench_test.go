package interop

import (
	"archive/tar"
	"context"
	"io"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// benchLayer is the size of the one file the benchmark image's layer holds.
const benchLayer = 512 << 20

// randomRootfs streams a tar holding one file of incompressible bytes.
func randomRootfs(b *testing.B) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		if err := tw.WriteHeader(&tar.Header{Name: "data", Mode: 0o644, Size: benchLayer, ModTime: time.Unix(0, 0)}); err != nil {
			pw.CloseWithError(err)
			return
		}
		rng := rand.NewChaCha8([32]byte{1})
		if _, err := io.CopyN(tw, rng, benchLayer); err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(tw.Close())
	}()
	return pr
}

// BenchmarkRegistryTransfer pulls and pushes an image with one 512 MiB
// layer through a loopback registry, with Strata and with crane in the same
// run, and reports each one's throughput and Strata's ratio to crane's
// (above 1: Strata is faster). `make bench-xfer` runs it.
func BenchmarkRegistryTransfer(b *testing.B) {
	crane := harness.Tool(b, "crane")
	ctx := context.Background()
	var best struct{ strataPush, cranePush, strataPull, cranePull time.Duration }
	keep := func(d *time.Duration, v time.Duration) {
		if *d == 0 || v < *d {
			*d = v
		}
	}
	timed := func(f func()) time.Duration {
		start := time.Now()
		f()
		return time.Since(start)
	}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		src := newEnv(b)
		regStrata, regCrane := harness.StartRegistry(b), harness.StartRegistry(b)
		ref := regStrata + "/bench/strata:1"
		if _, err := src.svc.Import(ctx, randomRootfs(b), transfer.ImportOptions{Reference: ref}, nil); err != nil {
			b.Fatal(err)
		}
		tarball := filepath.Join(b.TempDir(), "crane.tar")
		b.StartTimer()

		keep(&best.strataPush, timed(func() {
			if _, err := src.svc.Push(ctx, ref, transfer.PushOptions{}, nil); err != nil {
				b.Fatal(err)
			}
		}))
		keep(&best.cranePull, timed(func() { runB(b, crane, "pull", ref, tarball) }))
		keep(&best.cranePush, timed(func() { runB(b, crane, "push", tarball, regCrane+"/bench/crane:1") }))
		dst := newEnv(b)
		keep(&best.strataPull, timed(func() {
			if _, err := dst.svc.Pull(ctx, ref, transfer.PullOptions{}, nil); err != nil {
				b.Fatal(err)
			}
		}))
	}
	mbps := func(d time.Duration) float64 { return float64(benchLayer) / (1 << 20) / d.Seconds() }
	b.ReportMetric(mbps(best.strataPull), "strata-pull-MiB/s")
	b.ReportMetric(mbps(best.cranePull), "crane-pull-MiB/s")
	b.ReportMetric(mbps(best.strataPush), "strata-push-MiB/s")
	b.ReportMetric(mbps(best.cranePush), "crane-push-MiB/s")
	b.ReportMetric(best.cranePull.Seconds()/best.strataPull.Seconds(), "pull-ratio")
	b.ReportMetric(best.cranePush.Seconds()/best.strataPush.Seconds(), "push-ratio")
	b.Logf("512 MiB layer: pull strata %.0f MiB/s, crane %.0f MiB/s (ratio %.2f); push strata %.0f MiB/s, crane %.0f MiB/s (ratio %.2f)",
		mbps(best.strataPull), mbps(best.cranePull), best.cranePull.Seconds()/best.strataPull.Seconds(),
		mbps(best.strataPush), mbps(best.cranePush), best.cranePush.Seconds()/best.strataPush.Seconds())
}

func runB(b *testing.B, name string, args ...string) {
	b.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
