package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/dockerfile"
	"github.com/strata-build/strata/services/builder/internal/exec"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

func TestOnbuildTriggersRunWhenTheImageIsABase(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	res, _ := e.mustBuild("FROM busybox\nONBUILD ENV FROM_TRIGGER=1\nONBUILD RUN touch /triggered\n", nil)
	if got := e.image(res.ImageID).Config.Config.OnBuild; len(got) != 2 {
		t.Fatalf("OnBuild = %q, want the two triggers", got)
	}
	if len(e.sandbox.runs) != 0 {
		t.Fatal("a trigger ran in the image that declares it")
	}
	if _, err := e.index.TagImage(context.Background(), nil2(res.ImageID, "withtriggers:latest")); err != nil {
		t.Fatal(err)
	}
	child, _ := e.mustBuild("FROM withtriggers\nLABEL child=yes\n", nil)
	img := e.image(child.ImageID)
	if v, _ := lookupEnv(img.Config.Config.Env, "FROM_TRIGGER"); v != "1" {
		t.Errorf("the ENV trigger did not apply: Env = %q", img.Config.Config.Env)
	}
	if len(img.Config.Config.OnBuild) != 0 {
		t.Errorf("the child keeps the triggers: %q", img.Config.Config.OnBuild)
	}
	if files := e.files(img); files["triggered"] == "" {
		t.Error("the RUN trigger did not run")
	}
	h := history(img)
	if !strings.Contains(strings.Join(h, "\n"), "/bin/sh -c touch /triggered") {
		t.Errorf("history lacks the trigger's step: %q", h)
	}
}

func nil2(id, tag string) *metadatav1.TagImageRequest {
	return &metadatav1.TagImageRequest{Source: id, Target: tag}
}

func lookupEnv(env []string, k string) (string, bool) {
	for _, e := range env {
		if strings.HasPrefix(e, k+"=") {
			return strings.TrimPrefix(e, k+"="), true
		}
	}
	return "", false
}

func TestAddDownloadsURLsButNotFromPrivateAddresses(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/files/tool.sh", http.StatusFound)
			return
		}
		w.Header().Set("Last-Modified", time.Unix(1e9, 0).UTC().Format(http.TimeFormat))
		w.Write([]byte("#!/bin/sh\necho tool\n"))
	}))
	defer srv.Close()

	_, _, err := e.build("FROM busybox\nADD "+srv.URL+"/files/tool.sh /usr/bin/\n", nil)
	if !errorsIsPermission(err) || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("ADD from a loopback URL: err = %v, want PERMISSION_DENIED naming the address", err)
	}

	e.b.URLPolicy.AllowPrivate = true
	res, _ := e.mustBuild("FROM busybox\nADD "+srv.URL+"/files/tool.sh /usr/bin/\n", nil)
	files := e.files(e.image(res.ImageID))
	if got := files["usr/bin/tool.sh"]; got != "-rw------- 0:0 #!/bin/sh\necho tool\n" {
		t.Errorf("usr/bin/tool.sh = %q, want the download with mode 0600", got)
	}
	h := history(e.image(res.ImageID))
	want := "/bin/sh -c #(nop) ADD file:"
	if !strings.HasPrefix(h[len(h)-1], want) || !strings.HasSuffix(h[len(h)-1], " in /usr/bin/ ") {
		t.Errorf("ADD history = %q", h[len(h)-1])
	}
}

func errorsIsPermission(err error) bool { return errors.Is(err, errdefs.ErrPermissionDenied) }

// labelDockerfile is FROM busybox and LABEL lines up to size bytes.
func labelDockerfile(size int) string {
	var b strings.Builder
	b.WriteString("FROM busybox\n")
	for i := 0; b.Len() < size-32; i++ {
		fmt.Fprintf(&b, "LABEL k%d=v%d\n", i, i)
	}
	return b.String()
}

// Each step of the classic builder records the whole config so far, so a
// Dockerfile of many LABEL lines once cost time and memory quadratic in its
// size: a 1 MiB one ran for minutes and gigabytes. It now fails at once.
func TestHugeDockerfilesFailFastInBoundedMemory(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	for _, tc := range []struct {
		name   string
		df     string
		limits Limits
		want   string
	}{
		{"1 MiB of LABEL lines", labelDockerfile(1 << 20), Limits{}, "--max-instructions"},
		{"configs past the limit", labelDockerfile(8 << 10), Limits{MaxConfigBytes: 1 << 20}, "--max-config-bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.b.Limits = tc.limits
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, _, err := e.build(tc.df, nil)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("build = %v, want an error naming %s", err, tc.want)
			}
			if took > 5*time.Second && !raceEnabled {
				t.Errorf("refusing it took %v", took)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 512<<20 && !raceEnabled {
				t.Errorf("refusing it allocated %d MiB", alloc>>20)
			}
			if len(e.index.images) != 1 {
				t.Errorf("the refused build recorded %d images", len(e.index.images)-1)
			}
		})
	}
	e.b.Limits = Limits{}
	if _, _, err := e.build(labelDockerfile(4<<10), nil); err != nil {
		t.Errorf("a Dockerfile of a few hundred LABEL lines: %v", err)
	}
}

// The sandbox runs a RUN step with the hostname of the container the
// image records.
func TestRunSeesTheRecordedContainersHostname(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	res, _ := e.mustBuild("FROM busybox\nRUN touch x\n", nil)
	img := e.image(res.ImageID)
	if len(e.sandbox.runs) != 1 {
		t.Fatalf("%d RUN steps ran, want 1", len(e.sandbox.runs))
	}
	if got, want := e.sandbox.runs[0].Hostname, img.Config.Container[:12]; got != want {
		t.Errorf("RUN ran with hostname %q, the image records container %q", got, img.Config.Container)
	}
}

// Running a plan does not change it: what a run learns (container IDs, a
// COPY --from's history row) stays in the run.
func TestRunLeavesThePlanAsItWas(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	c := e.context([]ctxFile{{path: "app", dir: true, mode: 0o755}, {path: "app/x", body: "x\n"}})
	df, err := dockerfile.Parse([]byte("FROM busybox AS a\nCOPY app /app\nRUN touch /ran\nWORKDIR /w\nENV A=1\n" +
		"FROM busybox\nCOPY --from=a /app /copied\n"))
	if err != nil {
		t.Fatal(err)
	}
	pl, err := plan.Make(context.Background(), plan.Input{Dockerfile: df, Context: c, MaxConfigBytes: 1 << 20, Images: planImages{e.b, e.b.Images}})
	if err != nil {
		t.Fatal(err)
	}
	before, err := json.Marshal(pl)
	if err != nil {
		t.Fatal(err)
	}
	if key := string(pl.Stages[0].Steps[0].Key); !strings.Contains(string(before), key) {
		t.Fatalf("the plan's JSON does not hold its first key %s: it compares nothing", key)
	}
	if _, _, err := exec.Run(context.Background(), e.b.deps(e.b.Images, e.b.Layers), pl, exec.Options{Context: c}, func(*builderv1.BuildEvent) {}); err != nil {
		t.Fatal(err)
	}
	after, err := json.Marshal(pl)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(before), string(after)); diff != "" {
		t.Errorf("the plan changed while it ran (-before +after):\n%s", diff)
	}
}
