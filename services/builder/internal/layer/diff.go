package layer

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
)

// Whiteout names of the OCI layer format.
const (
	whiteoutPrefix    = ".wh."
	whiteoutOpaqueDir = ".wh..wh..opq"
)

// Overlay's own extended attributes (trusted.overlay.*, or user.overlay.* for
// unprivileged mounts) describe the upper directory to the kernel; they are
// not file content and never go into a layer.
var overlayXattrPrefixes = []string{"trusted.overlay.", "user.overlay."}

// Diff writes the changes an overlay upper directory holds as an OCI layer tar
// to w: every entry of the directory in lexical order, with
//
//   - overlay whiteouts (character devices 0/0) as empty ".wh.<name>" files,
//   - opaque directories (trusted.overlay.opaque=y) as the directory followed
//     by an empty ".wh..wh..opq" file,
//   - hard links within the layer as tar links to the first name,
//   - symlinks, device nodes and FIFOs as themselves, sockets left out,
//   - modes (setuid, setgid, sticky included), numeric owners, extended
//     attributes and modification times (truncated to seconds, as Docker
//     does) kept; user and group names are not looked up.
//
// This is the tar Docker's overlay2 driver produces for a container's changes,
// read from the upper directory alone, so no view of the lower layers has to
// be mounted. containerd's ChangeWriter with continuity's DiffDirChanges needs
// such a view to tell additions from modifications and keeps only the
// security.capability attribute, which is why this walk is written here.
//
// The upper directory must not change while Diff runs (the sandbox is stopped
// first). A name that starts with ".wh." cannot be represented in a layer and
// is reported as INVALID_ARGUMENT, as are overlay redirects and metacopy files
// (the snapshot store mounts with both turned off).
func Diff(ctx context.Context, upperDir string, w io.Writer) error {
	root, err := os.OpenRoot(upperDir)
	if err != nil {
		return fmt.Errorf("opening upper directory: %w", err)
	}
	defer root.Close()

	rootDir, err := os.Open(upperDir)
	if err != nil {
		return fmt.Errorf("opening upper directory: %w", err)
	}
	defer rootDir.Close()

	bw := bufio.NewWriterSize(w, copyBufferSize)
	d := &differ{
		root:    root,
		rootDir: rootDir,
		dir:     upperDir,
		tw:      tar.NewWriter(bw),
		bw:      bw,
		links:   map[inode]string{},
		buf:     make([]byte, copyBufferSize),
	}
	err = filepath.WalkDir(upperDir, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(upperDir, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		return d.add(filepath.ToSlash(rel))
	})
	if err != nil {
		return err
	}
	if err := d.tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

type inode struct{ dev, ino uint64 }

type differ struct {
	root      *os.Root
	rootDir   *os.File // the upper directory, for openat2
	noOpenat2 bool
	dir       string
	tw        *tar.Writer
	bw        *bufio.Writer
	links     map[inode]string
	buf       []byte
}

func (d *differ) add(name string) error {
	full := filepath.Join(d.dir, name)
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: full, Err: err}
	}
	base := filepath.Base(name)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return errdefs.InvalidArgument("%q: a name starting with %q cannot be represented in an image layer", "/"+name, whiteoutPrefix)
	}

	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, 0),
	}
	xattrs, err := listXattrs(full)
	if err != nil {
		return err
	}
	opaque := false
	for _, k := range overlayXattrPrefixes {
		if v, ok := xattrs[k+"opaque"]; ok && v == "y" {
			opaque = true
		}
		if _, ok := xattrs[k+"redirect"]; ok {
			return errdefs.InvalidArgument("%q: overlay redirect found; the upper directory must come from a mount with redirect_dir=off", "/"+name)
		}
		if _, ok := xattrs[k+"metacopy"]; ok {
			return errdefs.InvalidArgument("%q: overlay metacopy file found; the upper directory must come from a mount with metacopy=off", "/"+name)
		}
	}
	for k := range xattrs {
		for _, p := range overlayXattrPrefixes {
			if strings.HasPrefix(k, p) {
				delete(xattrs, k)
			}
		}
	}
	if len(xattrs) > 0 {
		hdr.PAXRecords = make(map[string]string, len(xattrs))
		for k, v := range xattrs {
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}

	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case unix.S_IFLNK:
		target, err := os.Readlink(full)
		if err != nil {
			return err
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = target
	case unix.S_IFCHR, unix.S_IFBLK:
		if st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 {
			// An overlay whiteout: the name was deleted from a lower layer.
			hdr.Name = pathJoin(filepath.Dir(name), whiteoutPrefix+base)
			hdr.Typeflag = tar.TypeReg
			hdr.Mode = 0o600
			hdr.PAXRecords = nil
			return d.tw.WriteHeader(hdr)
		}
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor = int64(unix.Major(st.Rdev))
		hdr.Devminor = int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	case unix.S_IFSOCK:
		return nil // as Docker and containerd: a socket is not content
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = st.Size
	default:
		return fmt.Errorf("%q: unsupported file type %#o", full, st.Mode&unix.S_IFMT)
	}

	if hdr.Typeflag != tar.TypeDir && st.Nlink > 1 {
		key := inode{uint64(st.Dev), st.Ino}
		if first, ok := d.links[key]; ok {
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = first
			hdr.Size = 0
		} else {
			d.links[key] = name
		}
	}

	if err := d.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing tar header for %q: %w", name, err)
	}
	if opaque {
		wo := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     pathJoin(name, whiteoutOpaqueDir),
			Mode:     hdr.Mode & 0o777,
			Uid:      hdr.Uid,
			Gid:      hdr.Gid,
			ModTime:  hdr.ModTime,
		}
		if err := d.tw.WriteHeader(wo); err != nil {
			return fmt.Errorf("writing opaque marker for %q: %w", name, err)
		}
	}
	if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
		return d.copyFile(name, hdr.Size)
	}
	return nil
}

