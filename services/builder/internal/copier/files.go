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
// below a symlink, so no path leads outside dir.
func (cl *Layer) WriteFiles(ctx context.Context, dir string) error {
	var files []*layerEntry
	for i := range cl.entries {
		e := &cl.entries[i]
		if e.hdr.Typeflag != tar.TypeDir {
			files = append(files, e)
			continue
		}
		// Its mode, owner and mtime are set once what it holds is written.
		if err := os.Mkdir(filepath.Join(dir, e.path), 0o700); err != nil {
			return err
		}
	}
	if err := parallel(ctx, files, func(e *layerEntry) error { return cl.writeEntry(dir, e) }); err != nil {
		return err
	}
	for _, e := range slices.Backward(cl.entries) {
		if e.hdr.Typeflag != tar.TypeDir {
			continue
		}
		host := filepath.Join(dir, e.path)
		if err := os.Lchown(host, e.hdr.Uid, e.hdr.Gid); err != nil {
			return err
		}
		if err := os.Chmod(host, headerMode(&e.hdr)); err != nil {
			return err
		}
		if err := setMtime(host, e.hdr.ModTime); err != nil {
			return err
		}
	}
	return nil
}

// writeEntry writes one file or symlink of the layer.
func (cl *Layer) writeEntry(dir string, e *layerEntry) error {
	host := filepath.Join(dir, e.path)
	if e.hdr.Typeflag == tar.TypeSymlink {
		if err := os.Symlink(e.hdr.Linkname, host); err != nil {
			return err
		}
		if err := os.Lchown(host, e.hdr.Uid, e.hdr.Gid); err != nil {
			return err
		}
		return setMtime(host, e.hdr.ModTime)
	}
	f, err := os.OpenFile(host, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if err := cl.writeContent(f, e); err != nil {
		f.Close()
		return err
	}
	if err := f.Chown(e.hdr.Uid, e.hdr.Gid); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(headerMode(&e.hdr)); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return setMtime(host, e.hdr.ModTime)
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
