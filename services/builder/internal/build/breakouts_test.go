package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/errdefs"
	planexec "github.com/strata-build/strata/services/builder/internal/exec"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer"
	"github.com/strata-build/strata/services/builder/internal/layer/layertest"
	"github.com/strata-build/strata/services/builder/internal/snapshot"
)

// TestAddBreakouts runs the breakout table through ADD of a local archive,
// plain, gzip and xz: the archive is extracted at / of an image holding the
// case's lower entries, then a COPY writes through the symlink the archive
// planted, if any. The host directory must be untouched; the build must
// fail as invalid input, or the image (unpacked afresh from its blobs)
// hold what the case says.
func TestAddBreakouts(t *testing.T) {
	compressions := []struct {
		ext      string
		compress func(t *testing.T, b []byte) []byte
	}{
		{".tar", func(_ *testing.T, b []byte) []byte { return b }},
		{".tar.gz", gzipBytes},
		{".tar.xz", xzBytes},
	}
	for _, comp := range compressions {
		for _, c := range layertest.Cases() {
			t.Run(strings.TrimPrefix(comp.ext, ".")+"/"+c.Name, func(t *testing.T) {
				e := newEnv(t)
				h := layertest.NewHost(t, filepath.Join(t.TempDir(), "host"))
				c := c.Expand(h.Dir)
				df := "FROM " + e.caseBase(c) + "\nADD evil" + comp.ext + " /\n"
				files := []ctxFile{{path: "evil" + comp.ext, body: string(comp.compress(t, layertest.Tar(c.Archive)))}}
				if c.Via != "" {
					df += "COPY probe /" + c.Via + "/\n"
					files = append(files, ctxFile{path: "probe", body: "probe"})
				}
				res, _, err := e.build(df, e.context(files))
				h.Check(t)
				e.verifyOutcome(c, layertest.Add, res, err)
			})
		}
	}
}

// TestCopyBreakouts runs the breakout table through COPY from a build
// context: each entry of a case's archive becomes a COPY step (a symlink by
// copying a context directory that holds it, so that it stays a symlink; a
// file or directory by copying it to the entry's name, through whatever
// earlier steps planted), onto an image holding the case's lower entries.
// Hard links, and names a context cannot hold, have no COPY form: those
// cases are left to the archive paths.
func TestCopyBreakouts(t *testing.T) {
	ran := 0
	for _, c := range layertest.Cases() {
		if why := copySteps(c, nil); why != "" {
			t.Logf("%s: no COPY form (%s)", c.Name, why)
			continue
		}
		ran++
		t.Run(c.Name, func(t *testing.T) {
			e := newEnv(t)
			h := layertest.NewHost(t, filepath.Join(t.TempDir(), "host"))
			c := c.Expand(h.Dir)
			st := &steps{}
			copySteps(c, st)
			// A backtick escapes, so that a name with backslashes is a name.
			df := "# escape=`\nFROM " + e.caseBase(c) + "\n" + st.df.String()
			if c.Via != "" {
				df += "COPY probe /" + c.Via + "/\n"
				st.files = append(st.files, ctxFile{path: "probe", body: "probe"})
			}
			res, _, err := e.build(df, e.context(st.files))
			h.Check(t)
			e.verifyOutcome(c, layertest.Steps, res, err)
		})
	}
	if ran < 25 {
		t.Errorf("only %d cases have a COPY form", ran)
	}
}

// steps is a case's archive as COPY steps: a Dockerfile and its context.
type steps struct {
	df    strings.Builder
	files []ctxFile
}

// copySteps writes c's archive as COPY steps into st (when st is not nil)
// and returns why it has no such form, or "".
func copySteps(c layertest.Case, st *steps) string {
	for i, en := range c.Archive {
		name := path.Clean("/" + en.Name)
		dir, base := path.Split(name)
		src := fmt.Sprintf("s%d", i)
		var dest string
		switch en.Type {
		case tar.TypeLink:
			return "COPY makes no hard links"
		case tar.TypeReg:
			dest = en.Name // as it is: COPY resolves it from WORKDIR /
			if st != nil {
				st.files = append(st.files, ctxFile{path: src, body: en.Body, mode: goMode(en.Mode)})
			}
		case tar.TypeDir, tar.TypeSymlink:
			if base == "" || base == ".." {
				return fmt.Sprintf("a context cannot hold an entry named %q", en.Name)
			}
			dest = dir
			if st != nil {
				f := ctxFile{path: src + "/" + base, dir: en.Type == tar.TypeDir, link: en.Target, mode: goMode(en.Mode)}
				st.files = append(st.files, ctxFile{path: src, dir: true, mode: 0o755}, f)
			}
		}
		if st != nil {
			args, _ := json.Marshal([]string{src, dest})
			fmt.Fprintf(&st.df, "COPY %s\n", args)
		}
	}
	return ""
}

// goMode converts a tar header's mode to Go's.
func goMode(m int64) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// caseBase returns the base image of a case: its lower entries as one
// layer, or scratch.
func (e *env) caseBase(c layertest.Case) string {
	if c.Lower == nil {
		return "scratch"
	}
	e.importLayers("lower:latest", layertest.Tar(c.Lower))
	return "lower:latest"
}

