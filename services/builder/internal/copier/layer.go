package copier

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// A COPY from the build context whose files land where the parent's root
// filesystem has nothing yet (a new /app, or an empty WORKDIR), or onto
// what the general way would replace or merge into (a file or symlink the
// COPY's file or symlink replaces, a directory the COPY's directory is
// copied over: `COPY deps/ ./deps/` then `COPY . .`), has a layer that
// follows from the context alone: its files, made by the COPY; the
// directories it copies over, with the mode, owner and mtime the COPY
// gives them (the general way's chown, chmod and utimes copy them up); and
// the directories above them that the COPY creates or that overlay copies
// up because something is created inside them. Nothing is removed from
// the lower layers, so no whiteout is needed: a replaced file is the new
// file, a directory copied over keeps what it held. Such a layer is
// written as a tar straight from the context store — once for its diff ID,
// once more, in the background, compressed into the blob store — and no
// file is created for it unless a later step mounts it (its tar is then
// unpacked like any layer). Creating thousands of small files is what a
// large COPY into a mount spends its time on.
//
// Anything else — a destination through a symlink, a file where the COPY
// has a directory or the other way round, sources that overlap, ADD's
// archives and downloads, heredocs, --from, extended attributes on a
// directory the layer holds from below, a COPY that makes nothing new (it
// may change nothing, which Docker records as an empty layer) — takes the
// general way: the files are copied into the mount and the upper directory
// becomes the layer.

// Layer is the layer of a COPY written from the context store.
type Layer struct {
	store   *buildctx.Store
	entries []layerEntry
	// dirs are the directories the layer holds, by absolute path.
	dirs map[string]bool
}

// layerEntry is one entry of the layer tar: its header as layer.Diff would
// write it from an upper directory, and a regular file's content.
type layerEntry struct {
	path   string // absolute
	hdr    tar.Header
	digest digest.Digest
}

// HasDir reports whether the layer holds dir and every directory above it,
// so that dir is a directory, not a symlink, over any parent layers.
func (cl *Layer) HasDir(dir string) bool {
	for p := path.Clean("/" + dir); p != "/"; p = path.Dir(p) {
		if !cl.dirs[p] {
			return false
		}
	}
	return true
}

