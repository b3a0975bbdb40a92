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
	"github.com/strata-build/strata/services/blobstore/internal/s3blob"
)

// The settings the blob store runs with by default, which the minio-go
// baseline uses too: parts of this size, this many in flight, for uploads
// and for the ranged GETs of a download.
const (
	partSize    = s3blob.DefaultPartSize
	concurrency = s3blob.DefaultConcurrency
)

// blobSide is one way of moving the blob: through strata-blobstore, or
// straight to the same versitygw with minio-go.
type blobSide struct {
	signed bool
	// Strata's side.
	proc *harness.Process
	bc   *blobclient.Client
	// minio-go's side.
	mc     *minio.Client
	bucket string
}

// BenchmarkBlobTransfer uploads and downloads a 1 GiB incompressible blob
// through strata-blobstore (S3 backend on versitygw) and, in the same runs,
// straight to the same versitygw with minio-go configured as the blob
// store configures it: PutObject in parts of 8 MiB, 4 at once, over
// minio-go's default transport, and a download of 8 MiB ranged GETs, 4 in
// flight, in order. It does so twice for uploads: with unsigned payloads
// (the blob store's default) and with every part signed (streaming SigV4,
// --s3-sign-payload) on both sides. GETs carry no payload, so a download
// is the same either way and is measured once. The blob store checks a
// whole blob it serves against its digest (SHA-256 of every byte, a
// DATA_LOSS error when they differ), which a bare ranged GET does not: the
// download is compared with minio-go as it is and, like for like, with
// minio-go hashing what it reads and checking the digest too, both timed
// in the same run; the latter is the like-for-like row, with the target,
// the former shows what the check costs. Each run times Strata and
// minio-go back to back, in alternating order; ratios are the medians of
// the runs' ratios. It reports the blob store's peak RSS during uploads
// and downloads, and CPU time per GiB. Targets (issue 19): ratios of 0.9
// or more, peak RSS of 128 MiB or less. STRATA_BENCH_MIB sets a smaller
// blob for a quick look.
func BenchmarkBlobTransfer(b *testing.B) {
	size := int64(1 << 30)
	if mib, err := strconv.Atoi(os.Getenv("STRATA_BENCH_MIB")); err == nil && mib > 0 {
		size = int64(mib) << 20
	}
	s3 := harness.StartS3(b)
	file := filepath.Join(b.TempDir(), "blob")
	d := writeRandomFile(b, file, size)
	ctx := context.Background()
	unsigned, signed := startSide(b, s3, false), startSide(b, s3, true)

	type series struct{ direct, strata, directCPU, strataCPU []time.Duration }
	var up = map[bool]*series{false: {}, true: {}}
	var down, downChecked series
	peak := map[string]int64{}
	runs := 0
	for b.Loop() {
		directFirst := runs%2 == 0
		runs++
		for _, side := range []*blobSide{unsigned, signed} {
			s := up[side.signed]
			pair(directFirst,
				func() { measure(b, &s.direct, &s.directCPU, 0, func() { side.putDirect(b, file, size) }) },
				func() {
					if err := side.bc.Delete(ctx, d); err != nil && runs > 1 {
						b.Fatal(err)
					}
					resetHWM(b, side.proc)
					measure(b, &s.strata, &s.strataCPU, side.proc.Cmd.Process.Pid, func() { side.putStrata(b, file, d, size) })
					key := "upload, unsigned"
					if side.signed {
						key = "upload, signed"
					}
					peak[key] = max(peak[key], vmHWM(b, side.proc))
				})
		}
		pair(directFirst,
			func() {
				measure(b, &down.direct, &down.directCPU, 0, func() { unsigned.getDirect(b, size, "") })
				measure(b, &downChecked.direct, &downChecked.directCPU, 0, func() { unsigned.getDirect(b, size, d) })
			},
			func() {
				resetHWM(b, unsigned.proc)
				measure(b, &down.strata, &down.strataCPU, unsigned.proc.Cmd.Process.Pid, func() { unsigned.getStrata(b, d, size) })
				peak["download"] = max(peak["download"], vmHWM(b, unsigned.proc))
			})
		// One Strata download, compared with both of minio-go's.
		downChecked.strata, downChecked.strataCPU = down.strata, down.strataCPU
	}

	mib := float64(size) / (1 << 20)
	mbps := func(ds []time.Duration) float64 { return mib / median(ds).Seconds() }
	cpuPerGiB := func(ds []time.Duration) float64 {
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		return sum.Seconds() / (float64(size) / (1 << 30) * float64(len(ds)))
	}
	const strataDid = "gRPC stream to strata-blobstore, which SHA-256s every byte to check the digest, then S3 parts of 8 MiB, 4 at once"
	const unsignedDid = "; UNSIGNED-PAYLOAD"
	const signedDid = "; streaming SigV4 (SHA-256 per 64 KiB chunk), checked by versitygw"
	const strataDownDid = "strata-blobstore reads 8 MiB ranged GETs, 4 in flight, in order, into a gRPC stream; SHA-256 of every byte, checked against the digest (DATA_LOSS otherwise)"
	// The blob store always checks a whole blob it serves, so the download
	// with the digest checked on both sides is the like-for-like one, with
	// the target; the row against minio-go not hashing shows what the
	// check costs, and has none.
	rows := []struct {
		name, strataDid, peerDid string
		s                        *series
		down                     bool
	}{
		{"upload, unsigned payload", strataDid + unsignedDid, "PutObject of the file, parts of 8 MiB, 4 at once, no hash" + unsignedDid, up[false], false},
		{"upload, signed payload", strataDid + signedDid, "PutObject of the file, parts of 8 MiB, 4 at once" + signedDid, up[true], false},
		{"download, digest checked on both sides", strataDownDid,
			"8 MiB ranged GETs (Core.GetObject), 4 in flight, in order; SHA-256 of every byte, checked against the digest", &downChecked, true},
		{"download, minio-go not checking the digest", strataDownDid, "8 MiB ranged GETs (Core.GetObject), 4 in flight, in order; no hash", &down, true},
	}
	what := fmt.Sprintf("%d MiB blob", size>>20)
	if size == 1<<30 {
		what = "1 GiB blob"
	}
	var figs []harness.BenchFigure
	for _, r := range rows {
		ratio := medianRatio(r.s.direct, r.s.strata)
		target, shown := ">= 0.9", "target >= 0.9"
		if r.s == &down {
			target, shown = "", "no target: minio-go does not check"
		}
		figs = append(figs, harness.BenchFigure{
			Bench: "blob", Name: r.name + ", " + what, Unit: "MiB/s", Better: "higher",
			Strata: mbps(r.s.strata), StrataDid: r.strataDid,
			Peer: "minio-go", PeerValue: mbps(r.s.direct), PeerDid: r.peerDid,
			Ratio: ratio, Target: target, Runs: runs,
		}, harness.BenchFigure{
			Bench: "blob", Name: r.name + ", CPU per GiB (client and blob store; versitygw not counted)", Unit: "CPU-s", Better: "lower",
			Strata: cpuPerGiB(r.s.strataCPU), StrataDid: "the benchmark's client and strata-blobstore",
			Peer: "minio-go", PeerValue: cpuPerGiB(r.s.directCPU), PeerDid: "the benchmark process running minio-go",
			Ratio: cpuPerGiB(r.s.strataCPU) / cpuPerGiB(r.s.directCPU), Runs: runs,
		})
		b.ReportMetric(mbps(r.s.strata), "strata-"+metricName(r.name)+"-MiB/s")
		b.ReportMetric(mbps(r.s.direct), "minio-"+metricName(r.name)+"-MiB/s")
		b.ReportMetric(ratio, metricName(r.name)+"-ratio")
		fmt.Printf("blob %s: strata %.0f MiB/s, minio-go %.0f MiB/s, ratio %.2f (%s); CPU-s/GiB strata %.2f, minio-go %.2f\n",
			r.name, mbps(r.s.strata), mbps(r.s.direct), ratio, shown, cpuPerGiB(r.s.strataCPU), cpuPerGiB(r.s.directCPU))
	}
	for _, k := range []string{"upload, unsigned", "upload, signed", "download"} {
		figs = append(figs, harness.BenchFigure{
			Bench: "blob", Name: "strata-blobstore peak RSS, " + k + ", " + what, Unit: "MiB", Better: "lower",
			Strata: float64(peak[k]) / (1 << 20), StrataDid: "VmHWM of the process, reset before each transfer; the most of any run",
			Target: "<= 128", Runs: runs,
		})
		b.ReportMetric(float64(peak[k])/(1<<20), "peak-RSS-MiB-"+metricName(k))
		fmt.Printf("blob strata-blobstore peak RSS during %s: %.0f MiB (target <= 128)\n", k, float64(peak[k])/(1<<20))
	}
	harness.RecordBench(b, figs...)
}