// importLayers records an image made of layer tars (bottom first), tagged
// ref.
func (e *env) importLayers(ref string, tars ...[]byte) {
	e.t.Helper()
	cfg := &image.Config{Architecture: "amd64", OS: "linux", Created: time.Unix(1, 0).UTC(), RootFS: image.RootFS{Type: "layers"}}
	var layers []image.Layer
	for _, b := range tars {
		w, _ := e.blobs.Writer(context.Background(), layer.MediaTypeGzip)
		d, err := layer.Write(context.Background(), w, bytes.NewReader(b))
		if err != nil {
			e.t.Fatal(err)
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, d.DiffID)
		cfg.History = append(cfg.History, image.History{Created: time.Unix(1, 0).UTC(), Comment: "layer"})
		layers = append(layers, image.Layer{Blob: d.OCI(), DiffID: d.DiffID, DiffSize: d.DiffSize})
	}
	if _, err := e.images.Put(context.Background(), image.New{Config: cfg, Layers: layers, Tags: []string{ref}}); err != nil {
		e.t.Fatal(err)
	}
}

// verifyOutcome checks a build of case c in mode m (its result res, or
// its error) against the outcome the case wants.
func (e *env) verifyOutcome(c layertest.Case, m layertest.Mode, res *Result, err error) {
	t := e.t
	t.Helper()
	want := c.Outcome(m)
	if want.Refused {
		if !errdefs.IsInvalidArgument(err) {
			t.Fatalf("build: err = %v, want INVALID_ARGUMENT (%s)", err, want.Why)
		}
		return
	}
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	checks := want.Checks
	if c.Via != "" {
		checks = append(checks, layertest.IsFile(path.Join(c.Lands, "probe"), "probe"))
	}
	for _, err := range e.imageTree(e.image(res.ImageID)).Verify(checks) {
		t.Error(err)
	}
}

// imageTree lists what an image holds: its layers unpacked from their
// blobs by a snapshot store of their own (not the build's, which kept the
// steps' directories), seen through overlay.
func (e *env) imageTree(img *image.Image) layertest.Tree {
	t := e.t
	t.Helper()
	snaps, err := snapshot.New(filepath.Join(t.TempDir(), "snapshots"), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := planexec.SnapshotStore(snaps, e.blobs).Mount(context.Background(), img.Layers(), planexec.MountOptions{})
	if err != nil {
		t.Fatalf("mounting the image: %v", err)
	}
	defer m.Release()
	tree, err := layertest.ReadTree(m.Root())
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func gzipBytes(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// xzBytes compresses with Debian's xz, as a user's archive would be.
func xzBytes(t *testing.T, b []byte) []byte {
	cmd := exec.Command("xz", "-c", "-T1")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz: %v", err)
	}
	return out
}

// A symlink of the base image that leads where nothing exists yet: COPY
// and WORKDIR through it make the directories it leads to, inside the
// root, as Docker does (they failed with the builder's own mkdir error).
func TestCopyThroughDanglingSymlink(t *testing.T) {
	e := newEnv(t)
	e.importBase("dangling:latest", append(busyboxLike(),
		tarFile{name: "app", link: "/srv/new/dir", mode: 0o777},
		tarFile{name: "up", link: "../../../../opt/deep", mode: 0o777}))
	res, _ := e.mustBuild("FROM dangling\nCOPY f /app/x\nCOPY f /up/y\nWORKDIR /up/w\n", e.context([]ctxFile{{path: "f", body: "f"}}))
	for _, err := range e.imageTree(e.image(res.ImageID)).Verify([]layertest.Check{
		layertest.IsSymlink("app", "/srv/new/dir"), layertest.IsFile("srv/new/dir/x", "f"),
		layertest.IsFile("opt/deep/y", "f"), layertest.IsDir("opt/deep/w"),
	}) {
		t.Error(err)
	}
}

// TestCopyContextSymlinks: a context holding symlinks to absolute host
// paths and out with "..". Symlinks inside a copied directory stay
// symlinks, as they are; a source that is itself a symlink is followed
// inside the context only (out of it there is nothing to copy); a COPY
// into a path under a symlink an earlier COPY planted lands inside the
// root. The host is untouched throughout.
func TestCopyContextSymlinks(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	h := layertest.NewHost(t, filepath.Join(t.TempDir(), "host"))
	up := strings.Repeat("../", 64) + strings.TrimPrefix(h.Dir, "/")
	bctx := e.context([]ctxFile{
		{path: "dir/f", body: "f"},
		{path: "dir/hostlink", link: h.Dir + "/sentinel"},
		{path: "dir/uplink", link: "../../../.."},
		{path: "abs", link: h.Dir + "/secret"},
		{path: "up", link: up + "/secret"},
		{path: "todir", link: h.Dir + "/sentinel"},
		{path: "root", link: "../../.."},
		{path: "inside", link: "dir/f"},
	})
	res, _ := e.mustBuild(`FROM busybox
COPY dir /app/
COPY inside /inside
COPY root /ctx/
COPY inside /app/hostlink/planted
COPY inside /app/uplink/escaped
`, bctx)
	h.Check(t)
	for _, err := range e.imageTree(e.image(res.ImageID)).Verify([]layertest.Check{
		layertest.IsFile("app/f", "f"),
		layertest.IsSymlink("app/hostlink", h.Dir+"/sentinel"),
		layertest.IsSymlink("app/uplink", "../../../.."),
		layertest.IsFile("inside", "f"),
		layertest.IsFile("ctx/dir/f", "f"),
		layertest.IsSymlink("ctx/abs", h.Dir+"/secret"),
		layertest.IsSymlink("ctx/up", up+"/secret"),
		layertest.IsFile(strings.TrimPrefix(h.Dir, "/")+"/sentinel/planted", "f"),
		layertest.IsFile("escaped", "f"),
	}) {
		t.Error(err)
	}

	for _, src := range []string{"abs", "up", "todir", "todir/x"} {
		_, _, err := e.build("FROM busybox\nCOPY "+src+" /x\n", bctx)
		if !errdefs.IsNotFound(err) {
			t.Errorf("COPY %s, a symlink out of the context: err = %v, want NOT_FOUND", src, err)
		}
	}
	h.Check(t)
}
