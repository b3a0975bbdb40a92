package main

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/harness"
)

// BenchmarkRegistry pushes and pulls with crane, through strata-registry
// (blob store on S3, metadata on SQLite) and through the distribution
// registry on the same versitygw, in rounds that alternate which goes first:
// an image with one 512 MiB layer (throughput) and an image of 200 small
// layers (requests). It reports the medians and Strata's ratios (above 1:
// Strata is faster). `make bench-registry` runs it.
func BenchmarkRegistry(b *testing.B) {
	crane := harness.Tool(b, "crane")
	stack := harness.StartStack(b, harness.StackOptions{S3: true, NoBuilder: true, Registry: true})
	dist := startS3Registry(b, stack.S3)

	// The images, made once: a layer of 512 MiB of random bytes, and 200
	// layers of 4 KiB.
	dir := b.TempDir()
	layer := filepath.Join(dir, "layer.tar")
	writeRandomLayer(b, layer, 512<<20)
	big := filepath.Join(dir, "big.tar")
	run(b, nil, nil, crane, "append", "--oci-empty-base", "-f", layer, "-t", "bench/big:1", "-o", big)
	args := []string{"append", "--oci-empty-base", "-t", "bench/small:1", "-o", filepath.Join(dir, "small.tar")}
	for i := range 200 {
		l := filepath.Join(dir, fmt.Sprintf("small%d.tar", i))
		writeRandomLayer(b, l, 4<<10)
		args = append(args, "-f", l)
	}
	run(b, nil, nil, crane, args...)
	images := []struct {
		name, tarball string
		per           float64 // what one run moves: MiB, or layers
		unit          string
	}{{"big", big, 512, "MiB/s"}, {"small", filepath.Join(dir, "small.tar"), 200, "layers/s"}}

	times := map[string][]time.Duration{} // by "image op registry"
	timed := func(key string, f func()) {
		start := time.Now()
		f()
		times[key] = append(times[key], time.Since(start))
	}
	runs := 0 // b.Loop calls the function once, so the figures are recorded once
	for b.Loop() {
		i := runs
		runs++
		order := []struct{ name, host string }{{"strata", stack.RegistryAddr}, {"distribution", dist}}
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, img := range images {
			for _, r := range order {
				ref := fmt.Sprintf("%s/bench/%s%d:1", r.host, img.name, i)
				timed(img.name+" push "+r.name, func() { run(b, nil, nil, crane, "push", "--insecure", img.tarball, ref) })
				out := filepath.Join(dir, "pulled.tar")
				timed(img.name+" pull "+r.name, func() { run(b, nil, nil, crane, "pull", "--insecure", ref, out) })
				os.Remove(out)
			}
		}
	}
	median := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	var figs []harness.BenchFigure
	for _, img := range images {
		for _, op := range []string{"push", "pull"} {
			// Rates, and each round's ratio of Strata's rate to
			// distribution's (the two ran back to back).
			var s, d, ratios []float64
			for i, st := range times[img.name+" "+op+" strata"] {
				dt := times[img.name+" "+op+" distribution"][i]
				s, d = append(s, img.per/st.Seconds()), append(d, img.per/dt.Seconds())
				ratios = append(ratios, dt.Seconds()/st.Seconds())
			}
			b.ReportMetric(median(s), fmt.Sprintf("strata-%s-%s-%s", img.name, op, img.unit))
			b.ReportMetric(median(d), fmt.Sprintf("distribution-%s-%s-%s", img.name, op, img.unit))
			b.ReportMetric(median(ratios), img.name+"-"+op+"-ratio")
			b.Logf("%s %s, median of %d: strata %.0f %s, distribution %.0f %s, ratio %.2f",
				img.name, op, runs, median(s), img.unit, median(d), img.unit, median(ratios))
			figs = append(figs, harness.BenchFigure{
				Bench: "registry", Name: fmt.Sprintf("crane %s of %s", op, map[string]string{"big": "one 512 MiB layer", "small": "200 layers of 4 KiB"}[img.name]),
				Unit: img.unit, Better: "higher",
				Strata:    median(s),
				StrataDid: "strata-registry over strata-blobstore (S3 on versitygw; digests checked on push, by the client on pull) and strata-metadata (SQLite)",
				Peer:      "distribution v3.1.2", PeerValue: median(d),
				PeerDid: "distribution's S3 driver on the same versitygw, redirects off, no blob descriptor cache; digests checked on push",
				Ratio:   median(ratios), Target: ">= 1.0", Runs: runs,
			})
		}
	}
	harness.RecordBench(b, figs...)
}

// writeRandomLayer writes a tarball holding one file of n random bytes.
func writeRandomLayer(b *testing.B, path string, n int64) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Name: "random.bin", Mode: 0o644, Size: n, ModTime: time.Unix(0, 0)}); err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(tw, rand.Reader, n); err != nil {
		b.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
}

// startS3Registry runs the distribution registry with its S3 driver on the
// given versitygw, in a bucket of its own, and returns "127.0.0.1:PORT".
func startS3Registry(b *testing.B, s3 *harness.S3) string {
	// versitygw's posix backend keeps a bucket as a folder.
	if err := os.Mkdir(filepath.Join(s3.Dir, "distribution"), 0o755); err != nil {
		b.Fatal(err)
	}
	port := harness.FreePort(b)
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  s3:
    region: us-east-1
    bucket: distribution
    regionendpoint: http://%s
    accesskey: %s
    secretkey: %s
    forcepathstyle: true
    secure: false
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: 127.0.0.1:%d
`, s3.Endpoint, s3.AccessKey, s3.SecretKey, port)
	path := filepath.Join(b.TempDir(), "config.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	harness.Start(b, nil, harness.Tool(b, "registry"), "serve", path)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	harness.WaitFor(b, "the distribution registry", 30*time.Second, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		return nil
	})
	return addr
}
