package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/exec"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer"
	"github.com/strata-build/strata/services/builder/internal/snapshot"
)

type env struct {
	t       *testing.T
	b       *Builder
	blobs   *memBlobs
	index   *memIndex
	images  *image.Store
	store   *buildctx.Store
	snaps   *snapshot.Store
	sandbox *fakeSandbox
}

// fakeSandbox stands in for runc in the package's fast tests: it runs
// nothing, and can write a file into the root to stand for a command's
// effect. The RUN steps themselves are tested against real runc in the
// integration tests.
type fakeSandbox struct {
	runs []exec.Process
	code int
}

func (f *fakeSandbox) Admit(builderv1.NetworkMode, *builderv1.RunResources) error { return nil }

func (f *fakeSandbox) Run(_ context.Context, p exec.Process) (int, error) {
	f.runs = append(f.runs, p)
	if len(p.Args) > 0 && strings.HasPrefix(p.Args[len(p.Args)-1], "touch ") {
		name := strings.TrimPrefix(p.Args[len(p.Args)-1], "touch ")
		if err := os.WriteFile(filepath.Join(p.Root, name), []byte("ran\n"), 0o644); err != nil {
			return 1, err
		}
	}
	if len(p.Args) > 0 && strings.HasPrefix(p.Args[len(p.Args)-1], "test -e ") {
		if _, err := os.Lstat(filepath.Join(p.Root, strings.TrimPrefix(p.Args[len(p.Args)-1], "test -e "))); err != nil {
			return 1, nil
		}
	}
	if f.code != 0 {
		io.WriteString(p.Stderr, "something failed\n")
	}
	return f.code, nil
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("overlay mounts need root")
	}
	dir := t.TempDir()
	snaps, err := snapshot.New(filepath.Join(dir, "snapshots"), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store, err := buildctx.NewStore(filepath.Join(dir, "context"), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, blobs: newMemBlobs(), index: newMemIndex(), store: store, snaps: snaps, sandbox: &fakeSandbox{}}
	e.images = image.NewStore(e.blobs, e.index)
	e.b = &Builder{
		Images: e.images, Snapshots: exec.SnapshotStore(snaps, e.blobs), Sandbox: e.sandbox,
		Layers: exec.LayerWriter(e.blobs), Contexts: store,
	}
	return e
}

type tarFile struct {
	name, body, link string
	mode             int64
	dir              bool
	uid              int // and gid
}

// importBase records a one-layer base image made of files, as `strata
// import` would, tagged ref.
func (e *env) importBase(ref string, files []tarFile) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: time.Unix(0, 0)}
		switch {
		case f.dir:
			h.Typeflag = tar.TypeDir
		case f.link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.link
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			e.t.Fatal(err)
		}
		io.WriteString(tw, f.body)
	}
	tw.Close()
	w, _ := e.blobs.Writer(context.Background(), layer.MediaTypeGzip)
	d, err := layer.Write(context.Background(), w, &buf)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := &image.Config{
		Architecture: "amd64", OS: "linux", Created: time.Unix(1, 0).UTC(),
		RootFS:  image.RootFS{Type: "layers", DiffIDs: []digest.Digest{d.DiffID}},
		History: []image.History{{Created: time.Unix(1, 0).UTC(), Comment: "Imported from -"}},
	}
	if _, err := e.images.Put(context.Background(), image.New{Config: cfg, Layers: []image.Layer{{Blob: d.OCI(), DiffID: d.DiffID, DiffSize: d.DiffSize}}, Tags: []string{ref}}); err != nil {
		e.t.Fatal(err)
	}
}

