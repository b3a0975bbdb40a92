package build

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/cachemount"
	"github.com/strata-build/strata/services/builder/internal/image"
)

// withCacheMounts gives the builder a cache mount store in dir.
func (e *env) withCacheMounts(dir string) {
	e.t.Helper()
	s, err := cachemount.New(dir, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	e.b.CacheMounts = s
}

// layerNames lists the entries of an image's top layer.
func (e *env) layerNames(img *image.Image) []string {
	e.t.Helper()
	ls := img.Layers()
	rc, err := e.blobs.Open(context.Background(), ls[len(ls)-1].Blob.Digest)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rc.Close()
	gz, err := gzip.NewReader(rc)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, strings.TrimSuffix(h.Name, "/"))
	}
}

func cacheDir(root, id string) string {
	h := sha256.Sum256([]byte(id))
	return filepath.Join(root, hex.EncodeToString(h[:]), "data")
}

const counterStep = `RUN --mount=type=cache,target=/root/.cache/app sh -c 'n=$(cat /root/.cache/app/counter 2>/dev/null || echo 0); echo $((n+1)) > /root/.cache/app/counter; cp /root/.cache/app/counter /seen'`

func TestCacheMountOutlivesTheBuildAndTheBuilder(t *testing.T) {
	e := newRuncEnv(t)
	root := filepath.Join(t.TempDir(), "cachemounts")
	e.withCacheMounts(root)
	build := func(v string) *image.Image {
		t.Helper()
		res, _ := e.mustBuild("FROM busybox\nRUN echo "+v+" > /v\n"+counterStep+"\n", nil)
		return e.image(res.ImageID)
	}
	if got := e.files(build("1"))["seen"]; got != "-rw-r--r-- 0:0 1\n" {
		t.Fatalf("first build: /seen = %q, want 1", got)
	}
	// The cache's content is not in the key: the same build is a hit,
	// though the cache changed.
	if _, rec := e.mustBuild("FROM busybox\nRUN echo 1 > /v\n"+counterStep+"\n", nil); rec.cached() != 2 {
		t.Errorf("the same build again: %d steps cached, want 2", rec.cached())
	}
	// An earlier step changes: the step runs again, over the same cache.
	img := build("2")
	if got := e.files(img)["seen"]; got != "-rw-r--r-- 0:0 2\n" {
		t.Errorf("second build: /seen = %q, want 2 (the cache mount kept the counter)", got)
	}
	if got := strings.Join(e.layerNames(img), " "); got != "seen" {
		t.Errorf("the cache step's layer holds %q, want only seen: no mount point, no cache content", got)
	}
	for p := range e.files(img) {
		if strings.HasPrefix(p, "root/.cache") {
			t.Errorf("%s is in the image", p)
		}
	}
	// A builder restart: a new store over the same directory.
	e.withCacheMounts(root)
	if got := e.files(build("3"))["seen"]; got != "-rw-r--r-- 0:0 3\n" {
		t.Errorf("after a restart: /seen = %q, want 3", got)
	}
	if b, err := os.ReadFile(filepath.Join(cacheDir(root, "/root/.cache/app"), "counter")); err != nil || string(b) != "3\n" {
		t.Errorf("the cache directory holds %q, %v", b, err)
	}
}

