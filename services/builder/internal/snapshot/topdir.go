package snapshot

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// fsTopdirFL is FS_TOPDIR_FL of linux/fs.h, which x/sys/unix does not name.
const fsTopdirFL = 0x00020000

// markTopDir sets the "top of directory hierarchies" attribute (chattr +T,
// FS_TOPDIR_FL) on dir, best effort: filesystems without it (tmpfs, xfs)
// are left as they are.
//
// Every prepared step and every unpack gets a fresh directory tree under
// active/ or tmp/. With the attribute, ext4's Orlov allocator spreads those
// trees over block groups that have room, instead of packing them next to
// their parent. That matters on ext4 without a journal (common on cloud
// VMs): there, allocating an inode skips every inode of the group that was
// freed in the last minutes, one by one, so a group where thousands of files
// were just deleted (the previous step's directory, an evicted layer, any
// build tool's temporary files) makes each file creation cost about a
// millisecond of kernel time instead of a few microseconds. Measured on
// such a machine: 2,000 small files took 0.8–1.3 s of system time in a
// directory under /tmp and 0.07 s in one created under a +T directory.
func markTopDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err == nil && flags&fsTopdirFL == 0 {
		err = unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags|fsTopdirFL))
	}
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return nil
	}
	return err
}
