package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (overlay mounts, device nodes, owners)")
	}
}

// mountOverlay mounts an overlay of lowers (top first) and upper at a new
// directory and returns it; the mount goes away with the test.
func mountOverlay(t testing.TB, upper string, lowers ...string) string {
	t.Helper()
	base := t.TempDir()
	work, merged := filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{work, merged} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=off,index=off,metacopy=off",
		strings.Join(lowers, ":"), upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(merged, unix.MNT_DETACH) })
	return merged
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func write(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, []byte(content), mode))
	must(t, os.Chmod(path, mode))
}

// changeThroughOverlay builds a lower directory, mounts it with an upper
// directory and changes the merged view the way a RUN step would. It returns
// the lower, the upper and the merged directories.
func changeThroughOverlay(t *testing.T) (lower, upper, merged string) {
	base := t.TempDir()
	lower, upper = filepath.Join(base, "lower"), filepath.Join(base, "upper")
	must(t, os.Mkdir(upper, 0o755))
	write(t, filepath.Join(lower, "etc/passwd"), "root:x:0:0::/root:/bin/sh\n", 0o644)
	write(t, filepath.Join(lower, "etc/gone"), "bye", 0o644)
	write(t, filepath.Join(lower, "dir/keep/f1"), "old", 0o644)
	write(t, filepath.Join(lower, "dir/old"), "old", 0o644)
	write(t, filepath.Join(lower, "bin/sh"), "#!shell", 0o755)
	must(t, os.Mkdir(filepath.Join(lower, "dev"), 0o755))

	merged = mountOverlay(t, upper, lower)
	m := func(p string) string { return filepath.Join(merged, p) }
	must(t, os.Remove(m("etc/gone")))
	must(t, os.RemoveAll(m("dir")))
	must(t, os.Mkdir(m("dir"), 0o750))
	write(t, m("dir/new"), "new", 0o600)
	write(t, m("newfile"), "hello", 0o640)
	must(t, os.Chown(m("newfile"), 1000, 1001))
	must(t, unix.Setxattr(m("newfile"), "user.note", []byte("kept"), 0))
	must(t, os.Link(m("newfile"), m("hardlink")))
	must(t, os.Symlink("/dev/stdout", m("log")))
	must(t, unix.Mknod(m("dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Mkfifo(m("fifo"), 0o644))
	must(t, unix.Chmod(m("bin/sh"), 0o4755))
	return lower, upper, merged
}

type tarEntry struct {
	Name, Linkname     string
	Type               byte
	Mode               int64
	Uid, Gid           int
	Size               int64
	Devmajor, Devminor int64
	Xattrs             map[string]string
}

func readTar(t testing.TB, r io.Reader) []tarEntry {
	t.Helper()
	var out []tarEntry
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		must(t, err)
		e := tarEntry{Name: hdr.Name, Linkname: hdr.Linkname, Type: hdr.Typeflag, Mode: hdr.Mode,
			Uid: hdr.Uid, Gid: hdr.Gid, Size: hdr.Size, Devmajor: hdr.Devmajor, Devminor: hdr.Devminor}
		for k, v := range hdr.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				if e.Xattrs == nil {
					e.Xattrs = map[string]string{}
				}
				e.Xattrs[strings.TrimPrefix(k, "SCHILY.xattr.")] = v
			}
		}
		out = append(out, e)
	}
}

