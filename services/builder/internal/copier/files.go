package copier

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// WriteFiles writes the layer's files into dir, an empty directory the
// caller alone writes to, as unpacking its tar (Write) there would: the
// same names, types, modes, owners, link targets, contents and mtimes (the
// headers' are whole seconds already, as a tar keeps them). It is that
// unpack without the tar: the entries come from the plan and the contents
// straight from the context store, files on a few goroutines as IntoRoot
// writes them. The entries' names are the plan's clean absolute paths,
// every directory above an entry is an entry before it, and no entry is
// below a symlink; every path is resolved in dir as an os.Root all the
// same, so that a plan that broke those rules could not lead a write (as
// root, on the builder's host) outside dir.
func (cl *Layer) WriteFiles(ctx context.Context, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	var files []*layerEntry
	for i := range cl.entries {
		e := &cl.entries[i]
		if e.hdr.Typeflag != tar.TypeDir {
			files = append(files, e)
			continue
		}
		// Its mode, owner and mtime are set once what it holds is written.
		if err := root.Mkdir(inRoot(e.path), 0o700); err != nil {
			return err
		}
	}
	if err := parallel(ctx, batches(files), func(b []*layerEntry) error { return cl.writeBatch(root, b) }); err != nil {
		return err
	}
	for _, e := range slices.Backward(cl.entries) {
		if e.hdr.Typeflag != tar.TypeDir {
			continue
		}
		rel := inRoot(e.path)
		if err := root.Lchown(rel, e.hdr.Uid, e.hdr.Gid); err != nil {
			return err
		}
		if err := root.Chmod(rel, headerMode(&e.hdr)); err != nil {
			return err
		}
		if err := root.Chtimes(rel, e.hdr.ModTime, e.hdr.ModTime); err != nil {
			return err
		}
	}
	return nil
}

// inRoot is an entry's path relative to the root it is written in.
func inRoot(path string) string {
	if rel := strings.TrimLeft(path, "/"); rel != "" {
		return rel
	}
	return "."
}

// batchFiles bounds the files of one directory written by one goroutine,
// so that a large flat directory is still written on every core.
const batchFiles = 64

// batches groups the files by their directory, at most batchFiles to a
// batch, so that each batch resolves its directory in the root once rather
// than once per file.
func batches(files []*layerEntry) [][]*layerEntry {
	var out [][]*layerEntry
	open := map[string]int{} // directory -> its batch being filled in out
	for _, e := range files {
		dir := path.Dir(e.path)
		i, ok := open[dir]
		if !ok || len(out[i]) == batchFiles {
			i = len(out)
			open[dir] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], e)
	}
	return out
}

// writeBatch writes files of one directory, opened once in the root:
// each file is created in it by its name alone, which no symlink can
// redirect (O_NOFOLLOW, O_EXCL).
func (cl *Layer) writeBatch(root *os.Root, batch []*layerEntry) error {
	dir, err := root.Open(inRoot(path.Dir(batch[0].path)))
	if err != nil {
		return err
	}
	defer dir.Close()
	dfd := int(dir.Fd())
	for _, e := range batch {
		if err := cl.writeEntry(dfd, e); err != nil {
			return err
		}
	}
	return nil
}

// writeEntry writes one file or symlink of the layer in its directory,
// dfd.
func (cl *Layer) writeEntry(dfd int, e *layerEntry) error {
	name := path.Base(e.path)
	if name == "/" || name == "." || name == ".." {
		return fmt.Errorf("layer entry %q names no file", e.path)
	}
	t := unix.NsecToTimespec(e.hdr.ModTime.UnixNano())
	times := []unix.Timespec{t, t}
	if e.hdr.Typeflag == tar.TypeSymlink {
		if err := unix.Symlinkat(e.hdr.Linkname, dfd, name); err != nil {
			return &os.PathError{Op: "symlinkat", Path: e.path, Err: err}
		}
		if err := unix.Fchownat(dfd, name, e.hdr.Uid, e.hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "fchownat", Path: e.path, Err: err}
		}
		return utimes(dfd, name, e.path, times)
	}
	fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: e.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), e.path)
	defer f.Close()
	if err := cl.writeContent(f, e); err != nil {
		return err
	}
	if err := f.Chown(e.hdr.Uid, e.hdr.Gid); err != nil {
		return err
	}
	if err := f.Chmod(headerMode(&e.hdr)); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if e.hdr.ModTime.IsZero() {
		// As os.Chtimes takes a zero time: the file's times stay.
		return nil
	}
	return utimes(dfd, name, e.path, times)
}

// utimes sets the access and modification times of name in dfd, not
// following a symlink.
func utimes(dfd int, name, full string, times []unix.Timespec) error {
	if err := unix.UtimesNanoAt(dfd, name, times, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: full, Err: err}
	}
	return nil
}

// writeContent copies a file's content from the context store, checking
// its size as Write does.
func (cl *Layer) writeContent(f *os.File, e *layerEntry) error {
	if e.hdr.Size == 0 {
		return nil
	}
	src, err := cl.store.Open(e.digest)
	if err != nil {
		return err
	}
	defer src.Close()
	if sec, ok := src.(interface {
		Outer() (io.ReaderAt, int64, int64)
	}); ok {
		// A small content is a section of a pack file: copied in the
		// kernel, as io.Copy copies a content that is a file of its own.
		if pack, off, size := sec.Outer(); size >= e.hdr.Size {
			if pf, ok := pack.(*os.File); ok {
				if done, err := copyRange(f, pf, off, e); done || err != nil {
					return err
				}
			}
		}
	}
	n, err := io.Copy(f, io.LimitReader(src, e.hdr.Size))
	if err != nil {
		return fmt.Errorf("writing %s: %w", e.path, err)
	}
	if n != e.hdr.Size {
		return fmt.Errorf("writing %s: its content has %d bytes, not %d", e.path, n, e.hdr.Size)
	}
	return nil
}

// copyRange copies e's content, at off in src, to f with
// copy_file_range. It reports false, having copied nothing, when the
// kernel or the filesystems cannot (such as two filesystems): io.Copy then
// copies it.
func copyRange(f, src *os.File, off int64, e *layerEntry) (bool, error) {
	left := e.hdr.Size
	for left > 0 {
		n, err := unix.CopyFileRange(int(src.Fd()), &off, int(f.Fd()), nil, int(left), 0)
		if err != nil {
			if left == e.hdr.Size && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) ||
				errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EIO)) {
				return false, nil // EIO: CIFS, as Go's own copier (internal/poll) falls back
			}
			return true, fmt.Errorf("writing %s: %w", e.path, err)
		}
		if n == 0 && left == e.hdr.Size {
			// Kernels before 5.19 answer 0 for files they cannot copy
			// (procfs, some network filesystems): io.Copy then tells.
			return false, nil
		}
		if n == 0 {
			return true, fmt.Errorf("writing %s: its content has %d bytes, not %d", e.path, e.hdr.Size-left, e.hdr.Size)
		}
		left -= int64(n)
	}
	return true, nil
}

// headerMode is the permission bits, with setuid, setgid and sticky, of a
// layer entry's header.
func headerMode(h *tar.Header) fs.FileMode {
	return h.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}
