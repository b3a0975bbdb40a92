package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
)

// faultBlobSize is the blob the fault test uploads through S3's faults.
const faultBlobSize = 512 << 20

// s3Env is the environment that gives strata-blobstore s3's credentials.
func s3Env(s3 *harness.S3) []string {
	return []string{"STRATA_S3_ACCESS_KEY=" + s3.AccessKey, "STRATA_S3_SECRET_KEY=" + s3.SecretKey, "STRATA_LOG_LEVEL=warn"}
}

// s3Args are the flags of a blob store on bucket at endpoint, quick to
// notice faults: connections idle for 2 s are cut, health is probed every
// 200 ms, and a lease lasts 2 s.
func s3Args(endpoint, bucket string) []string {
	return []string{"--backend", "s3", "--s3-endpoint", endpoint, "--s3-path-style", "--s3-create-bucket", "--s3-bucket", bucket,
		"--s3-idle-timeout", "2s", "--health-probe-interval", "200ms", "--s3-upload-lease", "2s"}
}

// blobClient dials the blob store at addr as the services do.
func blobClient(t *testing.T, addr string) (*blobclient.Client, healthpb.HealthClient) {
	t.Helper()
	conn, err := grpcclient.Dial(addr, grpcclient.Config{}, blobclient.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return blobclient.New(conn), healthpb.NewHealthClient(conn)
}

// waitHealth waits until the blob store's health is status.
func waitHealth(t *testing.T, h healthpb.HealthClient, status healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	harness.WaitFor(t, "health "+status.String(), 20*time.Second, func(ctx context.Context) error {
		resp, err := h.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() != status {
			err = fmt.Errorf("health is %v", resp.GetStatus())
		}
		return err
	})
}

// toxic adds a toxic to p and returns what removes it.
func toxic(t *testing.T, p *toxiproxy.Proxy, kind, stream string, attrs toxiproxy.Attributes) func() {
	t.Helper()
	name := kind + "_" + stream
	if _, err := p.AddToxic(name, kind, stream, 1, attrs); err != nil {
		t.Fatalf("adding toxic %s: %v", name, err)
	}
	return func() {
		if err := p.RemoveToxic(name); err != nil {
			t.Errorf("removing toxic %s: %v", name, err)
		}
	}
}

// TestUploadThroughS3Faults uploads 512 MiB, at a client's pace, while
// the link from the blob store to S3 gets latency, a bandwidth limit,
// resets, a black hole and cut streams, and goes down: every failed stream
// is UNAVAILABLE, the client resumes from what the store kept, the upload
// completes once the faults stop, and the blob reads back whole through
// cut streams. Health is NOT_SERVING while S3 is down, SERVING after.
func TestUploadThroughS3Faults(t *testing.T) {
	s3 := harness.StartS3(t)
	tp := harness.StartToxiproxy(t)
	proxy := tp.Proxy(t, "s3", s3.Endpoint)
	metrics := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	addr := startServer(t, s3Env(s3), append(s3Args(proxy.Listen, "faults"), "--metrics-addr", metrics)...)
	bc, health := blobClient(t, addr)

	file := filepath.Join(t.TempDir(), "blob")
	d := writeRandomFile(t, file, faultBlobSize)
	file0, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer file0.Close()
	// At 32 MiB/s, so that the upload lasts through every fault.
	f := &slowReader{f: file0, rate: 32 << 20, start: time.Now()}
	const ref = "through-faults"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// The client: Put (which retries UNAVAILABLE a few times itself), and
	// again with the same ref whenever it gives up.
	type result struct {
		info     blobclient.Info
		failures []error
		resumed  []int64 // the offsets the store held after failures
		err      error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		for {
			r.info, r.err = bc.Put(ctx, f, d, faultBlobSize, blobclient.WithRef(ref))
			if r.err == nil || errdefs.Code(r.err) != codes.Unavailable || ctx.Err() != nil {
				done <- r
				return
			}
			r.failures = append(r.failures, r.err)
			if u, err := bc.UploadStatus(ctx, ref); err == nil {
				r.resumed = append(r.resumed, u.Offset)
			}
		}
	}()
	var progress int64
	harness.WaitFor(t, "the upload to get going", time.Minute, func(ctx context.Context) error {
		u, err := bc.UploadStatus(ctx, ref)
		if err != nil {
			return err
		}
		if progress = u.Offset; progress < 32<<20 {
			return fmt.Errorf("offset %d", progress)
		}
		return nil
	})

	phase := func(what string, d time.Duration, remove func()) {
		t.Logf("%s for %v", what, d)
		time.Sleep(d)
		remove()
	}
	up := toxic(t, proxy, "latency", "upstream", toxiproxy.Attributes{"latency": 50, "jitter": 20})
	down := toxic(t, proxy, "latency", "downstream", toxiproxy.Attributes{"latency": 50, "jitter": 20})
	phase("latency 50 ms ± 20 each way", 2*time.Second, func() { up(); down() })
	phase("bandwidth 20 MB/s to S3", 2*time.Second, toxic(t, proxy, "bandwidth", "upstream", toxiproxy.Attributes{"rate": 20 << 10}))
	phase("connections reset", time.Second, toxic(t, proxy, "reset_peer", "upstream", toxiproxy.Attributes{"timeout": 0}))
	phase("a black hole (no byte through, nothing closed)", 4*time.Second, toxic(t, proxy, "timeout", "upstream", toxiproxy.Attributes{"timeout": 0}))
	phase("streams cut after 1 MiB", 2*time.Second, toxic(t, proxy, "limit_data", "upstream", toxiproxy.Attributes{"bytes": 1 << 20}))

	t.Log("S3 down")
	if err := proxy.Disable(); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, health, healthpb.HealthCheckResponse_NOT_SERVING)
	if err := proxy.Enable(); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, health, healthpb.HealthCheckResponse_SERVING)

	r := <-done
	if r.err != nil {
		t.Fatalf("the upload after the faults stopped = %v (failures before: %v)", r.err, r.failures)
	}
	t.Logf("uploaded %d MiB after %d failed tries, resuming at %v: %v", faultBlobSize>>20, len(r.failures), r.resumed, r.failures)
	for _, off := range r.resumed {
		if off < progress {
			t.Errorf("a retry resumed at %d, before the %d bytes the store had kept before the faults", off, progress)
		}
	}
	// Put's own retries hide the streams that failed: the server counts them.
	writes := writeCodes(t, metrics)
	t.Logf("Write calls by code: %v", writes)
	for code, n := range writes {
		if code != "OK" && code != "Unavailable" && n > 0 {
			t.Errorf("%d Write calls ended %s; want every failure UNAVAILABLE", n, code)
		}
	}
	if r.info.Digest != d || r.info.Size != faultBlobSize {
		t.Errorf("Put = %+v, want %s of %d bytes", r.info, d, faultBlobSize)
	}
	if ups, err := bc.Uploads(ctx); err != nil || len(ups) != 0 {
		t.Errorf("uploads left after the commit: %+v, %v", ups, err)
	}

	// A read through streams cut every 3 MiB, then reset once.
	cut := toxic(t, proxy, "limit_data", "downstream", toxiproxy.Attributes{"bytes": 3 << 20})
	got := readDigest(t, bc, d)
	cut()
	t.Log("read back")
	if got != d {
		t.Errorf("reading through cut streams: the bytes hash to %s, want %s", got, d)
	}
}