func busyboxLike() []tarFile {
	return []tarFile{
		{name: "bin/", dir: true, mode: 0o755},
		{name: "bin/sh", body: "#!shell", mode: 0o755},
		{name: "etc/", dir: true, mode: 0o755},
		{name: "etc/passwd", body: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1000:1000::/:/bin/sh\n", mode: 0o644},
		{name: "etc/group", body: "root:x:0:\napp:x:1000:\n", mode: 0o644},
		{name: "tmp/", dir: true, mode: 0o1777},
	}
}

// ctxFile is one file of a test build context.
type ctxFile struct {
	path, body, link string
	mode             fs.FileMode
	dir              bool
	uid              uint32
	mtime            int64
}

// context puts the files' contents in the store and returns the context.
func (e *env) context(files []ctxFile) *buildctx.Context {
	var list []*builderv1.FileEntry
	for _, f := range files {
		fe := &builderv1.FileEntry{Path: f.path, Uid: f.uid, Gid: f.uid, MtimeUnixNano: f.mtime}
		switch {
		case f.dir:
			fe.Mode = buildctx.UnixMode(fs.ModeDir | f.mode)
		case f.link != "":
			fe.Mode, fe.LinkTarget = buildctx.UnixMode(fs.ModeSymlink|0o777), f.link
		default:
			if f.mode == 0 {
				f.mode = 0o644
			}
			d := digest.FromString(f.body)
			fe.Mode, fe.Size, fe.Digest = buildctx.UnixMode(f.mode), int64(len(f.body)), string(d)
			w, err := e.store.NewWriter(d, int64(len(f.body)))
			if err != nil {
				e.t.Fatal(err)
			}
			io.WriteString(w, f.body)
			if err := w.Commit(); err != nil {
				e.t.Fatal(err)
			}
		}
		list = append(list, fe)
	}
	c, err := buildctx.New(list)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

type recorder struct {
	events []*builderv1.BuildEvent
}

func (r *recorder) add(ev *builderv1.BuildEvent) { r.events = append(r.events, ev) }

func (r *recorder) cached() int {
	n := 0
	for _, ev := range r.events {
		if ev.GetCached() != nil {
			n++
		}
	}
	return n
}

func (e *env) build(dockerfile string, c *buildctx.Context, mod ...func(*Request)) (*Result, *recorder, error) {
	if c == nil {
		c = e.context(nil)
	}
	req := &Request{Dockerfile: []byte(dockerfile), Context: c, Tags: []string{"out:latest"}}
	for _, m := range mod {
		m(req)
	}
	rec := &recorder{}
	res, err := e.b.Build(context.Background(), req, rec.add)
	return res, rec, err
}

func (e *env) mustBuild(dockerfile string, c *buildctx.Context, mod ...func(*Request)) (*Result, *recorder) {
	e.t.Helper()
	res, rec, err := e.build(dockerfile, c, mod...)
	if err != nil {
		e.t.Fatalf("build: %v", err)
	}
	return res, rec
}

func (e *env) image(id string) *image.Image {
	e.t.Helper()
	img, err := e.images.Get(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return img
}

func history(img *image.Image) []string {
	var out []string
	for _, h := range img.Config.History {
		s := h.CreatedBy
		if h.EmptyLayer {
			s += " (empty)"
		}
		out = append(out, s)
	}
	return out
}

// files lists the image's layers merged, as "path mode uid:gid content".
func (e *env) files(img *image.Image) map[string]string {
	e.t.Helper()
	out := map[string]string{}
	for _, l := range img.Layers() {
		rc, err := e.blobs.Open(context.Background(), l.Blob.Digest)
		if err != nil {
			e.t.Fatal(err)
		}
		gz, err := gzip.NewReader(rc)
		if err != nil {
			e.t.Fatal(err)
		}
		tr := tar.NewReader(gz)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				e.t.Fatal(err)
			}
			b, _ := io.ReadAll(tr)
			name := strings.TrimSuffix(h.Name, "/")
			if base := filepath.Base(name); strings.HasPrefix(base, ".wh.") {
				delete(out, filepath.Join(filepath.Dir(name), strings.TrimPrefix(base, ".wh.")))
				continue
			}
			v := fs.FileMode(h.Mode).String() + " " + itoa(h.Uid) + ":" + itoa(h.Gid)
			switch h.Typeflag {
			case tar.TypeSymlink:
				v += " -> " + h.Linkname
			case tar.TypeDir:
				v = "d" + v[1:]
			default:
				v += " " + string(b)
			}
			out[name] = v
		}
	}
	return out
}

func itoa(i int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(i)) }

func fmtInt(i int) string {
	if i == 0 {
		return "0"
	}
	s := ""
	neg := i < 0
	if neg {
		i = -i
	}
	for i > 0 {
		s = string(rune('0'+i%10)) + s
		i /= 10
	}
	if neg {
		s = "-" + s
	}
	return s
}

const seed = `FROM busybox:latest
LABEL maintainer="NGINX Docker Maintainers <docker-maint@nginx.com>"
ENV NGINX_VERSION=1.17.4
EXPOSE 80
STOPSIGNAL SIGTERM
CMD ["nginx", "-g", "daemon off;"]
`