func metricName(s string) string {
	return strings.NewReplacer(", ", "-", " ", "-").Replace(strings.TrimSuffix(s, " payload"))
}

// startSide starts a strata-blobstore over s3, signing payloads or not, and
// a minio-go client as the blob store makes its own, each with a bucket.
func startSide(b *testing.B, s3 *harness.S3, signed bool) *blobSide {
	b.Helper()
	name := "unsigned"
	if signed {
		name = "signed"
	}
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
	env := []string{"STRATA_S3_ACCESS_KEY=" + s3.AccessKey, "STRATA_S3_SECRET_KEY=" + s3.SecretKey, "STRATA_LOG_LEVEL=warn",
		"STRATA_S3_SIGN_PAYLOAD=" + strconv.FormatBool(signed)}
	if v := os.Getenv("STRATA_BENCH_SERVER_ENV"); v != "" {
		env = append(env, strings.Fields(v)...)
	}
	proc := harness.Start(b, env, harness.Binary(b, "strata-blobstore"), "--listen", addr, "--backend", "s3",
		"--s3-endpoint", s3.Endpoint, "--s3-path-style", "--s3-create-bucket", "--s3-bucket", "strata-"+name)
	conn, err := grpcclient.Dial(addr, grpcclient.Config{}, blobclient.DialOptions()...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	harness.WaitServing(b, addr)
	mc, err := minio.New(s3.Endpoint, &minio.Options{
		Creds: credentials.NewStaticV4(s3.AccessKey, s3.SecretKey, ""), BucketLookup: minio.BucketLookupPath,
		MaxRetries: s3blob.DefaultMaxRetries,
	})
	if err != nil {
		b.Fatal(err)
	}
	side := &blobSide{signed: signed, proc: proc, bc: blobclient.New(conn), mc: mc, bucket: "direct-" + name}
	if err := mc.MakeBucket(context.Background(), side.bucket, minio.MakeBucketOptions{}); err != nil {
		b.Fatal(err)
	}
	return side
}

func (s *blobSide) putDirect(b *testing.B, file string, size int64) {
	f := open(b, file)
	defer f.Close()
	_, err := s.mc.PutObject(context.Background(), s.bucket, "blob", f, size, minio.PutObjectOptions{
		PartSize: partSize, NumThreads: concurrency, DisableContentSha256: !s.signed,
	})
	if err != nil {
		b.Fatal(err)
	}
}

func (s *blobSide) putStrata(b *testing.B, file string, d digest.Digest, size int64) {
	f := open(b, file)
	defer f.Close()
	if _, err := s.bc.Put(context.Background(), f, d, size); err != nil {
		b.Fatal(err)
	}
}

// getDirect reads the object as the blob store reads a blob: ranged GETs
// of partSize, concurrency of them in flight, delivered in order. With a
// digest d, it hashes the bytes in order, as they are delivered, and fails
// when they do not match, as the blob store checks a whole blob it serves.
func (s *blobSide) getDirect(b *testing.B, size int64, d digest.Digest) {
	ctx := context.Background()
	core := minio.Core{Client: s.mc}
	type part struct {
		buf []byte
		err error
	}
	free := make(chan []byte, concurrency+1)
	for range cap(free) {
		free <- make([]byte, partSize)
	}
	queue := make(chan chan part, concurrency-1)
	go func() {
		defer close(queue)
		for off := int64(0); off < size; off += partSize {
			f := make(chan part, 1)
			queue <- f
			buf := (<-free)[:min(partSize, size-off)]
			go func() {
				var opts minio.GetObjectOptions
				if err := opts.SetRange(off, off+int64(len(buf))-1); err != nil {
					f <- part{err: err}
					return
				}
				body, _, _, err := core.GetObject(ctx, s.bucket, "blob", opts)
				if err != nil {
					f <- part{err: err}
					return
				}
				defer body.Close()
				_, err = io.ReadFull(body, buf)
				f <- part{buf: buf, err: err}
			}()
		}
	}()
	var n int64
	var failed error
	var sink io.Writer = io.Discard
	h := sha256.New()
	if d != "" {
		sink = h
	}
	for f := range queue {
		p := <-f
		if p.err != nil && failed == nil {
			failed = p.err
		}
		if p.buf != nil {
			w, _ := sink.Write(p.buf)
			n += int64(w)
			free <- p.buf[:cap(p.buf)]
		}
	}
	if failed != nil || n != size {
		b.Fatalf("ranged GETs: %d bytes, %v", n, failed)
	}
	if got := digest.NewDigest(digest.SHA256, h); d != "" && got != d {
		b.Fatalf("ranged GETs: the bytes hash to %s, want %s", got, d)
	}
}

func (s *blobSide) getStrata(b *testing.B, d digest.Digest, size int64) {
	r, err := s.bc.Open(context.Background(), d, 0, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if n, err := r.WriteTo(io.Discard); err != nil || n != size {
		b.Fatalf("Read: %d bytes, %v", n, err)
	}
}

// pair runs the two sides of a run back to back, minio-go first when
// directFirst: alternating which goes first keeps a warm cache or a
// neighbour's burst from always favouring one side.
func pair(directFirst bool, direct, strata func()) {
	if directFirst {
		direct()
		strata()
		return
	}
	strata()
	direct()
}

// measure runs f, appending its wall time to wall and the CPU time it took
// (this process's, plus pid's when pid is not 0) to cpu.
func measure(b *testing.B, wall, cpu *[]time.Duration, pid int, f func()) {
	cpu0 := cpuTime(b, os.Getpid())
	if pid != 0 {
		cpu0 += cpuTime(b, pid)
	}
	start := time.Now()
	f()
	*wall = append(*wall, time.Since(start))
	cpu1 := cpuTime(b, os.Getpid())
	if pid != 0 {
		cpu1 += cpuTime(b, pid)
	}
	*cpu = append(*cpu, cpu1-cpu0)
}

// median returns the middle of ds (the mean of the two middle ones for an
// even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}

// medianRatio is the median of direct[i]/strata[i], which for times is
// Strata's throughput over minio-go's: above 1, the blob store was the
// faster.
func medianRatio(direct, strata []time.Duration) float64 {
	r := make([]float64, len(direct))
	for i := range direct {
		r[i] = direct[i].Seconds() / strata[i].Seconds()
	}
	slices.Sort(r)
	return (r[(len(r)-1)/2] + r[len(r)/2]) / 2
}

// resetHWM resets a process's peak resident set size to its current size.
func resetHWM(b *testing.B, p *harness.Process) {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.Cmd.Process.Pid), []byte("5"), 0); err != nil {
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
func vmHWM(b *testing.B, p *harness.Process) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
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
