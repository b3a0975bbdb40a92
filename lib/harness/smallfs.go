package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// SmallFS mounts a new filesystem of size bytes for the test and returns
// its mount point, so that a test can fill a disk: fstype "tmpfs", or
// "ext4", made by mkfs.ext4 in a file and loop-mounted (with no blocks
// reserved for root, who runs the tests). It needs root; the filesystem
// is unmounted when the test ends.
func SmallFS(t testing.TB, fstype string, size int64) string {
	t.Helper()
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	var args []string
	switch fstype {
	case "tmpfs":
		args = []string{"-t", "tmpfs", "-o", "size=" + strconv.FormatInt(size, 10), "tmpfs", mnt}
	case "ext4":
		img := filepath.Join(dir, "ext4.img")
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, size); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4 %s: %v\n%s", img, err, out)
		}
		args = []string{"-o", "loop", img, mnt}
	default:
		t.Fatalf("SmallFS: unknown filesystem %q", fstype)
	}
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		t.Fatalf("mount %v: %v\n%s", args, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", mnt, err, out)
		}
	})
	return mnt
}