func TestDiffOverlayUpper(t *testing.T) {
	requireRoot(t)
	_, upper, _ := changeThroughOverlay(t)

	var buf bytes.Buffer
	if err := Diff(context.Background(), upper, &buf); err != nil {
		t.Fatalf("Diff: %v", err)
	}
	want := []tarEntry{
		{Name: "bin/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "bin/sh", Type: tar.TypeReg, Mode: 0o4755, Size: 7},
		{Name: "dev/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "dir/", Type: tar.TypeDir, Mode: 0o750},
		{Name: "dir/.wh..wh..opq", Type: tar.TypeReg, Mode: 0o750},
		{Name: "dir/new", Type: tar.TypeReg, Mode: 0o600, Size: 3},
		{Name: "etc/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "etc/.wh.gone", Type: tar.TypeReg, Mode: 0o600},
		{Name: "fifo", Type: tar.TypeFifo, Mode: 0o644},
		{Name: "hardlink", Type: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1001, Size: 5, Xattrs: map[string]string{"user.note": "kept"}},
		{Name: "log", Type: tar.TypeSymlink, Mode: 0o777, Linkname: "/dev/stdout"},
		{Name: "newfile", Type: tar.TypeLink, Mode: 0o640, Uid: 1000, Gid: 1001, Linkname: "hardlink", Xattrs: map[string]string{"user.note": "kept"}},
	}
	got := readTar(t, &buf)
	// The umask may have changed the mode of mkfifo/mknod.
	for i := range got {
		if got[i].Type == tar.TypeFifo || got[i].Type == tar.TypeChar {
			got[i].Mode |= 0o022 & want[i].Mode
		}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Diff tar entries (-want +got):\n%s", d)
	}
}

// TestDiffUnpackRoundTrip checks what a user relies on: the layer made from a
// step's upper directory, unpacked and stacked on the same lower layer, shows
// exactly the filesystem the step saw.
func TestDiffUnpackRoundTrip(t *testing.T) {
	requireRoot(t)
	lower, upper, merged := changeThroughOverlay(t)
	seen := tree(t, merged)

	blob := &memBlob{}
	desc, err := WriteDiff(context.Background(), blob, DirSource(upper))
	if err != nil {
		t.Fatalf("WriteDiff: %v", err)
	}
	// 7 (bin/sh) + 3 (dir/new) + 5 (hardlink, once) + 11 (the symlink's target)
	if desc.DiffSize != 26 {
		t.Errorf("DiffSize = %d, want 26", desc.DiffSize)
	}

	unpacked := filepath.Join(t.TempDir(), "layer")
	must(t, os.Mkdir(unpacked, 0o755))
	res, err := Unpack(context.Background(), bytes.NewReader(blob.buf.Bytes()), unpacked, WithDiffID(desc.DiffID))
	if err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	if res.DiffID != desc.DiffID || res.DiffSize != desc.DiffSize {
		t.Errorf("Unpack = %+v, want diff ID %s and size %d", res, desc.DiffID, desc.DiffSize)
	}
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(unpacked, "etc/gone"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("etc/gone unpacked as mode %o rdev %d, want an overlay whiteout (char 0/0)", st.Mode, st.Rdev)
	}

	upper2 := filepath.Join(t.TempDir(), "upper")
	must(t, os.Mkdir(upper2, 0o755))
	restacked := mountOverlay(t, upper2, unpacked, lower)
	if d := diffTrees(seen, tree(t, restacked)); len(d) > 0 {
		t.Errorf("the unpacked layer over its lower layer differs from what the step saw:\n%s", strings.Join(d, "\n"))
	}
}

func TestDiffRejectsWhiteoutNames(t *testing.T) {
	upper := t.TempDir()
	write(t, filepath.Join(upper, "app/.wh.secret"), "x", 0o644)
	err := Diff(context.Background(), upper, io.Discard)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "/app/.wh.secret") {
		t.Errorf("Diff of an upper dir holding .wh.secret = %v, want INVALID_ARGUMENT naming the file", err)
	}
	blob := &memBlob{}
	if _, err := WriteDiff(context.Background(), blob, DirSource(upper)); !errdefs.IsInvalidArgument(err) || blob.committed {
		t.Errorf("WriteDiff = %v (committed %v), want INVALID_ARGUMENT and nothing committed", err, blob.committed)
	}
}

func TestDiffNoDuplicateNames(t *testing.T) {
	requireRoot(t)
	_, upper, _ := changeThroughOverlay(t)
	var buf bytes.Buffer
	must(t, Diff(context.Background(), upper, &buf))
	seen := map[string]bool{}
	for _, e := range readTar(t, &buf) {
		name := filepath.Clean(e.Name)
		if seen[name] {
			t.Errorf("duplicate entry %q", name)
		}
		seen[name] = true
	}
}