// writeCodes returns how many Write calls the blob store whose metrics are
// at addr ended with each gRPC code.
func writeCodes(t *testing.T, addr string) map[string]int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, m := range families["grpc_server_handled_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["grpc_method"] == "Write" && m.GetCounter().GetValue() > 0 {
			out[labels["grpc_code"]] = int(m.GetCounter().GetValue())
		}
	}
	return out
}

// slowReader reads a file at about rate bytes a second, counted from
// start across seeks. (It has only Read and Seek: io.Copy would use an
// *os.File's WriteTo, which goes around the pace.)
type slowReader struct {
	f     *os.File
	rate  int64
	start time.Time
	n     int64
}

func (r *slowReader) Seek(offset int64, whence int) (int64, error) { return r.f.Seek(offset, whence) }

func (r *slowReader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p[:min(len(p), 1<<20)])
	r.n += int64(n)
	time.Sleep(time.Duration(r.n*int64(time.Second)/r.rate) - time.Since(r.start))
	return n, err
}

// readDigest reads the whole blob d (which the store verifies as it
// serves it) and returns the digest of what arrived.
func readDigest(t *testing.T, bc *blobclient.Client, d digest.Digest) digest.Digest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := bc.Open(ctx, d, 0, 0)
	if err != nil {
		t.Fatalf("Open(%s) = %v", d, err)
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatalf("reading %s = %v", d, err)
	}
	return digest.NewDigest(digest.SHA256, h)
}

