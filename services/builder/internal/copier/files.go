package copier

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
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
	if err := parallel(ctx, files, func(e *layerEntry) error { return cl.writeEntry(root, e) }); err != nil {
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

// writeEntry writes one file or symlink of the layer.
func (cl *Layer) writeEntry(root *os.Root, e *layerEntry) error {
	rel := inRoot(e.path)
	if e.hdr.Typeflag == tar.TypeSymlink {
		if err := root.Symlink(e.hdr.Linkname, rel); err != nil {
			return err
		}
		if err := root.Lchown(rel, e.hdr.Uid, e.hdr.Gid); err != nil {
			return err
		}
		// os.Root has no Lchtimes: the link's own times are set through
		// its directory, opened in the root.
		parent, err := root.Open(filepath.Dir(rel))
		if err != nil {
			return err
		}
		defer parent.Close()
		t := unix.NsecToTimespec(e.hdr.ModTime.UnixNano())
		return unix.UtimesNanoAt(int(parent.Fd()), filepath.Base(rel), []unix.Timespec{t, t}, unix.AT_SYMLINK_NOFOLLOW)
	}
	f, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
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
	return root.Chtimes(rel, e.hdr.ModTime, e.hdr.ModTime)
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
	n, err := io.Copy(f, io.LimitReader(src, e.hdr.Size))
	if err != nil {
		return fmt.Errorf("writing %s: %w", e.path, err)
	}
	if n != e.hdr.Size {
		return fmt.Errorf("writing %s: its content has %d bytes, not %d", e.path, n, e.hdr.Size)
	}
	return nil
}

// headerMode is the permission bits, with setuid, setgid and sticky, of a
// layer entry's header.
func headerMode(h *tar.Header) fs.FileMode {
	return h.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}
