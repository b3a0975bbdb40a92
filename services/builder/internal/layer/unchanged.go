package layer

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// errChanged ends Unchanged's walk at the first change.
var errChanged = errors.New("changed")

// Unchanged reports whether the overlay upper directory upper changes
// nothing of the root filesystem lower it was made over: every entry it
// holds is in lower already, of the same type, mode, owner and device,
// and, for what is not a directory, the same size, modification time and
// content (or link target). Docker's classic builder records a step that
// changes nothing so as an empty layer (its naive diff, which compares
// these, finds no change), as when ADD copies a file onto itself.
func Unchanged(upper, lower string) (bool, error) {
	err := filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(upper, p)
		if err != nil || rel == "." {
			return err
		}
		var up unix.Stat_t
		if err := unix.Lstat(p, &up); err != nil {
			return err
		}
		host, err := securejoin.SecureJoin(lower, rel)
		if err != nil {
			return err
		}
		var low unix.Stat_t
		if err := unix.Lstat(host, &low); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return errChanged
			}
			return err
		}
		if up.Mode != low.Mode || up.Uid != low.Uid || up.Gid != low.Gid || up.Rdev != low.Rdev {
			return errChanged
		}
		switch up.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			return nil
		case unix.S_IFCHR:
			return errChanged // an overlay whiteout, or a device COPY does not make
		}
		if up.Size != low.Size || !sameTime(up.Mtim, low.Mtim) {
			return errChanged
		}
		same, err := sameContent(p, host, up.Mode&unix.S_IFMT)
		if err == nil && !same {
			err = errChanged
		}
		return err
	})
	if errors.Is(err, errChanged) {
		return false, nil
	}
	return err == nil, err
}

// sameTime compares modification times as Docker's naive diff does: a
// time without nanoseconds (from a layer tar) matches any in its second.
func sameTime(a, b unix.Timespec) bool {
	return a.Sec == b.Sec && (a.Nsec == b.Nsec || a.Nsec == 0 || b.Nsec == 0)
}

// sameContent compares two files' contents, or two symlinks' targets.
func sameContent(a, b string, typ uint32) (bool, error) {
	if typ == unix.S_IFLNK {
		ta, err := os.Readlink(a)
		if err != nil {
			return false, err
		}
		tb, err := os.Readlink(b)
		return ta == tb, err
	}
	if typ != unix.S_IFREG {
		return true, nil
	}
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == io.EOF || eb == io.ErrUnexpectedEOF, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
}
