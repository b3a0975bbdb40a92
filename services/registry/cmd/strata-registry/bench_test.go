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

// BenchmarkRegistry pushes and pulls an image with one 512 MiB layer with
// crane through strata-registry (blob store on S3, metadata on SQLite) and
// through the distribution registry on the same versitygw, in rounds that
// alternate which goes first, and reports the medians and Strata's ratios
// (above 1: Strata is faster). `make bench-registry` runs it.
func BenchmarkRegistry(b *testing.B) {
	crane := harness.Tool(b, "crane")
	stack := harness.StartStack(b, harness.StackOptions{S3: true, NoBuilder: true, Registry: true})
	dist := startS3Registry(b, stack.S3)

	// The image, made once: a layer of 512 MiB of random bytes.
	dir := b.TempDir()
	layer := filepath.Join(dir, "layer.tar")
	writeRandomLayer(b, layer, 512<<20)
	image := filepath.Join(dir, "image.tar")
	run(b, nil, nil, crane, "append", "--oci-empty-base", "-f", layer, "-t", "bench/image:1", "-o", image)
	const size = 512 << 20

	var push, pull = map[string][]time.Duration{}, map[string][]time.Duration{}
	timed := func(f func()) time.Duration {
		start := time.Now()
		f()
		return time.Since(start)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		order := []struct{ name, host string }{{"strata", stack.RegistryAddr}, {"distribution", dist}}
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, r := range order {
			ref := fmt.Sprintf("%s/bench/round%d:1", r.host, i)
			push[r.name] = append(push[r.name], timed(func() { run(b, nil, nil, crane, "push", "--insecure", image, ref) }))
			out := filepath.Join(dir, "pulled.tar")
			pull[r.name] = append(pull[r.name], timed(func() { run(b, nil, nil, crane, "pull", "--insecure", ref, out) }))
			os.Remove(out)
		}
	}
	b.StopTimer()
	median := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	mbps := func(d time.Duration) float64 { return size / d.Seconds() / (1 << 20) }
	for _, m := range []struct {
		what string
		ds   map[string][]time.Duration
	}{{"push", push}, {"pull", pull}} {
		s, d := median(m.ds["strata"]), median(m.ds["distribution"])
		b.ReportMetric(mbps(s), "strata-"+m.what+"-MiB/s")
		b.ReportMetric(mbps(d), "distribution-"+m.what+"-MiB/s")
		b.ReportMetric(d.Seconds()/s.Seconds(), m.what+"-ratio")
		b.Logf("%s of 512 MiB, median of %d: strata %v (%.0f MiB/s), distribution %v (%.0f MiB/s), ratio %.2f",
			m.what, b.N, s, mbps(s), d, mbps(d), d.Seconds()/s.Seconds())
	}
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
