package snapshot

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func inodeFlags(t *testing.T, dir string) (uint32, error) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
}

// The directories that receive each step's and each unpack's fresh tree
// carry the top-directory attribute where the filesystem has it, so that
// ext4 places those trees in block groups with room.
func TestStepDirectoriesAreTopDirs(t *testing.T) {
	root := t.TempDir()
	probe := filepath.Join(root, "probe")
	if err := os.Mkdir(probe, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := markTopDir(probe); err != nil {
		t.Fatal(err)
	}
	if flags, err := inodeFlags(t, probe); err != nil || flags&fsTopdirFL == 0 {
		t.Skipf("the filesystem of %s keeps no top-directory attribute (flags %#x, %v)", root, flags, err)
	}
	if _, err := New(filepath.Join(root, "store"), Options{}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"active", "tmp"} {
		flags, err := inodeFlags(t, filepath.Join(root, "store", d))
		if err != nil {
			t.Fatal(err)
		}
		if flags&fsTopdirFL == 0 {
			t.Errorf("%s/ has flags %#x, without FS_TOPDIR_FL", d, flags)
		}
	}
}