// Two steps on one locked id run one after the other; on a shared id they
// overlap (which shows the test can tell). Each step waits up to 3 s for
// the other to start: steps sharing the id meet, a locked one times out
// alone.
func TestCacheMountSharing(t *testing.T) {
	for _, tc := range []struct {
		sharing string
		overlap bool
	}{{"locked", false}, {"shared", true}} {
		t.Run(tc.sharing, func(t *testing.T) {
			e := newRuncEnv(t)
			root := filepath.Join(t.TempDir(), "cachemounts")
			e.withCacheMounts(root)
			errs := make(chan error, 2)
			for _, who := range []string{"a", "b"} {
				go func() {
					df := "FROM busybox\nRUN --mount=type=cache,id=lk,target=/c,sharing=" + tc.sharing +
						" sh -c 'echo start " + who + " >> /c/log; i=0; while [ $(grep -c start /c/log) -lt 2 ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; echo end " + who + " >> /c/log'\n"
					_, _, err := e.build(df, nil, func(r *Request) { r.Tags = []string{"lk:" + who} })
					errs <- err
				}()
			}
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			b, err := os.ReadFile(filepath.Join(cacheDir(root, "lk"), "log"))
			if err != nil {
				t.Fatal(err)
			}
			log := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if len(log) != 4 {
				t.Fatalf("sharing=%s: the cache's log is %q, want both steps' start and end", tc.sharing, log)
			}
			serial := strings.HasPrefix(log[0], "start") && strings.HasPrefix(log[1], "end") &&
				strings.HasPrefix(log[2], "start") && strings.HasPrefix(log[3], "end")
			if serial == tc.overlap {
				t.Errorf("sharing=%s: log %q, want overlap %t", tc.sharing, log, tc.overlap)
			}
		})
	}
}

// Two steps that use a private cache id at once get an instance each
// (they meet over a shared id, and each counts its runs in its own
// instance); both instances are kept, as in BuildKit: a later step reuses
// one, the store lists both, keeps them across a restart, and a prune
// removes them.
func TestCacheMountPrivateInstancesAreKept(t *testing.T) {
	e := newRuncEnv(t)
	root := filepath.Join(t.TempDir(), "cachemounts")
	e.withCacheMounts(root)
	step := func(who string) string {
		return "FROM busybox\nRUN --mount=type=cache,id=meet,target=/m --mount=type=cache,id=pv,target=/c,sharing=private sh -c '" +
			"echo " + who + " >> /m/started; i=0; while [ $(grep -c . /m/started) -lt 2 ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; " +
			"n=$(cat /c/n 2>/dev/null || echo 0); echo $((n+1)) > /c/n; cp /c/n /seen'\n"
	}
	seen := func(res *Result) string {
		t.Helper()
		return strings.TrimPrefix(e.files(e.image(res.ImageID))["seen"], "-rw-r--r-- 0:0 ")
	}
	instances := func() []cachemount.Usage {
		var out []cachemount.Usage
		for _, u := range e.b.CacheMounts.(*cachemount.Store).Usage() {
			if u.ID == "pv" {
				out = append(out, u)
			}
		}
		return out
	}
	type result struct {
		res *Result
		err error
	}
	results := make(chan result, 2)
	for _, who := range []string{"a", "b"} {
		go func() {
			res, _, err := e.build(step(who), nil, func(r *Request) { r.Tags = []string{"pv:" + who} })
			results <- result{res, err}
		}()
	}
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if got := seen(r.res); got != "1\n" {
			t.Errorf("a step beside another on the private id counted %q, want 1: its own instance", got)
		}
	}
	if b, err := os.ReadFile(filepath.Join(cacheDir(root, "meet"), "started")); err != nil || string(b) != "a\nb\n" && string(b) != "b\na\n" {
		t.Fatalf("the steps' meeting log is %q (%v): they did not run at once", b, err)
	}
	if got := instances(); len(got) != 2 || got[0].Size != 2 || got[1].Size != 2 {
		t.Fatalf("the store lists %+v for pv, want two instances of 2 bytes", got)
	}
	// A later step reuses an instance: its count goes on.
	res, _ := e.mustBuild(step("c"), nil)
	if got := seen(res); got != "2\n" {
		t.Errorf("a later step on the private id counted %q, want 2: a kept instance", got)
	}
	// A restart: a new store over the same directory.
	e.withCacheMounts(root)
	if got := instances(); len(got) != 2 {
		t.Fatalf("after a restart the store lists %+v for pv, want two instances", got)
	}
	res, _ = e.mustBuild(step("d"), nil)
	if got := seen(res); got != "3\n" {
		t.Errorf("after a restart a step on the private id counted %q, want 3: the last used instance", got)
	}
	removed := e.b.CacheMounts.(*cachemount.Store).Prune(cachemount.PruneOptions{IDs: []string{"pv"}})
	if len(removed) != 2 || len(instances()) != 0 {
		t.Errorf("Prune removed %+v and left %+v, want both instances removed", removed, instances())
	}
	res, _ = e.mustBuild(step("e"), nil)
	if got := seen(res); got != "1\n" {
		t.Errorf("after the prune a step on the private id counted %q, want 1", got)
	}
}

