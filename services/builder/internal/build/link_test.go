package build

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strata-build/strata/services/builder/internal/dockerfile"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// stepsCached lists the steps a build reports served by the cache.
func (r *recorder) stepsCached() []int {
	var out []int
	for _, ev := range r.events {
		if ev.GetCached() != nil {
			out = append(out, int(ev.GetStep()))
		}
	}
	return out
}

// stdout is what the build's steps wrote to their standard output.
func (r *recorder) stdout() string {
	var b strings.Builder
	for _, ev := range r.events {
		if o := ev.GetOutput(); o != nil && o.GetStream() != 2 {
			b.Write(o.GetData())
		}
	}
	return b.String()
}

func withArg(name, value string) func(*Request) {
	return func(r *Request) { r.BuildArgs = map[string]string{name: value} }
}

func noCache(r *Request) { r.NoCache = true }

// configOf is an image's config without what differs between any two
// builds (times, the parent image and container IDs).
func configOf(img *image.Image) image.ContainerConfig {
	c := *img.Config.Config.Clone()
	c.Image, c.Hostname = "", ""
	return c
}

// COPY --link's layer does not depend on the steps below: when only an
// earlier step changed, the step is a cache hit, its layer (blob and all)
// put over the new parent without a copy or an upload, as BuildKit rebases
// it; the steps after it run again, and the image is the one a build
// without the cache makes. COPY without --link runs again.
func TestCopyLinkIsRebasedFromCache(t *testing.T) {
	files := []ctxFile{{path: "f", body: "linked\n"}}
	for _, c := range []struct {
		name, from, copy string
	}{
		{"from the context", "", "COPY --link f /f"},
		{"from a stage", "FROM busybox AS src\nCOPY f /src/f\n", "COPY --link --from=src /src/f /f"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newRuncEnv(t)
			df := c.from + "FROM busybox\nARG X\nRUN echo $X > /x\n" + c.copy + "\nRUN cat /f\n"
			// The steps of the last stage: the COPY is its third after FROM.
			first := strings.Count(c.from, "\n") + 1
			copyStep, catStep := first+3, first+4
			linkLayer := func(img *image.Image) image.Layer {
				t.Helper()
				ls := img.Layers()
				if len(ls) != 3 {
					t.Fatalf("image has %d layers, want the base's, /x and /f", len(ls))
				}
				return ls[2]
			}
			res1, _ := e.mustBuild(df, e.context(files), withArg("X", "1"))
			l1 := linkLayer(e.image(res1.ImageID))
			writes := e.blobs.layerWrites[l1.Blob.Digest]

			res2, rec2 := e.mustBuild(df, e.context(files), withArg("X", "2"))
			img2 := e.image(res2.ImageID)
			if got := rec2.stepsCached(); !slices.Contains(got, copyStep) || slices.Contains(got, copyStep-1) || slices.Contains(got, catStep) {
				t.Errorf("rebuild with another X: steps %v cached, want the COPY --link (%d) and not the RUN steps around it", got, copyStep)
			}
			if l2 := linkLayer(img2); l2.DiffID != l1.DiffID || l2.Blob.Digest != l1.Blob.Digest {
				t.Errorf("rebased COPY --link layer %s (blob %s), want the first build's %s (blob %s)", l2.DiffID, l2.Blob.Digest, l1.DiffID, l1.Blob.Digest)
			}
			if n := e.blobs.layerWrites[l1.Blob.Digest]; n != writes {
				t.Errorf("the COPY --link layer was stored %d more times, want it reused", n-writes)
			}
			if out := rec2.stdout(); !strings.Contains(out, "linked\n") {
				t.Errorf("RUN cat /f over the rebased layer printed %q, want the file", out)
			}
			if got := e.files(img2); got["x"] != "-rw-r--r-- 0:0 2\n" || got["f"] != "-rw-r--r-- 0:0 linked\n" {
				t.Errorf("rebased image: x = %q, f = %q", got["x"], got["f"])
			}

			// The image is what a build without the cache makes.
			res3, rec3 := e.mustBuild(df, e.context(files), withArg("X", "2"), noCache)
			img3 := e.image(res3.ImageID)
			if n := rec3.cached(); n != 0 {
				t.Fatalf("--no-cache build: %d steps cached", n)
			}
			if diff := cmp.Diff(e.files(img3), e.files(img2)); diff != "" {
				t.Errorf("files of the rebased image (-uncached +rebased):\n%s", diff)
			}
			if diff := cmp.Diff(history(img3), history(img2)); diff != "" {
				t.Errorf("history of the rebased image (-uncached +rebased):\n%s", diff)
			}
			if diff := cmp.Diff(configOf(img3), configOf(img2)); diff != "" {
				t.Errorf("config of the rebased image (-uncached +rebased):\n%s", diff)
			}
			if l3 := linkLayer(img3); l3.DiffID != l1.DiffID {
				t.Errorf("uncached COPY --link layer %s, want the rebased one %s", l3.DiffID, l1.DiffID)
			}
			if d2, d3 := img2.Config.RootFS.DiffIDs, img3.Config.RootFS.DiffIDs; len(d2) != 3 || d2[2] != d3[2] || d2[0] != d3[0] {
				t.Errorf("rebased image's diff IDs %v, uncached %v: want the same base and COPY layers", d2, d3)
			}

			// The same Dockerfile without --link copies again.
			plain := strings.Replace(df, "--link ", "", 1)
			e.mustBuild(plain, e.context(files), withArg("X", "1"))
			_, rec := e.mustBuild(plain, e.context(files), withArg("X", "2"))
			if slices.Contains(rec.stepsCached(), copyStep) {
				t.Errorf("COPY without --link was cached over a changed parent")
			}
		})
	}
}