// TestBlobStoreReplicas runs two blob stores on one bucket. An upload
// begun on one that is killed resumes on the other once its lease runs
// out. A writer whose replica lost S3 long enough for its lease to run out
// is taken over by a writer on the other replica, which commits; the first
// then gets a clear UNAVAILABLE, and the blob is right.
func TestBlobStoreReplicas(t *testing.T) {
	s3 := harness.StartS3(t)
	tp := harness.StartToxiproxy(t)
	proxy := tp.Proxy(t, "s3-a", s3.Endpoint)
	server := harness.Binary(t, "strata-blobstore")
	start := func(endpoint string) (*harness.Process, *blobclient.Client) {
		addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
		p := harness.Start(t, s3Env(s3), server, append([]string{"--listen", addr}, s3Args(endpoint, "replicas")...)...)
		bc, health := blobClient(t, addr)
		waitHealth(t, health, healthpb.HealthCheckResponse_SERVING)
		return p, bc
	}
	pa, a := start(proxy.Listen)
	_, b := start(s3.Endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const size = 40 << 20
	file := filepath.Join(t.TempDir(), "blob")
	d := writeRandomFile(t, file, size)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}

	// Taken over: a writer on A stalls while A cannot reach S3.
	w, err := a.NewWriter(ctx, d, size, blobclient.WithRef("taken-over"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(data[:12<<20]); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, "parts stored", 30*time.Second, func(ctx context.Context) error {
		u, err := b.UploadStatus(ctx, "taken-over")
		if err == nil && u.Offset < 8<<20 {
			err = fmt.Errorf("offset %d", u.Offset)
		}
		return err
	})
	if err := proxy.Disable(); err != nil {
		t.Fatal(err)
	}
	var info blobclient.Info
	harness.WaitFor(t, "the upload on the other replica", time.Minute, func(context.Context) error {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		info, err = b.Put(ctx, f, d, size, blobclient.WithRef("taken-over"))
		return err
	})
	if info.Digest != d {
		t.Fatalf("Put on the other replica = %+v, want %s", info, d)
	}
	if err := proxy.Enable(); err != nil {
		t.Fatal(err)
	}
	_, err = w.Write(data[12<<20:])
	if err == nil {
		_, err = w.Commit(ctx)
	}
	var e *errdefs.Error
	if !errdefs.IsUnavailable(err) || !errors.As(err, &e) || e.Reason() != "UPLOAD_TAKEN_OVER" {
		t.Errorf("the stalled writer, after the other replica took its upload over = %v; want UNAVAILABLE, UPLOAD_TAKEN_OVER", err)
	}
	for name, c := range map[string]*blobclient.Client{"a": a, "b": b} {
		if got := readDigest(t, c, d); got != d {
			t.Errorf("reading %s on replica %s: the bytes hash to %s", d, name, got)
		}
	}

	// Killed: an upload begun on A, which dies, resumes on B.
	other := append([]byte(nil), data...)
	other[0] ^= 1
	od := digest.FromBytes(other)
	w, err = a.NewWriter(ctx, od, size, blobclient.WithRef("killed"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(other[:24<<20]); err != nil {
		t.Fatal(err)
	}
	var kept int64
	harness.WaitFor(t, "parts stored", 30*time.Second, func(ctx context.Context) error {
		u, err := b.UploadStatus(ctx, "killed")
		if kept = u.Offset; err == nil && kept < 16<<20 {
			err = fmt.Errorf("offset %d", kept)
		}
		return err
	})
	pa.Stop()
	var resumedAt int64
	harness.WaitFor(t, "the resume on the other replica", time.Minute, func(context.Context) error {
		w, err := b.NewWriter(ctx, od, size, blobclient.WithRef("killed"))
		if err != nil {
			return err
		}
		defer w.Close()
		resumedAt = w.Offset()
		if _, err := w.Write(other[resumedAt:]); err != nil {
			return err
		}
		_, err = w.Commit(ctx)
		return err
	})
	if resumedAt < kept {
		t.Errorf("resumed on the other replica at %d, want the %d bytes kept", resumedAt, kept)
	}
	if got := readDigest(t, b, od); got != od {
		t.Errorf("reading the resumed blob: the bytes hash to %s, want %s", got, od)
	}
}