// Mounts of one cache id in a step are one directory whatever their
// sharing, as in BuildKit: two locked ones do not wait for each other,
// two private ones see each other's writes.
func TestCacheMountTwiceInAStep(t *testing.T) {
	e := newRuncEnv(t)
	e.withCacheMounts(filepath.Join(t.TempDir(), "cachemounts"))
	df := `FROM busybox
RUN --mount=type=cache,id=lk,target=/a,sharing=locked --mount=type=cache,id=lk,target=/b,sharing=locked sh -c 'echo l > /a/f; cat /b/f > /locked'
RUN --mount=type=cache,id=pv,target=/a,sharing=private --mount=type=cache,id=pv,target=/b,sharing=private sh -c 'echo p > /a/f; cat /b/f > /private'
`
	done := make(chan string, 1)
	go func() {
		res, _, err := e.build(df, nil)
		if err != nil {
			done <- "error: " + err.Error()
			return
		}
		files := e.files(e.image(res.ImageID))
		done <- files["locked"] + files["private"]
	}()
	select {
	case got := <-done:
		if want := "-rw-r--r-- 0:0 l\n-rw-r--r-- 0:0 p\n"; got != want {
			t.Errorf("/locked and /private = %q, want %q", got, want)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("a step mounting one locked cache id twice waits for itself")
	}
}

// A cache mount's mode, uid or gid make it another cache than its id
// without them (or with others), as in BuildKit, where they are part of
// the cache's key.
func TestCacheMountOwnerIsPartOfTheCache(t *testing.T) {
	e := newRuncEnv(t)
	e.withCacheMounts(filepath.Join(t.TempDir(), "cachemounts"))
	df := `FROM busybox
RUN --mount=type=cache,id=mo,target=/m echo plain > /m/f
RUN --mount=type=cache,id=mo,target=/m,uid=1000 sh -c 'ls /m > /owned; echo owned > /m/g'
RUN --mount=type=cache,id=mo,target=/m,uid=1000 ls /m > /owned2
RUN --mount=type=cache,id=mo,target=/m ls /m > /plain
`
	res, _ := e.mustBuild(df, nil)
	files := e.files(e.image(res.ImageID))
	for p, want := range map[string]string{
		"owned":  "-rw-r--r-- 0:0 ",
		"owned2": "-rw-r--r-- 0:0 g\n",
		"plain":  "-rw-r--r-- 0:0 f\n",
	} {
		if got := files[p]; got != want {
			t.Errorf("/%s = %q, want %q", p, got, want)
		}
	}
}

// A cache mount's from= and source= fill it when it is created, owners
// and modes kept, the source directory's for the mount too, as BuildKit's
// snapshot of the stage has them; later steps see what earlier ones left.
func TestCacheMountSeededFromAStage(t *testing.T) {
	e := newRuncEnv(t)
	e.withCacheMounts(filepath.Join(t.TempDir(), "cachemounts"))
	df := `FROM busybox AS src
RUN mkdir /seed && echo seeded > /seed/f && chown 5:6 /seed /seed/f && chmod 0700 /seed && chmod 0640 /seed/f
FROM busybox
RUN --mount=type=cache,from=src,source=/seed,target=/c sh -c 'stat -c "%a %u:%g" /c /c/f > /owners'
RUN --mount=type=cache,from=src,source=/seed,target=/c sh -c 'cat /c/f > /got; echo more >> /c/f'
RUN --mount=type=cache,from=src,source=/seed,target=/c cat /c/f > /got2
RUN --mount=type=cache,target=/c sh -c 'ls /c > /plain'
`
	res, _ := e.mustBuild(df, nil)
	files := e.files(e.image(res.ImageID))
	for p, want := range map[string]string{
		"owners": "-rw-r--r-- 0:0 700 5:6\n640 5:6\n",
		"got":    "-rw-r--r-- 0:0 seeded\n",
		"got2":   "-rw-r--r-- 0:0 seeded\nmore\n",
		"plain":  "-rw-r--r-- 0:0 ",
	} {
		if got := files[p]; got != want {
			t.Errorf("/%s = %q, want %q", p, got, want)
		}
	}
}

func TestTmpfsMount(t *testing.T) {
	e := newRuncEnv(t)
	res, _ := e.mustBuild("FROM busybox\nRUN --mount=type=tmpfs,target=/scratch/t,size=1m sh -c 'grep \" /scratch/t \" /proc/mounts > /m; echo x > /scratch/t/f'\n", nil)
	img := e.image(res.ImageID)
	m := e.files(img)["m"]
	if !strings.Contains(m, " tmpfs ") || !strings.Contains(m, "size=1024k") {
		t.Errorf("/proc/mounts in the step: %q, want a 1 MiB tmpfs at /scratch/t", m)
	}
	if got := strings.Join(e.layerNames(img), " "); got != "m" {
		t.Errorf("the step's layer holds %q, want only m", got)
	}
	// ro, as BuildKit mounts it.
	res, _ = e.mustBuild("FROM busybox\nRUN --mount=type=tmpfs,target=/t,ro sh -c 'touch /t/x 2>/dev/null && echo rw > /ro || echo ro > /ro'\n", nil)
	if got := e.files(e.image(res.ImageID))["ro"]; got != "-rw-r--r-- 0:0 ro\n" {
		t.Errorf("a readonly tmpfs: /ro = %q, want ro", got)
	}
}

// A mount the step cannot have fails the build, naming it, after a cache
// mount of the step was acquired (and is given back): the builder goes on.
func TestBindMountMissingSourceFails(t *testing.T) {
	e := newRuncEnv(t)
	e.withCacheMounts(filepath.Join(t.TempDir(), "cachemounts"))
	df := "FROM busybox AS src\nFROM busybox\nRUN --mount=type=cache,id=c,target=/c,sharing=locked --mount=type=bind,from=src,source=/nope,target=/n true\n"
	for range 2 {
		_, _, err := e.build(df, nil)
		if err == nil || !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "/nope") {
			t.Fatalf("build error = %v, want NOT_FOUND naming /nope", err)
		}
	}
}