// Write writes the layer tar to w; every call writes the same bytes (it is
// a layer.Source).
func (cl *Layer) Write(ctx context.Context, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	tw := tar.NewWriter(bw)
	buf := make([]byte, 1<<20)
	for i := range cl.entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := &cl.entries[i]
		hdr := e.hdr
		if err := tw.WriteHeader(&hdr); err != nil {
			return fmt.Errorf("writing the layer entry of %s: %w", e.path, err)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
			continue
		}
		f, err := cl.store.Open(e.digest)
		if err != nil {
			return err
		}
		n, err := io.CopyBuffer(tw, io.LimitReader(onlyReader{f}, hdr.Size), buf)
		f.Close()
		if err != nil {
			return fmt.Errorf("writing %s into the layer: %w", e.path, err)
		}
		if n != hdr.Size {
			return fmt.Errorf("writing %s into the layer: its content has %d bytes, not %d", e.path, n, hdr.Size)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// onlyReader hides a reader's other methods, so that io.CopyBuffer uses the
// buffer given.
type onlyReader struct{ io.Reader }

// pathState is what a path of the parent's root filesystem is.
type pathState int

const (
	stateAbsent pathState = iota // nothing there, nor at a directory above it
	stateDir                     // a directory, and so is every one above it
	stateOther                   // a symlink or a file on the way, or there
)

// layerPlanner works out a Layer over a mounted root.
type layerPlanner struct {
	// root is the parent's root filesystem; every path is looked up in it
	// with os.Root, so nothing resolves outside it.
	root  *os.Root
	cp    *plan.Copy
	own   owner
	now   time.Time
	store *buildctx.Store

	states  map[string]pathState
	created map[string]*layerEntry
	order   []string // created paths, in the order they were made
	// touched are the existing directories that get an entry created
	// directly inside them.
	touched map[string]bool
	// below are the created paths where the parent's root has something
	// already: a directory copied over, or a file or symlink replaced.
	below map[string]bool
	// fresh says that an entry lands where the root has nothing, so that
	// the layer changes the root.
	fresh bool
}

// errNotFromContext stops planning a COPY's layer from the context: it is
// not one this way handles, and takes the general one.
var errNotFromContext = errors.New("the COPY's layer cannot be written from the context alone")

// ContextLayer returns the layer of a COPY from the context, written from
// the context store alone, when it can be, and nil when the COPY must go
// into the mount at root (the general way, IntoRoot): a COPY this way does
// not handle, and one it fails at. now is the time the directories it
// creates get.
func ContextLayer(root string, cp *plan.Copy, o Options, now time.Time) *Layer {
	if cp.FromStage != nil || cp.FromImage != nil {
		return nil
	}
	for _, f := range cp.Sources {
		if f.Entry == nil || f.Unpack || f.Name != "" || f.Data != nil {
			return nil
		}
	}
	own, err := ownerOf(root, cp)
	if err != nil {
		return nil // the general way reports it
	}
	rootDir, err := os.OpenRoot(root)
	if err != nil {
		return nil // as any error below
	}
	defer rootDir.Close()
	p := &layerPlanner{
		root: rootDir, cp: cp, now: time.Unix(now.Unix(), 0), store: o.Store, own: own.or(owner{}),
		states: map[string]pathState{"/": stateDir}, created: map[string]*layerEntry{}, touched: map[string]bool{},
		below: map[string]bool{},
	}
	cl, err := p.plan(o.Context)
	if err != nil {
		// A COPY this way does not handle (errNotFromContext), or one it
		// fails at, takes the general way, which carries it out or says
		// what is wrong with which source and line.
		return nil
	}
	return cl
}

// plan works out the layer, or returns an error matching errNotFromContext
// when the COPY is not one the context alone makes.
func (p *layerPlanner) plan(bctx *buildctx.Context) (*Layer, error) {
	if err := p.entries(bctx); err != nil {
		return nil, err
	}
	if !p.fresh {
		// Everything lands on something: whether the COPY changes the
		// root at all (an empty layer if not) is the general way's to say.
		return nil, errNotFromContext
	}
	return p.layer()
}

func (p *layerPlanner) entries(bctx *buildctx.Context) error {
	destIsDir := func() (bool, error) {
		st, err := p.state(path.Clean(p.cp.Dest))
		if st == stateOther {
			// A symlink there may lead to a directory, which the general
			// way's file goes into.
			return false, errNotFromContext
		}
		return st == stateDir, err
	}
	for _, f := range p.cp.Sources {
		if f.Entry.Mode.IsDir() {
			if err := p.mkdirAll(path.Clean(p.cp.Dest)); err != nil {
				return err
			}
		}
		ts, err := targets(f.Tree(bctx), p.cp, f, destIsDir)
		if err != nil {
			return err
		}
		for _, t := range ts {
			if !f.Entry.Mode.IsDir() {
				if err := p.mkdirAll(path.Dir(path.Clean(t.dst))); err != nil {
					return err
				}
			}
			if err := p.add(path.Clean(t.dst), t.e); err != nil {
				return err
			}
		}
	}
	return nil
}

// state looks p up in the root, one component at a time, never following
// a symlink.
func (p *layerPlanner) state(q string) (pathState, error) {
	if s, ok := p.states[q]; ok {
		return s, nil
	}
	parent, err := p.state(path.Dir(q))
	if err != nil {
		return 0, err
	}
	s := parent
	if parent == stateDir {
		var fi os.FileInfo
		fi, err = p.root.Lstat(strings.TrimPrefix(q, "/"))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			s, err = stateAbsent, nil
		case err != nil:
			return 0, err
		case fi.IsDir():
			s = stateDir
		default:
			s = stateOther
		}
	}
	p.states[q] = s
	return s, nil
}

// mkdirAll makes dir and the directories above it that do not exist, as
// the general way's mkdirAll: 0755, owned by the --chown owner or root.
func (p *layerPlanner) mkdirAll(dir string) error {
	if dir == "/" {
		return nil
	}
	if e, ok := p.created[dir]; ok {
		if e.hdr.Typeflag != tar.TypeDir { // as the general way, which refuses it
			return errNotFromContext
		}
		return nil
	}
	st, err := p.state(dir)
	if err != nil {
		return err
	}
	switch st {
	case stateDir:
		return nil
	case stateOther:
		return errNotFromContext
	}
	if err := p.mkdirAll(path.Dir(dir)); err != nil {
		return err
	}
	return p.create(dir, tar.Header{Typeflag: tar.TypeDir, Mode: tarMode(p.cp.DirMode()), ModTime: p.now}, "")
}

// add makes the context entry x at dst, as the general way's entry does.
func (p *layerPlanner) add(dst string, x *buildctx.Entry) error {
	mtime := time.Unix(mtimeOf(x).Unix(), 0) // tar headers keep seconds
	switch {
	case x.Mode.IsDir():
		if x.ModTimeNano == 0 {
			mtime = p.now // a directory the client's list only implies
		}
		return p.create(dst, tar.Header{Typeflag: tar.TypeDir, Mode: tarMode(p.mode(x.Mode)), ModTime: mtime}, "")
	case x.Mode&fs.ModeSymlink != 0:
		return p.create(dst, tar.Header{Typeflag: tar.TypeSymlink, Mode: 0o777, Linkname: x.LinkTarget, ModTime: mtime}, "")
	case x.Mode.IsRegular():
		size, err := p.store.Size(x.Digest)
		if err != nil {
			return err
		}
		return p.create(dst, tar.Header{Typeflag: tar.TypeReg, Mode: tarMode(p.mode(x.Mode)), Size: size, ModTime: mtime}, x.Digest)
	default:
		return errNotFromContext
	}
}

func (p *layerPlanner) mode(m fs.FileMode) fs.FileMode { return p.cp.Mode(m) }

// tarMode is m's permission and special bits as a tar header has them.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// create records an entry the COPY makes at dst: where nothing is yet; a
// directory over a directory, which the general way copies up and gives
// the COPY's mode, owner and mtime; or a file or symlink over a file or
// symlink, which the general way removes and makes anew. Its parent is a
// directory (mkdirAll made sure).
func (p *layerPlanner) create(dst string, hdr tar.Header, d digest.Digest) error {
	if _, dup := p.created[dst]; dup {
		return errNotFromContext // two sources meet: the general way decides
	}
	if strings.HasPrefix(path.Base(dst), ".wh.") {
		return errNotFromContext // not representable; the general way refuses it
	}
	parent := path.Dir(dst)
	if _, made := p.created[parent]; !made || p.below[parent] {
		st, err := p.state(dst)
		if err != nil {
			return err
		}
		isDir := hdr.Typeflag == tar.TypeDir
		switch {
		case st == stateAbsent:
			p.fresh = true
		case st == stateDir && isDir, st == stateOther && !isDir:
			p.below[dst] = true
		default:
			// A directory onto a file or the other way round: the general
			// way refuses it, naming the path.
			return errNotFromContext
		}
		if !made && (st == stateAbsent || !isDir) && parent != "/" {
			p.touched[parent] = true
		}
	} else {
		p.fresh = true
	}
	hdr.Uid, hdr.Gid = p.own.uid, p.own.gid
	hdr.Name = strings.TrimPrefix(dst, "/")
	if hdr.Typeflag == tar.TypeDir {
		hdr.Name += "/"
	}
	p.created[dst] = &layerEntry{path: dst, hdr: hdr, digest: d}
	p.order = append(p.order, dst)
	return nil
}

// layer adds the existing directories above what was created (overlay
// copies them up: same owner and mode, and a new mtime where an entry was
// created directly inside) and orders the entries as layer.Diff walks an
// upper directory.
func (p *layerPlanner) layer() (*Layer, error) {
	cl := &Layer{store: p.store, dirs: map[string]bool{}}
	all := map[string]*layerEntry{}
	for _, q := range p.order {
		e := p.created[q]
		all[q] = e
		if e.hdr.Typeflag == tar.TypeDir {
			cl.dirs[q] = true
			if p.below[q] {
				if _, err := p.existingDir(q); err != nil {
					return nil, err
				}
			}
		}
		for a := path.Dir(q); a != "/"; a = path.Dir(a) {
			if _, ok := all[a]; ok {
				continue
			}
			if _, ok := p.created[a]; ok {
				continue
			}
			e, err := p.copiedUp(a)
			if err != nil {
				return nil, err
			}
			all[a] = e
			cl.dirs[a] = true
		}
	}
	paths := make([]string, 0, len(all))
	for q := range all {
		paths = append(paths, q)
	}
	slices.SortFunc(paths, walkOrder)
	for _, q := range paths {
		cl.entries = append(cl.entries, *all[q])
	}
	return cl, nil
}

// copiedUp is the entry of an existing directory that overlay copies up.
func (p *layerPlanner) copiedUp(dir string) (*layerEntry, error) {
	st, err := p.existingDir(dir)
	if err != nil {
		return nil, err
	}
	mtime := time.Unix(st.Mtim.Sec, 0)
	if p.touched[dir] {
		mtime = p.now
	}
	return &layerEntry{path: dir, hdr: tar.Header{
		Typeflag: tar.TypeDir, Name: strings.TrimPrefix(dir, "/") + "/", Mode: int64(st.Mode & 0o7777),
		Uid: int(st.Uid), Gid: int(st.Gid), ModTime: mtime,
	}}, nil
}

// existingDir stats a directory of the root that the layer holds because
// overlay copies it up, failing with errNotFromContext when it has
// extended attributes: copy-up keeps them, and the general way has them.
func (p *layerPlanner) existingDir(dir string) (*unix.Stat_t, error) {
	f, err := p.root.OpenFile(strings.TrimPrefix(dir, "/"), os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: dir, Err: err}
	}
	if n, err := unix.Flistxattr(int(f.Fd()), nil); err != nil && !errors.Is(err, unix.ENOTSUP) || n > 0 {
		return nil, errNotFromContext
	}
	return &st, nil
}

// walkOrder orders absolute paths as filepath.WalkDir visits them: by
// name within a directory, each directory before what it holds.
func walkOrder(a, b string) int {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if c := strings.Compare(as[i], bs[i]); c != 0 {
			return c
		}
	}
	return len(as) - len(bs)
}
