package build

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer"
	"github.com/strata-build/strata/services/builder/internal/layer/layertest"
	"github.com/strata-build/strata/services/builder/internal/snapshot"
)

// layerListing lists a layer blob's entries, one line each: every field
// of the tar header and the content's digest. It leaves out what differs,
// by design, between a COPY written from the context and one copied into
// a mount: directories' mtimes (the mount's are the time files were
// created in them), and the opaque markers overlay puts on directories it
// creates where nothing was (both mean the same).
func (e *env) layerListing(l image.Layer) []string {
	e.t.Helper()
	rc, err := e.blobs.Open(context.Background(), l.Blob.Digest)
	if err != nil {
		e.t.Fatal(err)
	}
	gz, err := gzip.NewReader(rc)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			e.t.Fatal(err)
		}
		if path.Base(h.Name) == ".wh..wh..opq" {
			continue
		}
		b, _ := io.ReadAll(tr)
		sum := sha256.Sum256(b)
		if h.Typeflag == tar.TypeDir {
			h.ModTime = time.Time{}
		}
		out = append(out, fmt.Sprintf("%+v %s", *h, hex.EncodeToString(sum[:])))
	}
	return out
}

func (e *env) unpacked(l image.Layer, parents []image.Layer) bool {
	var chain digest.Digest
	for _, p := range append(slices.Clone(parents), l) {
		chain = snapshot.ChainID(chain, p.DiffID)
	}
	for _, info := range e.snaps.List() {
		if info.ChainID == chain {
			return true
		}
	}
	return false
}