// linkKeys are the link keys of a Dockerfile's --link steps.
func (e *env) linkKeys(df string, files []ctxFile, args map[string]string) []string {
	e.t.Helper()
	parsed, err := dockerfile.Parse([]byte(df))
	if err != nil {
		e.t.Fatal(err)
	}
	pl, err := plan.Make(context.Background(), plan.Input{Dockerfile: parsed, Context: e.context(files), BuildArgs: args,
		MaxConfigBytes: DefaultMaxConfigBytes, Images: planImages{e.b, e.images}})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, sp := range pl.Stages {
		for _, st := range sp.Steps {
			if st.LinkKey != "" {
				out = append(out, string(st.LinkKey))
			}
		}
	}
	return out
}

// Link records are checked as chain records are: one naming an image that
// does not end with the step is ignored and counted, the step runs and the
// record is put right. A --link step its chain record serves stores the
// link record it lacks (as builds before link records left it).
func TestLinkRecords(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	rejected := prometheus.NewCounter(prometheus.CounterOpts{Name: "rejected"})
	e.b.RejectedCacheRecords = rejected
	files := []ctxFile{{path: "f", body: "linked\n"}}
	const df = "FROM busybox\nARG X\nRUN touch x\nCOPY --link f /f\n"
	keys := e.linkKeys(df, files, map[string]string{"X": "1"})
	if len(keys) != 1 {
		t.Fatalf("%d link keys, want 1", len(keys))
	}
	if other := e.linkKeys(df, files, map[string]string{"X": "2"}); !slices.Equal(other, keys) {
		t.Fatalf("link keys %v with X=2, %v with X=1: want them the same", other, keys)
	}
	key := keys[0]
	res1, _ := e.mustBuild(df, e.context(files), withArg("X", "1"))
	if got := e.index.records[key].GetImageId(); got != res1.ImageID {
		t.Fatalf("link record names %q, want the COPY --link step's image %s", got, res1.ImageID)
	}

	delete(e.index.records, key)
	e.mustBuild(df, e.context(files), withArg("X", "1"))
	if got := e.index.records[key].GetImageId(); got != res1.ImageID {
		t.Errorf("after a build the chain served: link record names %q, want %s", got, res1.ImageID)
	}

	e.index.records[key].ImageId = string(e.image("busybox:latest").ID())
	before := testutil.ToFloat64(rejected)
	res3, rec := e.mustBuild(df, e.context(files), withArg("X", "3"))
	if slices.Contains(rec.stepsCached(), 4) || testutil.ToFloat64(rejected) != before+1 {
		t.Errorf("over a forged link record: steps %v cached, %v records rejected; want the COPY run and 1 rejected", rec.stepsCached(), testutil.ToFloat64(rejected)-before)
	}
	if got := e.index.records[key].GetImageId(); got != res3.ImageID {
		t.Errorf("forged link record names %q after the step ran, want %s", got, res3.ImageID)
	}
	if _, rec := e.mustBuild(df, e.context(files), withArg("X", "4")); !slices.Contains(rec.stepsCached(), 4) {
		t.Errorf("the build after it: steps %v cached, want the COPY --link (4) served by the record put right", rec.stepsCached())
	}
}
