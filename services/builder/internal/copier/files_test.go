package copier

import (
	"archive/tar"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/layer"
	"github.com/strata-build/strata/services/builder/internal/layer/layertest"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// A layer's files written from the context store are those its tar
// unpacks to, to the nanosecond: a step mounting the layer sees the same
// root whichever way the layer was unpacked.
func TestWriteFilesIsTheTarUnpacked(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (file owners)")
	}
	store, err := buildctx.NewStore(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	file := func(p, body string, mode fs.FileMode, mtime int64) *builderv1.FileEntry {
		d := storeContent(t, store.NewWriter, body)
		return &builderv1.FileEntry{Path: p, Mode: buildctx.UnixMode(mode), Size: int64(len(body)), Digest: string(d), MtimeUnixNano: mtime}
	}
	dir := func(p string, mode fs.FileMode, mtime int64) *builderv1.FileEntry {
		return &builderv1.FileEntry{Path: p, Mode: buildctx.UnixMode(fs.ModeDir | mode), MtimeUnixNano: mtime}
	}
	// A directory of more files than one goroutine writes (batchFiles).
	many := []*builderv1.FileEntry{dir("app/many", 0o755, 1_600_000_009_000_000_000)}
	for i := range 2*batchFiles + 3 {
		many = append(many, file(fmt.Sprintf("app/many/f%03d", i), fmt.Sprint(i), 0o644, 1_600_000_010_000_000_000+int64(i)))
	}
	bctx, err := buildctx.New(append([]*builderv1.FileEntry{
		dir("app", 0o755, 1_600_000_001_000_000_000),
		file("app/run.sh", "echo hi\n", 0o755|fs.ModeSetuid, 1_600_000_002_500_000_000),
		dir("app/conf", 0o700|fs.ModeSetgid, 1_600_000_003_400_000_000),
		file("app/conf/a.txt", "a\n", 0o600, 1_600_000_004_000_000_001),
		file("app/conf/empty", "", 0o644, 1_600_000_005_000_000_000),
		file("app/big", strings.Repeat("b", 3<<20), 0o644, 1_600_000_006_000_000_000),
		{Path: "app/link", Mode: buildctx.UnixMode(fs.ModeSymlink | 0o777), LinkTarget: "run.sh", MtimeUnixNano: 1_600_000_007_700_000_000},
		dir("app/sticky", 0o1777, 1_600_000_008_000_000_000),
	}, many...))
	if err != nil {
		t.Fatal(err)
	}
	e, err := bctx.Resolve("app")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "srv"), 0o750); err != nil {
		t.Fatal(err)
	}
	cp := &plan.Copy{Sources: []plan.Source{{Src: "app", Entry: e}}, Dest: "/srv/new/app", Chown: "1234:5678"}
	cl := ContextLayer(root, cp, Options{Store: store, Context: bctx}, time.Unix(1_700_000_000, 0))
	if cl == nil {
		t.Fatal("ContextLayer = nil, want the layer written from the context")
	}

	ctx := context.Background()
	written, unpacked := filepath.Join(t.TempDir(), "w"), filepath.Join(t.TempDir(), "u")
	for _, d := range []string{written, unpacked} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.WriteFiles(ctx, written); err != nil {
		t.Fatal(err)
	}
	r := layer.Open(ctx, cl.Write)
	defer r.Close()
	if _, err := layer.Unpack(ctx, r, unpacked); err != nil {
		t.Fatal(err)
	}
	want := layertest.Listing(t, unpacked, time.Nanosecond)
	// srv, srv/new, the eight entries of app, and many's
	if n := 10 + len(many); len(want) != n {
		t.Errorf("the layer unpacks to %d entries, want %d:\n%s", len(want), n, strings.Join(want, "\n"))
	}
	if diff := cmp.Diff(want, layertest.Listing(t, written, time.Nanosecond)); diff != "" {
		t.Errorf("WriteFiles (-the tar unpacked +written):\n%s", diff)
	}
}

// A layer whose entries broke the plan's rules (a file below a symlink
// that points out) is refused, and nothing is written where the link
// points: WriteFiles runs as root on the builder's host.
func TestWriteFilesStaysInItsDirectory(t *testing.T) {
	outside, dir := t.TempDir(), t.TempDir()
	mtime := time.Unix(1_600_000_000, 0)
	cl := &Layer{entries: []layerEntry{
		{path: "/escape", hdr: tar.Header{Typeflag: tar.TypeSymlink, Linkname: outside, Mode: 0o777, ModTime: mtime}},
		{path: "/escape/planted", hdr: tar.Header{Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime}},
	}}
	if err := cl.WriteFiles(context.Background(), dir); err == nil {
		t.Error("WriteFiles of a file below a symlink out of its directory succeeded")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("WriteFiles wrote %d entries where the symlink points", len(entries))
	}
}
