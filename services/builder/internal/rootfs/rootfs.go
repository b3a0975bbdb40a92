// Package rootfs reads the files a builder needs from an image's root
// filesystem (/etc/passwd and /etc/group for USER and --chown) without
// trusting it: the path resolves inside the root as if it were "/" at every
// component (openat2 RESOLVE_IN_ROOT through filepath-securejoin's
// pathrs-lite, never a host path), only a regular file is opened (a FIFO
// would block the open forever, a device such as /dev/zero would never
// end), and at most a fixed number of bytes is read.
package rootfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
)

// MaxIDFileBytes bounds /etc/passwd and /etc/group read from an image: a
// real one is a few KiB; a million users would fit.
const MaxIDFileBytes = 16 << 20

// ReadFile returns the contents of name (an absolute path in the image)
// inside root. A missing file is an error matching fs.ErrNotExist; a file
// that is not a regular one (after in-root symlink resolution), or holds
// more than max bytes, is INVALID_ARGUMENT naming it.
func ReadFile(root, name string, max int64) ([]byte, error) {
	handle, err := pathrs.OpenInRoot(root, name) // an O_PATH handle: opens nothing yet
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s of the image: %w", name, fs.ErrNotExist)
	}
	if err != nil {
		return nil, errdefs.InvalidArgument("%s of the image cannot be resolved: %v", name, err)
	}
	defer handle.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(handle.Fd()), &st); err != nil {
		return nil, errdefs.InvalidArgument("%s of the image: %v", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, errdefs.InvalidArgument("%s of the image is %s, not a regular file", name, kind(st.Mode))
	}
	if st.Size > max {
		return nil, errdefs.InvalidArgument("%s of the image holds %d bytes, more than the %d bytes this builder reads", name, st.Size, max)
	}
	// O_NONBLOCK: should the file be swapped for a FIFO between the check
	// and the open, the open still returns at once.
	f, err := pathrs.Reopen(handle, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK)
	if err != nil {
		return nil, errdefs.InvalidArgument("%s of the image cannot be opened: %v", name, err)
	}
	defer f.Close()
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(f, max+1))
	if err != nil {
		return nil, errdefs.InvalidArgument("reading %s of the image: %v", name, err)
	}
	if n > max {
		return nil, errdefs.InvalidArgument("%s of the image holds more than the %d bytes this builder reads", name, max)
	}
	return buf.Bytes(), nil
}

func kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return fmt.Sprintf("of type %#o", mode&unix.S_IFMT)
}