func TestMetadataStepsRecordDockerHistoryAndCache(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	res, rec := e.mustBuild(seed, nil)
	img := e.image(res.ImageID)
	want := []string{
		"",
		`/bin/sh -c #(nop)  LABEL maintainer=NGINX Docker Maintainers <docker-maint@nginx.com> (empty)`,
		`/bin/sh -c #(nop)  ENV NGINX_VERSION=1.17.4 (empty)`,
		`/bin/sh -c #(nop)  EXPOSE 80 (empty)`,
		`/bin/sh -c #(nop)  STOPSIGNAL SIGTERM (empty)`,
		`/bin/sh -c #(nop)  CMD ["nginx" "-g" "daemon off;"] (empty)`,
	}
	if diff := cmp.Diff(want, history(img)); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	cfg := img.Config
	if diff := cmp.Diff([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NGINX_VERSION=1.17.4"}, cfg.Config.Env); diff != "" {
		t.Errorf("Env (-want +got):\n%s", diff)
	}
	if got := []string(cfg.ContainerConfig.Cmd); !cmp.Equal(got, []string{"/bin/sh", "-c", "#(nop) ", `CMD ["nginx" "-g" "daemon off;"]`}) {
		t.Errorf("ContainerConfig.Cmd = %q", got)
	}
	parent := img.Record.GetParent()
	if parent == "" || cfg.Config.Image != parent {
		t.Errorf("Parent = %q, Config.Image = %q; want the previous step's image in both", parent, cfg.Config.Image)
	}
	if len(cfg.RootFS.DiffIDs) != 1 {
		t.Errorf("rootfs has %d layers, want the base's 1", len(cfg.RootFS.DiffIDs))
	}
	if rec.cached() != 0 {
		t.Errorf("first build used the cache %d times", rec.cached())
	}

	puts, lookups := e.blobs.puts, e.index.lookups
	res2, rec2 := e.mustBuild(seed, nil)
	if res2.ImageID != res.ImageID {
		t.Errorf("rebuild made %s, want the cached %s", res2.ImageID, res.ImageID)
	}
	if rec2.cached() != 5 {
		t.Errorf("rebuild: %d steps cached, want all 5", rec2.cached())
	}
	if e.blobs.puts != puts || e.index.lookups != lookups+1 {
		t.Errorf("rebuild stored %d blobs and made %d cache lookups; want none and one", e.blobs.puts-puts, e.index.lookups-lookups)
	}
	_, rec3 := e.mustBuild(seed, nil, func(r *Request) { r.NoCache = true })
	if rec3.cached() != 0 {
		t.Errorf("--no-cache build used the cache %d times", rec3.cached())
	}
}

func TestCopyLandsFilesAsDockerDoes(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	c := e.context([]ctxFile{
		{path: "Dockerfile", body: "x"},
		{path: "app", dir: true, mode: 0o755},
		{path: "app/run.sh", body: "echo hi\n", mode: 0o755, uid: 1234},
		{path: "app/conf", dir: true, mode: 0o700},
		{path: "app/conf/a.txt", body: "a\n", mode: 0o600},
		{path: "app/link", link: "run.sh"},
		{path: "one.txt", body: "one\n"},
	})
	res, _ := e.mustBuild("FROM busybox\nCOPY app /srv/\nCOPY --chown=app:app one.txt /srv/one\nWORKDIR /srv\nCOPY one.txt .\n", c)
	img := e.image(res.ImageID)
	files := e.files(img)
	for path, want := range map[string]string{
		"srv/run.sh":     "-rwxr-xr-x 0:0 echo hi\n",
		"srv/conf":       "drwx------ 0:0",
		"srv/conf/a.txt": "-rw------- 0:0 a\n",
		"srv/link":       "-rwxrwxrwx 0:0 -> run.sh",
		"srv/one":        "-rw-r--r-- 1000:1000 one\n",
		"srv/one.txt":    "-rw-r--r-- 0:0 one\n",
		"etc/passwd":     files["etc/passwd"],
	} {
		if got := files[path]; got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	h := history(img)
	if !strings.HasPrefix(h[1], "/bin/sh -c #(nop) COPY dir:") || !strings.HasSuffix(h[1], " in /srv/ ") {
		t.Errorf("COPY history = %q, want Docker's \"/bin/sh -c #(nop) COPY dir:<hash> in /srv/ \"", h[1])
	}
	if !strings.HasPrefix(h[2], "/bin/sh -c #(nop) COPY --chown=app:appfile:") {
		t.Errorf("COPY --chown history = %q", h[2])
	}
	if h[3] != "/bin/sh -c #(nop) WORKDIR /srv (empty)" {
		t.Errorf("WORKDIR of an existing dir = %q, want an empty layer", h[3])
	}
}

// ADD of a file that is no archive, to a path without a trailing slash,
// writes the file at that path, as COPY does; it once made a directory
// there, holding the file.
func TestAddOfAPlainFileWritesItAtTheDestination(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	c := e.context([]ctxFile{{path: "Dockerfile", body: "x"}, {path: "test", body: "#!/bin/sh\n", mode: 0o755}})
	res, _ := e.mustBuild("FROM busybox\nADD test /test\nADD test /new/dir/test\n", c)
	files := e.files(e.image(res.ImageID))
	for path, want := range map[string]string{
		"test":         "-rwxr-xr-x 0:0 #!/bin/sh\n",
		"new/dir/test": "-rwxr-xr-x 0:0 #!/bin/sh\n",
	} {
		if got := files[path]; got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
}

// VOLUME over a file fails as Docker's does when it creates the step's
// container ("file exists"); over a directory, or a new path, it builds.
func TestVolumeOverAFileFails(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	c := e.context([]ctxFile{{path: "Dockerfile", body: "x"}, {path: "f", body: "f\n"}})
	e.mustBuild("FROM busybox\nCOPY f /dir/f\nVOLUME /dir /new\n", c)
	e.mustBuild("FROM scratch\nVOLUME /a\nCOPY f /f\nVOLUME /b\n", c)
	_, _, err := e.build("FROM busybox\nCOPY f /foo\nVOLUME /foo\n", c)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "file exists") {
		t.Errorf("VOLUME over a file: build = %v, want INVALID_ARGUMENT naming \"file exists\"", err)
	}
}

func TestCacheKeysFollowContentNotMtimes(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	df := "FROM busybox\nARG V=1\nENV A=$V\nCOPY f /f\nRUN touch /ran\nLABEL x=y\n"
	files := func(body string, mtime int64) *buildctx.Context {
		return e.context([]ctxFile{{path: "f", body: body, mtime: mtime}})
	}
	_, rec := e.mustBuild(df, files("one", 1))
	if rec.cached() != 0 {
		t.Fatal("cold build hit the cache")
	}
	cases := []struct {
		name       string
		ctx        *buildctx.Context
		args       map[string]string
		wantCached int
	}{
		{"nothing changed", files("one", 1), nil, 5},
		{"only the mtime changed", files("one", 99), nil, 5},
		{"the file changed", files("two", 1), nil, 2},
		{"the build arg changed", files("one", 1), map[string]string{"V": "2"}, 1},
	}
	for _, tc := range cases {
		_, rec := e.mustBuild(df, tc.ctx, func(r *Request) { r.BuildArgs = tc.args })
		if rec.cached() != tc.wantCached {
			t.Errorf("%s: %d steps cached, want %d", tc.name, rec.cached(), tc.wantCached)
		}
	}
}

func TestFailedBuildRecordsNoImage(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	e.sandbox.code = 3
	before := len(e.index.images)
	_, _, err := e.build("FROM busybox\nENV A=1\nRUN exit 3\n", nil)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "returned a non-zero code: 3") ||
		!strings.Contains(err.Error(), "Dockerfile:3") || !strings.Contains(err.Error(), "something failed") {
		t.Fatalf("err = %v; want INVALID_ARGUMENT naming line 3, the exit code and the output", err)
	}
	if len(e.index.images) != before || len(e.index.records) != 0 {
		t.Errorf("a failed build recorded %d images and %d cache records", len(e.index.images)-before, len(e.index.records))
	}
}

func TestBadCopySourcesAreRefused(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	c := e.context([]ctxFile{{path: "f", body: "x"}, {path: "out", link: "/etc/shadow"}, {path: "up", link: "../../../../etc"}})
	for _, tc := range []struct{ df, want string }{
		{"FROM busybox\nCOPY ../x /x\n", "outside the build context"},
		{"FROM busybox\nCOPY nope /x\n", "not found"},
		{"FROM busybox\nCOPY out /x\n", "not found"},
		{"FROM busybox\nCOPY up/passwd /x\n", "not found"},
		{"FROM busybox\nCOPY --from=nostage /a /b\n", "nostage"},
		{"FROM busybox\nCOPY f f /x\n", "must be a directory"},
		{"FROM nope:1\n", "nope:1"},
	} {
		_, _, err := e.build(tc.df, c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want one mentioning %q", tc.df, err, tc.want)
		}
	}
}

func TestCopyIntoSymlinkStaysInRoot(t *testing.T) {
	e := newEnv(t)
	base := append(busyboxLike(), tarFile{name: "app", link: "/"})
	e.importBase("busybox:latest", base)
	c := e.context([]ctxFile{{path: "f", body: "x"}})
	res, _ := e.mustBuild("FROM busybox\nCOPY f /app/x\n", c)
	files := e.files(e.image(res.ImageID))
	if files["x"] != "-rw-r--r-- 0:0 x" {
		t.Errorf("COPY through /app -> / wrote %q at /x; files: %v", files["x"], keys(files))
	}
}

func TestMultiStageTargetSkipsUnneededStages(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	df := "FROM busybox AS a\nRUN touch /a\nFROM busybox AS unused\nRUN touch /unused\nFROM scratch AS final\nCOPY --from=a /a /copied\n"
	res, _ := e.mustBuild(df, nil, func(r *Request) { r.Target = "final" })
	if len(e.sandbox.runs) != 1 {
		t.Errorf("%d RUN steps ran, want 1 (stage unused is not needed)", len(e.sandbox.runs))
	}
	files := e.files(e.image(res.ImageID))
	if diff := cmp.Diff([]string{"copied"}, keys(files)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
