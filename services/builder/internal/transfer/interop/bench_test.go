package interop

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/builder/internal/archive"
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

// xferPeer is one way of moving the image, timed: Strata's or a peer's.
type xferPeer struct {
	name string
	did  string
	// run moves the image; ref is what to pull, or where to push.
	run   func(b *testing.B, ref string)
	times []time.Duration
}

// BenchmarkRegistryTransfer pulls and pushes an image with one 512 MiB
// gzip layer (incompressible bytes) through loopback distribution
// registries, with Strata and with the tools a user would pick for the
// same job: docker pull/push against the machine's engine, crane (to and
// from an OCI layout) and skopeo copy (to and from an OCI layout). Each run
// times every tool once for pulls and once for pushes, in an order that
// rotates from run to run; every push goes to a registry of its own, made
// for that run and removed after it. Ratios are Strata's throughput over
// the peer's, the median of the runs' ratios. `make bench-xfer` runs it
// with -benchtime 5x. Targets (issue 19): pull >= 1.0 x docker pull and
// >= 0.8 x crane; push >= 1.0 x crane from an OCI layout.
func BenchmarkRegistryTransfer(b *testing.B) {
	crane, skopeo, docker := harness.Tool(b, "crane"), harness.Tool(b, "skopeo"), harness.Tool(b, "docker")
	ctx := context.Background()
	src := newEnv(b)
	source := harness.StartRegistry(b)
	ref := source + "/bench/image:1"
	if _, err := src.archive.Import(ctx, randomRootfs(b), archive.ImportOptions{Reference: ref}, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := src.svc.Push(ctx, ref, transfer.PushOptions{}, nil); err != nil {
		b.Fatal(err)
	}
	layout := filepath.Join(b.TempDir(), "layout")
	runB(b, crane, "pull", "--format", "oci", ref, layout)
	dockerRmi := func(refs ...string) { _ = exec.Command(docker, append([]string{"rmi", "-f"}, refs...)...).Run() }
	dockerRmi(ref)
	scratch := func() string {
		dir, err := os.MkdirTemp(b.TempDir(), "pull-")
		if err != nil {
			b.Fatal(err)
		}
		return dir
	}

	// Strata pulls into a new stack each run, so that nothing is there yet;
	// it is started before the timing.
	var dst *env
	pulls := []*xferPeer{
		{name: "strata", did: "GET streamed to the blob store (fs backend: SHA-256 checked, fsync at commit) while gunzipped, tar-checked and SHA-256'd for the diff ID; image recorded in metadata",
			run: func(b *testing.B, ref string) {
				if _, err := dst.svc.Pull(ctx, ref, transfer.PullOptions{}, nil); err != nil {
					b.Fatal(err)
				}
			}},
		{name: "docker pull", did: "Docker 20.10: GET; SHA-256 check; gunzipped and extracted into its layer store (fuse-overlayfs), diff ID computed",
			run: func(b *testing.B, ref string) { runB(b, docker, "pull", "-q", ref) }},
		{name: "crane pull", did: "crane pull --format oci: GET; SHA-256 check; written to an OCI layout as it came, no gunzip, no fsync",
			run: func(b *testing.B, ref string) { runB(b, crane, "pull", "--format", "oci", ref, scratch()) }},
		{name: "skopeo copy", did: "skopeo copy docker:// oci:DIR: GET; SHA-256 check; written to an OCI layout as it came, no gunzip",
			run: func(b *testing.B, ref string) {
				runB(b, skopeo, "copy", "-q", "--src-tls-verify=false", "docker://"+ref, "oci:"+scratch())
			}},
	}
	pushes := []*xferPeer{
		{name: "strata", did: "HEAD, then the stored gzip blob sent as it is (digest known, no re-hash), manifest verbatim; the registry fsyncs",
			run: func(b *testing.B, to string) {
				src.tag(b, ref, to)
				if _, err := src.svc.Push(ctx, to, transfer.PushOptions{}, nil); err != nil {
					b.Fatal(err)
				}
			}},
		{name: "crane push (OCI layout)", did: "crane push LAYOUT: HEAD, then the layout's gzip blob sent as it is (digest from the manifest); the registry fsyncs",
			run: func(b *testing.B, to string) { runB(b, crane, "push", layout, to) }},
		{name: "docker push", did: "Docker 20.10: the layer re-tarred from its store and gzipped again (a new digest), SHA-256, sent; the registry fsyncs",
			run: func(b *testing.B, to string) {
				runB(b, docker, "tag", ref, to)
				runB(b, docker, "push", "-q", to)
			}},
		{name: "skopeo copy", did: "skopeo copy oci:LAYOUT docker://: HEAD, then the layout's gzip blob sent as it is, SHA-256 checked while read; the registry fsyncs",
			run: func(b *testing.B, to string) {
				runB(b, skopeo, "copy", "-q", "--dest-tls-verify=false", "oci:"+layout, "docker://"+to)
			}},
	}

	runs := 0
	for b.Loop() {
		b.StopTimer()
		dst = newEnv(b)
		b.StartTimer()
		for _, p := range rotate(pulls, runs) {
			start := time.Now()
			p.run(b, ref)
			p.times = append(p.times, time.Since(start))
		}
		b.StopTimer()
		targets := map[string]*harness.Registry{}
		for _, p := range pushes {
			targets[p.name] = harness.StartRemovableRegistry(b)
		}
		b.StartTimer()
		for _, p := range rotate(pushes, runs) {
			to := fmt.Sprintf("%s/bench/%s:1", targets[p.name].Addr, strings.Fields(p.name)[0])
			start := time.Now()
			p.run(b, to)
			p.times = append(p.times, time.Since(start))
		}
		b.StopTimer()
		for _, p := range pushes {
			if err := targets[p.name].Remove(); err != nil {
				b.Fatal(err)
			}
			if p.name == "docker push" {
				dockerRmi(ref, fmt.Sprintf("%s/bench/docker:1", targets[p.name].Addr))
			}
		}
		runs++
		b.StartTimer()
	}

	const layer = "one 512 MiB layer (gzip of incompressible bytes)"
	targets := map[string]string{"pull/docker pull": ">= 1.0", "pull/crane pull": ">= 0.8", "push/crane push (OCI layout)": ">= 1.0"}
	var figs []harness.BenchFigure
	for _, set := range []struct {
		op    string
		peers []*xferPeer
	}{{"pull", pulls}, {"push", pushes}} {
		strata := set.peers[0]
		for _, p := range set.peers[1:] {
			ratio := medianRatio(p.times, strata.times)
			figs = append(figs, harness.BenchFigure{
				Bench: "xfer", Name: set.op + ", " + layer, Unit: "MiB/s", Better: "higher",
				Strata: mbps(median(strata.times)), StrataDid: strata.did,
				Peer: p.name, PeerValue: mbps(median(p.times)), PeerDid: p.did,
				Ratio: ratio, Target: targets[set.op+"/"+p.name], Runs: runs,
			})
			b.ReportMetric(ratio, set.op+"-ratio-"+strings.Fields(p.name)[0])
			fmt.Printf("xfer %s: strata %.0f MiB/s, %s %.0f MiB/s, ratio %.2f %s\n", set.op, mbps(median(strata.times)),
				p.name, mbps(median(p.times)), ratio, targets[set.op+"/"+p.name])
		}
	}
	harness.RecordBench(b, figs...)
}

// rotate returns peers in the order of run r: the first one r places on.
func rotate(peers []*xferPeer, r int) []*xferPeer {
	k := r % len(peers)
	return append(slices.Clone(peers[k:]), peers[:k]...)
}

func mbps(d time.Duration) float64 { return float64(benchLayer) / (1 << 20) / d.Seconds() }

// median returns the middle of ds (the mean of the two middle ones for an
// even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}

// medianRatio is the median of peer[i]/strata[i], which for times of one
// job is Strata's throughput over the peer's: above 1, Strata was faster.
func medianRatio(peer, strata []time.Duration) float64 {
	r := make([]float64, len(peer))
	for i := range peer {
		r[i] = peer[i].Seconds() / strata[i].Seconds()
	}
	slices.Sort(r)
	return (r[(len(r)-1)/2] + r[len(r)/2]) / 2
}

func runB(b *testing.B, name string, args ...string) {
	b.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