// copyFile copies exactly size bytes of the regular file name into the tar.
// The file is opened with one openat2 resolving inside the upper directory
// and refusing a symlink in the last component: os.Root would walk the path
// one openat per component, which dominated Diff for trees of small files.
func (d *differ) copyFile(name string, size int64) error {
	fd, err := d.open(name)
	if err != nil {
		return fmt.Errorf("opening %q for the layer: %w", name, err)
	}
	defer unix.Close(fd)
	if size >= copyBufferSize/4 {
		// A large file goes from the read buffer straight to w.
		if err := d.bw.Flush(); err != nil {
			return err
		}
	}
	var n int64
	for n < size {
		chunk := d.buf[:min(int64(len(d.buf)), size-n)]
		k, err := unix.Read(fd, chunk)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %q for the layer: %w", name, err)
		}
		if k == 0 {
			return fmt.Errorf("copying %q into the layer: file shrank from %d to %d bytes while it was read", name, size, n)
		}
		if _, err := d.tw.Write(chunk[:k]); err != nil {
			return fmt.Errorf("copying %q into the layer: %w", name, err)
		}
		n += int64(k)
	}
	return nil
}

// open opens name read-only, resolved inside the upper directory.
func (d *differ) open(name string) (int, error) {
	if !d.noOpenat2 {
		fd, err := unix.Openat2(int(d.rootDir.Fd()), name, &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
		})
		if !errors.Is(err, unix.ENOSYS) {
			return fd, err
		}
		d.noOpenat2 = true // Linux before 5.6
	}
	f, err := d.root.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, err
	}
	defer f.Close()
	return unix.Dup(int(f.Fd()))
}

// listXattrs returns the extended attributes of path (not following a
// symlink), nil when it has none or the filesystem has no xattr support.
func listXattrs(path string) (map[string]string, error) {
	names := make([]byte, 256)
	for {
		n, err := unix.Llistxattr(path, names)
		if errors.Is(err, unix.ERANGE) {
			names = make([]byte, len(names)*4)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
		}
		names = names[:n]
		break
	}
	if len(names) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	val := make([]byte, 256)
	for _, name := range strings.Split(strings.TrimRight(string(names), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		for {
			n, err := unix.Lgetxattr(path, name, val)
			if errors.Is(err, unix.ERANGE) {
				val = make([]byte, len(val)*4)
				continue
			}
			if errors.Is(err, unix.ENODATA) {
				break
			}
			if err != nil {
				return nil, &os.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
			}
			out[name] = string(val[:n])
			break
		}
	}
	return out, nil
}

func pathJoin(dir, base string) string {
	if dir == "." || dir == "" {
		return base
	}
	return dir + "/" + base
}

// Source writes a layer's uncompressed tar to w, the same bytes at every
// call: the changes of a directory (DirSource), or a tar written from
// elsewhere.
type Source func(ctx context.Context, w io.Writer) error

// DirSource is the layer tar of the changes a directory holds (an overlay
// upper directory, or a committed snapshot's), as Diff writes it.
func DirSource(dir string) Source {
	return func(ctx context.Context, w io.Writer) error { return Diff(ctx, dir, w) }
}

// Open returns a reader of the tar src writes. Closing it stops src and
// waits for it, so nothing src reads is read after Close.
func Open(ctx context.Context, src Source) io.ReadCloser {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(src(ctx, pw))
	}()
	return &pipedTar{PipeReader: pr, done: done}
}

type pipedTar struct {
	*io.PipeReader
	done chan struct{}
}

func (r *pipedTar) Close() error {
	r.PipeReader.CloseWithError(errors.New("layer tar reader closed"))
	<-r.done
	return nil
}

// WriteDiff stores the layer src writes as a gzip layer blob through w:
// src piped into Write. It always closes w.
func WriteDiff(ctx context.Context, w BlobWriter, src Source) (Descriptor, error) {
	r := Open(ctx, src)
	defer r.Close()
	return Write(ctx, w, r)
}

// DiffID computes the diff ID and Docker's diff size of the layer src
// writes, without compressing or storing anything: one pass into sha256,
// several times faster than WriteDiff. With it a build can commit a step's
// snapshot (whose chain ID needs the diff ID) and go on with the next step
// while the layer is compressed and uploaded from the committed directory,
// which yields the same diff ID because a Source writes the same bytes at
// every call.
func DiffID(ctx context.Context, src Source) (Unpacked, error) {
	r := Open(ctx, src)
	defer r.Close()
	return ReadDiffID(ctx, r)
}

// ReadDiffID reads a layer tar to its end and returns its diff ID and
// Docker's diff size, as DiffID does for a directory (INVALID_ARGUMENT for
// a stream that is not a tar archive).
func ReadDiffID(ctx context.Context, tarStream io.Reader) (Unpacked, error) {
	d := digest.SHA256.Digester()
	size, err := copyTar(ctx, d.Hash(), tarStream, nil)
	if err != nil {
		return Unpacked{}, err
	}
	return Unpacked{DiffID: d.Digest(), DiffSize: size}, nil
}
