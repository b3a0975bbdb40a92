package transfer

import (
	"archive/tar"
	"errors"
	"io"
	"path"
	"strings"

	"github.com/strata-build/strata/lib/errdefs"
)

// CheckEntry refuses a tar entry that would land outside the root it is
// unpacked into: a name that is absolute or climbs out with "..", or a hard
// link whose target does. Symlink targets are data — they are resolved
// inside the root when a layer is unpacked — so any target is allowed.
//
// containerd re-roots such names instead; Strata refuses them because it
// keeps layer tars verbatim (the diff ID is their digest), and a layer whose
// names other tools read differently is not one to pass on.
func CheckEntry(hdr *tar.Header, what string) error {
	if err := checkName(hdr.Name); err != nil {
		return errdefs.InvalidArgument("%s: tar entry %q %s", what, hdr.Name, err).WithReason("UNSAFE_TAR_ENTRY")
	}
	if hdr.Typeflag == tar.TypeLink {
		if err := checkName(hdr.Linkname); err != nil {
			return errdefs.InvalidArgument("%s: tar entry %q is a hard link to %q, which %s", what, hdr.Name, hdr.Linkname, err).
				WithReason("UNSAFE_TAR_ENTRY")
		}
	}
	return nil
}

func checkName(name string) error {
	if strings.HasPrefix(name, "/") {
		return errors.New("is an absolute path")
	}
	if c := path.Clean(name); c == ".." || strings.HasPrefix(c, "../") {
		return errors.New("climbs out of the root with \"..\"")
	}
	return nil
}

// scanTar reads a whole layer tar from r, checking each entry, and returns
// Docker's diff size: regular files' bytes and symlink targets' lengths
// (hard links add nothing, so a hard-linked file counts once). It reads r to
// its end, so a digest computed on the way covers the whole stream.
func scanTar(r io.Reader, what string) (int64, error) {
	tr := tar.NewReader(r)
	var size int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, tarError(err, what)
		}
		if err := CheckEntry(hdr, what); err != nil {
			return 0, err
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse:
			size += hdr.Size
		case tar.TypeSymlink:
			size += int64(len(hdr.Linkname))
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return 0, tarError(err, what)
		}
	}
	// Padding after the end-of-archive marker is part of the diff ID.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return 0, tarError(err, what)
	}
	return size, nil
}

func tarError(err error, what string) error {
	if IsClassified(err) {
		return err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errdefs.InvalidArgument("%s is truncated: the tar stream ends inside an entry", what).WithReason("TRUNCATED")
	}
	if errors.Is(err, tar.ErrHeader) || errors.Is(err, tar.ErrFieldTooLong) || errors.Is(err, tar.ErrInsecurePath) {
		return errdefs.InvalidArgument("%s is not a valid tar stream: %v", what, err)
	}
	return err
}