func TestBindMounts(t *testing.T) {
	e := newRuncEnv(t)
	c := e.context([]ctxFile{{path: "sub", dir: true, mode: 0o755}, {path: "sub/a", body: "from the context\n"}, {path: "top", body: "t\n"}})
	// The stages run at once but for the mounts: the second waits for src
	// (which takes its time) because its RUN mounts from it.
	df := `FROM busybox AS src
RUN sleep 1 && mkdir /out && echo from the stage > /out/f
FROM busybox
RUN --mount=type=bind,from=src,source=/out,target=/in,rw sh -c 'cat /in/f > /got; echo w > /in/new; echo w > /in/f'
RUN --mount=type=bind,from=src,source=/out,target=/in sh -c 'cat /in/f > /again; ls /in > /list; touch /in/x 2>/dev/null || echo refused > /ro'
RUN --mount=target=/ctx cat /ctx/sub/a /ctx/top > /fromctx
RUN --mount=source=sub/a,target=/etc/a.txt cat /etc/a.txt > /fromfile
`
	res, _ := e.mustBuild(df, c)
	img := e.image(res.ImageID)
	files := e.files(img)
	for p, want := range map[string]string{
		"got":      "-rw-r--r-- 0:0 from the stage\n",
		"again":    "-rw-r--r-- 0:0 from the stage\n",
		"list":     "-rw-r--r-- 0:0 f\n",
		"ro":       "-rw-r--r-- 0:0 refused\n",
		"fromctx":  "-rw-r--r-- 0:0 from the context\nt\n",
		"fromfile": "-rw-r--r-- 0:0 from the context\n",
	} {
		if got := files[p]; got != want {
			t.Errorf("/%s = %q, want %q", p, got, want)
		}
	}
	for _, p := range []string{"in", "ctx", "etc/a.txt"} {
		if _, ok := files[p]; ok {
			t.Errorf("the mount point /%s is in the image", p)
		}
	}
	if got := strings.Join(e.layerNames(img), " "); got != "fromfile" {
		t.Errorf("the last step's layer holds %q, want only fromfile (no copied-up /etc)", got)
	}

	// A bind mount of the context is keyed on its files: a change runs the
	// step again.
	c2 := e.context([]ctxFile{{path: "sub", dir: true, mode: 0o755}, {path: "sub/a", body: "changed\n"}, {path: "top", body: "t\n"}})
	res, _ = e.mustBuild(df, c2)
	if got := e.files(e.image(res.ImageID))["fromfile"]; got != "-rw-r--r-- 0:0 changed\n" {
		t.Errorf("after the context changed, /fromfile = %q", got)
	}
}