// checkSnapshot fails unless the unpacked layer l over parents, if the
// snapshot store holds it, has the files its blob unpacks to: names, types,
// modes, owners, mtimes (to the second), link targets and contents. A COPY's layer a later
// step mounts is written there from the context store, not from its blob.
func (e *env) checkSnapshot(l image.Layer, parents []image.Layer) {
	e.t.Helper()
	var chain digest.Digest
	for _, p := range append(slices.Clone(parents), l) {
		chain = snapshot.ChainID(chain, p.DiffID)
	}
	ref, err := e.snaps.Acquire(chain)
	if errdefs.IsNotFound(err) {
		return
	}
	if err != nil {
		e.t.Fatal(err)
	}
	defer ref.Release()
	rc, err := e.blobs.Open(context.Background(), l.Blob.Digest)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rc.Close()
	dir := filepath.Join(e.t.TempDir(), "unpacked")
	if err := os.Mkdir(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if _, err := layer.Unpack(context.Background(), rc, dir); err != nil {
		e.t.Fatal(err)
	}
	// mtimes in whole seconds: a layer.Diff tar keeps no more, and the
	// snapshot of a COPY into a mount (the upper directory itself) has the
	// times of the copy. copier's tests compare a layer's files to the
	// nanosecond.
	if diff := cmp.Diff(layertest.Listing(e.t, dir, time.Second), layertest.Listing(e.t, ref.Dir(), time.Second)); diff != "" {
		e.t.Errorf("snapshot of layer %s (-its blob unpacked +the store's):\n%s", l.DiffID, diff)
	}
}

// A COPY from the context whose files land where nothing is yet makes the
// same layer whether it is written from the context store or copied into a
// mount: same entries, modes, owners, contents and file mtimes, same diff
// size. It creates no directory until a later step mounts the layer, and
// then that step sees its files.
func TestCopyFromContextMakesTheLayerCopyingWould(t *testing.T) {
	base := append(busyboxLike(),
		tarFile{name: "etc/conf.d/", dir: true, mode: 0o750},
		tarFile{name: "etc/conf.d/old", body: "old\n", mode: 0o640},
		tarFile{name: "opt/", dir: true, mode: 0o711},
		tarFile{name: "opt/empty/", dir: true, mode: 0o700},
		tarFile{name: "lnk", link: "/opt"},
	)
	files := []ctxFile{
		{path: "Dockerfile", body: "x", mtime: 1_600_000_000_000_000_000},
		{path: "app", dir: true, mode: 0o755, mtime: 1_600_000_001_000_000_000},
		{path: "app/run.sh", body: "echo hi\n", mode: 0o755 | fs.ModeSetuid, uid: 1234, mtime: 1_600_000_002_500_000_000},
		{path: "app/conf", dir: true, mode: 0o700, mtime: 1_600_000_003_000_000_000},
		{path: "app/conf/a.txt", body: "a\n", mode: 0o600, mtime: 1_600_000_004_000_000_000},
		{path: "app/conf/deep", dir: true, mode: 0o755, mtime: 1_600_000_005_000_000_000},
		{path: "app/conf/deep/b", body: strings.Repeat("b", 3<<20), mtime: 1_600_000_006_000_000_000},
		{path: "app/link", link: "run.sh", mtime: 1_600_000_007_000_000_000},
		{path: "app/empty", dir: true, mode: 0o755, mtime: 1_600_000_008_000_000_000},
		{path: "one.txt", body: "one\n", mtime: 1_600_000_009_000_000_000},
	}
	cases := []struct {
		name, df string
		// unpacked says which layers (by index among the image's layers)
		// are unpacked in the snapshot store after the build, when COPY
		// layers are written from the context where they can be: those
		// copied into a mount, and those a later step mounted.
		unpacked []bool
	}{
		{"whole context to a new directory", "FROM busybox\nCOPY . /app\n", []bool{true, false}},
		{"directory under new parents, --chmod", "FROM busybox\nCOPY --chmod=0750 app /usr/local/share/app\n", []bool{true, false}},
		{"file into an existing directory", "FROM busybox\nCOPY one.txt /etc/conf.d/\n", []bool{true, false}},
		{"into an empty existing directory, --chown", "FROM busybox\nCOPY --chown=app:app app /opt/empty/\n", []bool{true, false}},
		{"workdir then copies", "FROM busybox\nWORKDIR /w\nCOPY app/conf .\nCOPY one.txt ./\n", []bool{true, true, true, false}},
		{"then a WORKDIR it holds", "FROM busybox\nCOPY . /app\nWORKDIR /app/app/conf\nCMD [\"sh\"]\n", []bool{true, false}},
		{"then a WORKDIR it does not hold", "FROM busybox\nCOPY . /app\nWORKDIR /srv\n", []bool{true, true, true}},
		{"file to a new name", "FROM busybox\nCOPY one.txt /srv/one\n", []bool{true, false}},
		{"over an existing file", "FROM busybox\nCOPY one.txt /etc/passwd\n", []bool{true, true}},
		{"into a directory that has the name", "FROM busybox\nCOPY app /etc/\n", []bool{true, false}},
		{"through a symlink", "FROM busybox\nCOPY one.txt /lnk/\n", []bool{true, true}},
		{"two sources side by side", "FROM busybox\nCOPY app/conf one.txt /m/\n", []bool{true, false}},
		{"sources that meet", "FROM busybox\nCOPY app/conf app/conf /m/\n", []bool{true, true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			buildBothWays(t, base, files, tc.df, func(e *env, general bool, layers []image.Layer) {
				if len(layers) != len(tc.unpacked) {
					t.Fatalf("%d layers, want %d", len(layers), len(tc.unpacked))
				}
				for j := 1; j < len(layers); j++ {
					if want := general || tc.unpacked[j]; e.unpacked(layers[j], layers[:j]) != want {
						t.Errorf("layer %d unpacked = %v, want %v", j, !want, want)
					}
				}
			})
		})
	}
}

// buildBothWays builds df over base with the context files twice, every
// COPY copied into its mount and then written from the context where it
// can be, and fails unless both make the same layers (see layerListing).
// check, if not nil, looks at each build's layers.
func buildBothWays(t *testing.T, base []tarFile, files []ctxFile, df string, check func(e *env, general bool, layers []image.Layer)) {
	t.Helper()
	var listings [2][][]string
	var sizes [2][]int64
	for i, general := range []bool{true, false} {
		e := newEnv(t)
		e.b.copyIntoMounts = general
		e.importBase("busybox:latest", base)
		res, _, err := e.build(df, e.context(files))
		if err != nil {
			t.Fatalf("build (every COPY into its mount: %v): %v", general, err)
		}
		layers := e.image(res.ImageID).Layers()
		for j, l := range layers {
			listings[i] = append(listings[i], e.layerListing(l))
			sizes[i] = append(sizes[i], l.DiffSize)
			e.checkSnapshot(l, layers[:j])
		}
		if check != nil {
			check(e, general, layers)
		}
	}
	if diff := cmp.Diff(listings[0], listings[1]); diff != "" {
		t.Errorf("layers (-copied into the mount +written from the context):\n%s", diff)
	}
	if !slices.Equal(sizes[0], sizes[1]) {
		t.Errorf("diff sizes %v copied into the mount, %v written from the context", sizes[0], sizes[1])
	}
}

// A COPY the context-store fast path cannot write takes the general path:
// the build succeeds, and its layers are those copying into the mount
// makes. (The fast path's "cannot be written from the context alone" once
// reached clients as UNKNOWN for some of these.)
func TestCopyFastPathFallsBackToTheGeneralPath(t *testing.T) {
	base := append(busyboxLike(),
		tarFile{name: "etc/conf.d/", dir: true, mode: 0o750},
		tarFile{name: "etc/conf.d/old", body: "old\n", mode: 0o640},
	)
	files := []ctxFile{
		{path: "Dockerfile", body: "x", mtime: 1_600_000_000_000_000_000},
		{path: "foo", body: "foo\n", mtime: 1_600_000_001_000_000_000},
		{path: "bar", body: "bar\n", mtime: 1_600_000_002_000_000_000},
		{path: "a b.txt", body: "spaces\n", mtime: 1_600_000_003_000_000_000},
		{path: "dir", dir: true, mode: 0o755, mtime: 1_600_000_004_000_000_000},
		{path: "dir/x", body: "x\n", mtime: 1_600_000_005_000_000_000},
	}
	cases := []struct{ name, df string }{
		{"into an existing directory", "FROM busybox\nCOPY foo /etc/\nCOPY dir /etc/conf.d/\n"},
		{"several sources into one directory", "FROM busybox\nCOPY foo bar /etc/\nCOPY foo bar dir /new/\n"},
		{"variable sources", "FROM busybox\nARG SRC=foo\nENV DST=/srv/\nCOPY $SRC ${DST}\nCOPY ${SRC} bar $DST\n"},
		{"the Dockerfile", "FROM busybox\nCOPY Dockerfile /\nCOPY Dockerfile /etc/\n"},
		{"into the WORKDIR", "FROM busybox\nWORKDIR /app\nCOPY foo ./\nCOPY bar .\nCOPY dir ./\n"},
		{"into an existing WORKDIR", "FROM busybox\nWORKDIR /etc\nCOPY foo ./\nCOPY dir .\n"},
		{"JSON sources with spaces", "FROM busybox\nCOPY [\"a b.txt\", \"/x/\"]\nCOPY [\"a b.txt\", \"foo\", \"/etc/\"]\n"},
		{"twice to the same place", "FROM busybox\nCOPY foo /srv/\nCOPY foo /srv/\nCOPY dir /srv/\nCOPY dir /srv/\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { buildBothWays(t, base, files, tc.df, nil) })
	}
}

// Later steps mount a layer written from the context (unpacked from its
// tar): a RUN sees its files, a WORKDIR it made needs no mount, and COPY
// --from copies out of it.
func TestLaterStepsSeeACopyWrittenFromTheContext(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	c := e.context([]ctxFile{{path: "app", dir: true, mode: 0o755}, {path: "app/conf", dir: true, mode: 0o755}, {path: "app/conf/x", body: "x\n"}})
	res, _ := e.mustBuild("FROM busybox AS a\nCOPY app /srv\nWORKDIR /srv/conf\nRUN test -e /srv/conf/x\n"+
		"FROM busybox\nCOPY --from=a /srv/conf /copied\n", c)
	files := e.files(e.image(res.ImageID))
	if files["copied/x"] != "-rw-r--r-- 0:0 x\n" {
		t.Errorf("copied/x = %q; files: %v", files["copied/x"], keys(files))
	}
	if len(e.sandbox.runs) != 1 {
		t.Fatalf("%d RUN steps ran, want 1", len(e.sandbox.runs))
	}
}

// A COPY the fast path fails at (here: content missing from the context
// store) takes the general path too, whose error names the line and the
// source, with the error's own kind.
func TestCopyFastPathFailureFallsBack(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	c, err := buildctx.New([]*builderv1.FileEntry{{Path: "ghost", Mode: buildctx.UnixMode(0o644), Size: 5, Digest: string(digest.FromString("ghost"))}})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = e.build("FROM busybox\nCOPY ghost /srv/\n", c)
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "Dockerfile:2: COPY ghost: ") {
		t.Errorf("build = %v, want NOT_FOUND naming Dockerfile:2 and COPY ghost", err)
	}
}

// A COPY from the context onto what the parent's root holds already — a
// directory it copies over (`COPY deps/ ./deps/`, then `COPY . .`), files
// and symlinks it replaces — is written from the context too, and makes
// the layer copying into the mount makes: the directories copied over with
// the COPY's mode, owner and mtime, the replaced files as new files, no
// whiteout, and what the directories held below still there.
func TestCopyOntoExistingPathsMakesTheLayerCopyingWould(t *testing.T) {
	base := append(busyboxLike(),
		tarFile{name: "src/", dir: true, mode: 0o755},
		tarFile{name: "opt/", dir: true, mode: 0o755},
		tarFile{name: "opt/app/", dir: true, mode: 0o700, uid: 1000},
		tarFile{name: "opt/app/conf/", dir: true, mode: 0o711, uid: 1000},
		tarFile{name: "opt/app/conf/old", body: "old\n", mode: 0o600, uid: 1000},
		tarFile{name: "opt/app/run.sh", body: "old run\n", mode: 0o700, uid: 1000},
		tarFile{name: "opt/app/link", link: "conf/old"},
		tarFile{name: "opt/app/tool", body: "a file the context has as a symlink\n", mode: 0o755},
		tarFile{name: "opt/app/lib", link: "/bin"},
	)
	files := []ctxFile{
		{path: "app", dir: true, mode: 0o755, mtime: 1_600_000_001_000_000_000},
		{path: "app/conf", dir: true, mode: 0o750 | fs.ModeSetgid, mtime: 1_600_000_002_000_000_000},
		{path: "app/conf/a.txt", body: "a\n", mode: 0o640, mtime: 1_600_000_003_000_000_000},
		{path: "app/run.sh", body: "echo new\n", mode: 0o755, mtime: 1_600_000_004_000_000_000},
		{path: "app/link", link: "run.sh", mtime: 1_600_000_005_000_000_000},
		{path: "app/tool", link: "run.sh", mtime: 1_600_000_006_000_000_000},
		{path: "app/lib", body: "a file where a symlink to a directory was\n", mtime: 1_600_000_007_000_000_000},
		{path: "app/new", dir: true, mode: 0o755, mtime: 1_600_000_008_000_000_000},
		{path: "app/new/n.txt", body: "n\n", mtime: 1_600_000_009_000_000_000},
		{path: "deps", dir: true, mode: 0o755, mtime: 1_600_000_010_000_000_000},
		{path: "deps/m1", dir: true, mode: 0o755, mtime: 1_600_000_011_000_000_000},
		{path: "deps/m1/f1.go", body: "package m1\n", mtime: 1_600_000_012_000_000_000},
		{path: "src", dir: true, mode: 0o755, mtime: 1_600_000_013_000_000_000},
		{path: "src/main.c", body: "int main;\n", mtime: 1_600_000_014_000_000_000},
	}
	cases := []struct {
		name, df string
		unpacked []bool // as in TestCopyFromContextMakesTheLayerCopyingWould
	}{
		{"dependencies first, then everything", "FROM busybox\nWORKDIR /src\nCOPY deps/ ./deps/\nCOPY . .\n", []bool{true, true, false}},
		{"then a step reads both", "FROM busybox\nWORKDIR /src\nCOPY deps/ ./deps/\nCOPY . .\nRUN test -e /src/deps/m1/f1.go\nRUN test -e /src/app/conf/a.txt\n",
			[]bool{true, true, true}},
		{"over a directory of another mode, owner and mtime", "FROM busybox\nCOPY app /opt/app/\n", []bool{true, false}},
		{"what was below stays", "FROM busybox\nCOPY app /opt/app/\nRUN test -e /opt/app/conf/old\n", []bool{true, true}},
		{"--chown and --chmod", "FROM busybox\nCOPY --chown=app:app --chmod=0751 app /opt/app/\n", []bool{true, false}},
		// Nothing new: whether it changes anything (an empty layer if not)
		// is the general way's to say.
		{"the same directory twice", "FROM busybox\nCOPY app /opt/app/\nCOPY app /opt/app/\n", []bool{true, true, true}},
		{"nothing new", "FROM busybox\nCOPY deps /x/\nCOPY deps /x/\n", []bool{true, true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			buildBothWays(t, base, files, tc.df, func(e *env, general bool, layers []image.Layer) {
				if len(layers) != len(tc.unpacked) {
					t.Fatalf("%d layers, want %d", len(layers), len(tc.unpacked))
				}
				for j := 1; j < len(layers); j++ {
					if want := general || tc.unpacked[j]; e.unpacked(layers[j], layers[:j]) != want {
						t.Errorf("layer %d unpacked = %v, want %v", j, !want, want)
					}
					for _, entry := range e.layerListing(layers[j]) {
						if strings.Contains(entry, "/.wh.") || strings.HasPrefix(entry, "{Typeflag:48 Name:.wh.") {
							t.Errorf("layer %d has a whiteout: %s", j, entry)
						}
					}
				}
			})
		})
	}
}

// A COPY that puts a file where the root has a directory, or a directory
// where it has a file, fails the same way written from the context or not.
func TestCopyOntoTheOtherKindFailsAsCopyingWould(t *testing.T) {
	base := append(busyboxLike(),
		tarFile{name: "opt/", dir: true, mode: 0o755},
		tarFile{name: "opt/conf/", dir: true, mode: 0o755},
		tarFile{name: "opt/run.sh", body: "x\n", mode: 0o755},
	)
	files := []ctxFile{
		{path: "a", dir: true, mode: 0o755},
		{path: "a/conf", body: "a file\n"},
		{path: "a/new.txt", body: "new\n"},
		{path: "b", dir: true, mode: 0o755},
		{path: "b/run.sh", dir: true, mode: 0o755},
		{path: "b/run.sh/x", body: "x\n"},
		{path: "b/new.txt", body: "new\n"},
	}
	for _, df := range []string{"FROM busybox\nCOPY a /opt/\n", "FROM busybox\nCOPY b /opt/\n"} {
		var errs [2]string
		for i, general := range []bool{true, false} {
			e := newEnv(t)
			e.b.copyIntoMounts = general
			e.importBase("busybox:latest", base)
			_, _, err := e.build(df, e.context(files))
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("%q (every COPY into its mount: %v): build = %v, want INVALID_ARGUMENT", df, general, err)
			}
			errs[i] = err.Error()
		}
		if errs[0] != errs[1] {
			t.Errorf("%q fails with %q copied into the mount, %q written from the context", df, errs[0], errs[1])
		}
	}
}
