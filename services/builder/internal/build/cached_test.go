package build

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A cache record that points a real key at an image the step does not make
// is ignored and counted: the step runs, makes the right image, and its
// record is put right for the next build.
func TestForgedCacheRecordsAreIgnored(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	rejected := prometheus.NewCounter(prometheus.CounterOpts{Name: "rejected"})
	e.b.RejectedCacheRecords = rejected
	const dockerfile = "FROM busybox\nRUN touch good\nENV A=1\n"
	theirs, _ := e.mustBuild("FROM busybox\nRUN touch evil\n", nil)
	ours, _ := e.mustBuild(dockerfile, nil)
	ourImg := e.image(ours.ImageID)
	var key string
	for k, r := range e.index.records {
		if strings.HasSuffix(r.GetDescription(), "touch good") {
			key = k
		}
	}
	if key == "" {
		t.Fatal("no cache record of the step RUN touch good")
	}
	for _, forged := range []struct{ name, image string }{
		{"another user's image over the same parent", theirs.ImageID},
		{"an image of the same build, over another parent", ours.ImageID},
		{"the base image itself", string(e.image("busybox:latest").ID())},
		{"an image that does not exist", "sha256:" + strings.Repeat("0", 64)},
	} {
		t.Run(forged.name, func(t *testing.T) {
			e.index.records[key].ImageId = forged.image
			before, runs := testutil.ToFloat64(rejected), len(e.sandbox.runs)
			res, rec := e.mustBuild(dockerfile, nil)
			if got := testutil.ToFloat64(rejected) - before; got != 1 {
				t.Errorf("%v records counted as rejected, want 1", got)
			}
			if rec.cached() != 0 || len(e.sandbox.runs) != runs+1 {
				t.Errorf("%d steps cached, %d RUN steps ran; want none cached and the RUN step run", rec.cached(), len(e.sandbox.runs)-runs)
			}
			img := e.image(res.ImageID)
			if diff := cmp.Diff(history(ourImg), history(img)); diff != "" {
				t.Errorf("history of the rebuilt image (-want +got):\n%s", diff)
			}
			files := e.files(img)
			if _, ok := files["evil"]; ok || files["good"] == "" {
				t.Errorf("rebuilt image's files %v: want good and not evil", keys(files))
			}
			if got := e.index.records[key].GetImageId(); got == forged.image {
				t.Errorf("the forged record stays after the step ran")
			}
			// The record is right again: the next build is all cache.
			before = testutil.ToFloat64(rejected)
			res2, rec2 := e.mustBuild(dockerfile, nil)
			if rec2.cached() != 2 || res2.ImageID != res.ImageID || testutil.ToFloat64(rejected) != before {
				t.Errorf("next build: %d steps cached, image %s (want 2 and %s), %v more rejected", rec2.cached(), res2.ImageID, res.ImageID, testutil.ToFloat64(rejected)-before)
			}
		})
	}
}