func TestMountOptionsInTheCacheKey(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	e.withCacheMounts(t.TempDir())
	build := func(mount string) int {
		_, rec := e.mustBuild("FROM busybox\nRUN --mount="+mount+" touch /x\n", nil)
		return rec.cached()
	}
	build("type=cache,target=/a")
	if n := build("type=cache,target=/a"); n != 1 {
		t.Errorf("the same mount: %d steps cached, want 1", n)
	}
	for _, m := range []string{"type=cache,target=/b", "type=cache,target=/a,id=other", "type=cache,target=/a,sharing=locked",
		"type=cache,target=/a,uid=1", "type=tmpfs,target=/a", "type=tmpfs,target=/a,size=1m"} {
		if n := build(m); n != 0 {
			t.Errorf("--mount=%s: %d steps cached, want 0 (the options are in the key)", m, n)
		}
	}
}

func TestBadMountOptions(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	e.withCacheMounts(t.TempDir())
	for mount, want := range map[string]string{
		"type=ssh,source=x":                "RUN --mount=type=ssh does not support source",
		"type=cache,target=/x,sharing=all": `unsupported sharing value "all"`,
		"type=cache,id=x":                  "target is required",
		"type=tmpfs,target=/t,uid=1":       `uid not allowed for "tmpfs" type mounts`,
		"type=tmpfs,target=/t,size=lots":   "invalid value for size: lots",
		"type=cache,target=/c,bogus=1":     "unexpected key 'bogus'",
		"type=cache,target=/":              "cannot mount over the root",
		"type=tmpfs,target=/etc/passwd/x":  "/etc/passwd is not a directory",
		"type=cache,target=/etc/passwd":    "a directory cannot be mounted on a file",
		"type=bind,target=/c,source=nope":  "nope",
		"type=bind,target=/c,from=nosuch":  "nosuch",
	} {
		_, _, err := e.build("FROM busybox AS base\nRUN --mount="+mount+" true\n", nil)
		if err == nil || !strings.Contains(err.Error(), "Dockerfile:2: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("--mount=%s: err = %v, want one naming line 2 and %q", mount, err, want)
			continue
		}
		if !strings.Contains(mount, "source=nope") && !strings.Contains(mount, "from=nosuch") && !errdefs.IsInvalidArgument(err) {
			t.Errorf("--mount=%s: err = %v, want INVALID_ARGUMENT", mount, err)
		}
	}
}

// A step that swaps its mount point's parent for a symlink to a host
// directory must not make the builder remove what the host holds there
// when it takes the mount point out of the layer.
func TestMountStubRemovalStaysInTheLayer(t *testing.T) {
	e := newRuncEnv(t)
	host := t.TempDir()
	if err := os.MkdirAll(filepath.Join(host, "y", "victim"), 0o755); err != nil {
		t.Fatal(err)
	}
	df := "FROM busybox\nRUN --mount=type=tmpfs,target=/x/y/victim sh -c 'mv /x /moved && ln -s " + host + " /x'\n"
	if _, _, err := e.build(df, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"y/victim", "y"} {
		if _, err := os.Stat(filepath.Join(host, p)); err != nil {
			t.Errorf("the host directory the step's symlink led to was removed: %v", err)
		}
	}
}
