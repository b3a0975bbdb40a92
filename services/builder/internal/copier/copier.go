package copier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/layer"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// IntoRoot copies cp's sources from the build context (or its heredocs
// and downloads) into the mounted root filesystem root, extracting ADD's
// local archives. Errors name the source.
func IntoRoot(ctx context.Context, root string, cp *plan.Copy, o Options) error {
	own, err := ownerOf(root, cp)
	if err != nil {
		return err
	}
	c := &copier{root: root, cp: cp, own: own, store: o.Store, limits: o.Archives, ctx: ctx}
	for _, f := range cp.Sources {
		if err := c.fromContext(cp, f, f.Tree(o.Context)); err != nil {
			return errdefs.New(errdefs.KindOf(err), "%s %s: %w", name(cp), f.Src, err)
		}
	}
	return nil
}

// FromRoot copies cp's sources out of another image's root filesystem
// srcRoot into root (COPY --from), keeping their owners unless --chown is
// given, as Docker does. It returns the history hash of what it copied.
func FromRoot(ctx context.Context, root, srcRoot string, cp *plan.Copy) (string, error) {
	own, err := ownerOf(root, cp)
	if err != nil {
		return "", err
	}
	c := &copier{root: root, cp: cp, own: own, ctx: ctx}
	return c.fromRoot(srcRoot, cp)
}

// MkdirAll creates dir and its missing parents in the root filesystem
// root, owned by root and 0755 as Docker creates them (WORKDIR, the mount
// points of volumes).
func MkdirAll(root, dir string) error {
	c := &copier{root: root}
	_, err := c.mkdirAll(dir)
	return err
}

type copier struct {
	ctx    context.Context
	root   string
	cp     *plan.Copy // its --chmod; nil for none
	own    *owner
	store  *buildctx.Store
	limits compression.Limits

	// made remembers the directories this copy made or found, so that
	// thousands of files in a few directories do not make their parents
	// again each time. It holds in-root paths only: a host path is always
	// resolved again with securejoin, never taken from a cache.
	mu   sync.Mutex
	made map[string]bool
}

// resolve returns the host path of an absolute path inside the root.
func (c *copier) resolve(p string) (string, error) {
	return securejoin.SecureJoin(c.root, p)
}

// mkdirAll creates a directory and its missing parents inside the root,
// 0755 and owned by the --chown owner (root otherwise), as Docker creates
// them.
func (c *copier) mkdirAll(p string) (string, error) {
	p = path.Clean(p)
	c.mu.Lock()
	made := c.made[p]
	c.mu.Unlock()
	if made {
		return c.resolve(p)
	}
	host, err := c.mkdirAllUncached(p)
	if err == nil {
		c.mu.Lock()
		if c.made == nil {
			c.made = map[string]bool{}
		}
		c.made[p] = true
		c.mu.Unlock()
	}
	return host, err
}

func (c *copier) mkdirAllUncached(p string) (string, error) {
	host, err := c.resolve(p)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(host); err == nil {
		if !fi.IsDir() {
			return "", errdefs.InvalidArgument("%s exists and is not a directory", p)
		}
		return host, nil
	}
	// The directories to make are those of the resolved path: a symlink
	// on the way (planted by an earlier step or the base image) may lead
	// where nothing exists yet, and what it leads to is made inside the
	// root, as Docker makes it. Past the first missing element the resolved
	// path has no symlinks to follow.
	rel, err := filepath.Rel(c.root, host)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s resolves to %s, outside the root %s", p, host, c.root) // securejoin never does this
	}
	resolved := path.Join("/", filepath.ToSlash(rel))
	if parent := path.Dir(resolved); parent != resolved {
		if _, err := c.mkdirAll(parent); err != nil {
			return "", err
		}
	}
	if host, err = c.resolve(resolved); err != nil {
		return "", err
	}
	mode := c.cp.DirMode()
	if err := os.Mkdir(host, mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	if err := os.Chmod(host, mode); err != nil { // the umask left out
		return "", err
	}
	o := c.own.or(owner{})
	return host, os.Lchown(host, o.uid, o.gid)
}

func (c *copier) isDir(p string) bool {
	host, err := c.resolve(p)
	if err != nil {
		return false
	}
	fi, err := os.Stat(host)
	return err == nil && fi.IsDir()
}

// fromContext copies one source of the context (or a heredoc, or a
// download) into the root.
func (c *copier) fromContext(cp *plan.Copy, f plan.Source, bctx *buildctx.Context) error {
	if f.Entry == nil { // a heredoc
		dst := destFor(cp, path.Base(f.Name), c.isDir(cp.Dest))
		mode := fs.FileMode(0o644)
		return c.writeFile(dst, bytes.NewReader(f.Data), mode, owner{}, time.Now())
	}
	e := f.Entry
	if e.Mode.IsDir() {
		if _, err := c.mkdirAll(cp.Dest); err != nil {
			return err
		}
	} else if f.Unpack {
		if ok, err := c.unpack(cp, e); ok || err != nil {
			return err
		}
	}
	ts, err := targets(bctx, cp, f, func() (bool, error) { return c.isDir(cp.Dest), nil })
	if err != nil {
		return err
	}
	// Directories and symlinks first, in order; then the files, on every
	// core, since creating files is what a large COPY waits on.
	var files []target
	for _, t := range ts {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		if t.e.Mode.IsRegular() {
			files = append(files, t)
			continue
		}
		if err := c.entry(t.dst, t.e); err != nil {
			return err
		}
	}
	return parallel(c.ctx, files, func(t target) error { return c.entry(t.dst, t.e) })
}

// parallel calls fn for every entry on a few goroutines, stopping at the
// first error or when ctx is done.
func parallel[T any](ctx context.Context, entries []T, fn func(T) error) error {
	workers := min(runtime.NumCPU(), 4, len(entries))
	if workers <= 1 {
		for _, e := range entries {
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	}
	next := make(chan T)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range next {
				if err := fn(e); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for _, e := range entries {
		select {
		case next <- e:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// entry writes one context entry at dst: context files belong to root (or
// the --chown owner) in the image, whoever owned them on the client.
func (c *copier) entry(dst string, e *buildctx.Entry) error {
	own := c.own.or(owner{})
	mtime := mtimeOf(e)
	switch {
	case e.Mode.IsDir():
		host, err := c.mkdirAll(dst)
		if err != nil {
			return err
		}
		if err := os.Lchown(host, own.uid, own.gid); err != nil {
			return err
		}
		if err := os.Chmod(host, c.mode(e.Mode)); err != nil {
			return err
		}
		return setMtime(host, mtime)
	case e.Mode&fs.ModeSymlink != 0:
		return c.symlink(dst, e.LinkTarget, own, mtime)
	default:
		f, err := c.store.Open(e.Digest)
		if err != nil {
			return err
		}
		defer f.Close()
		return c.writeFile(dst, f, e.Mode, own, mtime)
	}
}

func (c *copier) mode(m fs.FileMode) fs.FileMode { return c.cp.Mode(m) }

// parentOf creates the parent of dst and returns dst's host path, with the
// last element not resolved (so an existing symlink there is replaced, not
// followed).
func (c *copier) parentOf(dst string) (string, error) {
	parent, err := c.mkdirAll(path.Dir(dst))
	if err != nil {
		return "", err
	}
	base := path.Base(dst)
	if base == "/" || base == "." || base == ".." {
		return "", errdefs.InvalidArgument("cannot write to %s", dst)
	}
	return filepath.Join(parent, base), nil
}

// replace creates the parent of dst and removes what is at dst, unless it
// is a directory (what names the kind of entry copied, for the error). It
// returns dst's host path, its last element not resolved.
func (c *copier) replace(dst, what string) (string, error) {
	host, err := c.parentOf(dst)
	if err != nil {
		return "", err
	}
	if fi, err := os.Lstat(host); err == nil {
		if fi.IsDir() {
			return "", errdefs.InvalidArgument("cannot copy a %s onto the directory %s", what, dst)
		}
		if err := os.Remove(host); err != nil {
			return "", err
		}
	}
	return host, nil
}

func (c *copier) writeFile(dst string, r io.Reader, m fs.FileMode, own owner, mtime time.Time) error {
	host, err := c.replace(dst, "file")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(host, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Chown(own.uid, own.gid); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(c.mode(m)); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return setMtime(host, mtime)
}

func (c *copier) symlink(dst, target string, own owner, mtime time.Time) error {
	host, err := c.replace(dst, "symlink")
	if err != nil {
		return err
	}
	if err := os.Symlink(target, host); err != nil {
		return err
	}
	if err := os.Lchown(host, own.uid, own.gid); err != nil {
		return err
	}
	return setMtime(host, mtime)
}

func setMtime(host string, t time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, host, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// fromRoot copies sources out of another image's root filesystem (COPY
// --from), keeping their owners unless --chown is given, as Docker does. It
// returns the history hash of what it copied.
func (c *copier) fromRoot(srcRoot string, cp *plan.Copy) (string, error) {
	if cp.Parents {
		return c.parentsFromRoot(srcRoot, cp)
	}
	var hashes []string
	var srcs []string
	for _, s := range cp.Paths {
		if strings.ContainsAny(s, "*?[") {
			matches, err := globIn(srcRoot, s)
			if err != nil {
				return "", err
			}
			if len(matches) == 0 {
				return "", errdefs.NotFound("COPY --from: no source files match %s", s)
			}
			srcs = append(srcs, matches...)
			continue
		}
		srcs = append(srcs, path.Clean("/"+s))
	}
	if len(srcs) > 1 && !cp.DestDir {
		return "", errdefs.InvalidArgument("When using COPY with more than one source file, the destination must be a directory and end with a /")
	}
	for _, s := range srcs {
		host, err := securejoin.SecureJoin(srcRoot, s)
		if err != nil {
			return "", err
		}
		fi, err := os.Lstat(host)
		if err != nil {
			return "", errdefs.NotFound("COPY --from: %s: not found in the source image", s)
		}
		if fi.IsDir() {
			if _, err := c.mkdirAll(cp.Dest); err != nil {
				return "", err
			}
			err = c.hostTree(host, cp, "")
		} else {
			err = c.hostEntry(host, destFor(cp, path.Base(s), c.isDir(cp.Dest)))
		}
		if err != nil {
			return "", err
		}
		h, err := rootHash(srcRoot, s)
		if err != nil {
			return "", err
		}
		hashes = append(hashes, h)
	}
	return combine(hashes), nil
}

// hostTree copies what is under the directory host of a source root (what
// --exclude keeps and include selects) into cp.Dest.
func (c *copier) hostTree(host string, cp *plan.Copy, include string) error {
	type entry struct {
		rel string
		dir bool
	}
	var all []entry
	err := filepath.WalkDir(host, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := c.ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(host, p)
		if rel == "." {
			rel = ""
		}
		all = append(all, entry{filepath.ToSlash(rel), d.IsDir()})
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range plan.Filter(cp.Excluder, include, all, func(e entry) (string, bool) { return e.rel, e.dir }) {
		if e.rel == "" {
			continue
		}
		if err := c.ctx.Err(); err != nil {
			return err
		}
		if err := c.hostEntry(filepath.Join(host, e.rel), path.Join(cp.Dest, e.rel)); err != nil {
			return err
		}
	}
	return nil
}

// parentsFromRoot carries out a COPY --from --parents: each source's
// directory (each match, when it has wildcards) is copied into cp.Dest for
// what its pattern selects. Its history hash covers the sources as written.
func (c *copier) parentsFromRoot(srcRoot string, cp *plan.Copy) (string, error) {
	for _, s := range cp.Paths {
		dir, pattern := plan.SplitParents(s)
		dirs := []string{dir}
		if strings.ContainsAny(dir, "*?[") {
			var err error
			if dirs, err = globIn(srcRoot, dir); err != nil {
				return "", err
			}
		} else if !strings.ContainsAny(pattern, "*?[") {
			host, err := securejoin.SecureJoin(srcRoot, path.Join(dir, pattern))
			if err != nil {
				return "", err
			}
			if _, err := os.Lstat(host); err != nil {
				return "", errdefs.NotFound("COPY --from --parents: %s: not found in the source image", path.Join(dir, pattern))
			}
		}
		for _, d := range dirs {
			host, err := securejoin.SecureJoin(srcRoot, d)
			if err != nil {
				return "", err
			}
			if fi, err := os.Stat(host); err != nil || !fi.IsDir() {
				if len(dirs) > 1 || d != dir {
					continue
				}
				return "", errdefs.NotFound("COPY --from --parents: %s: not a directory in the source image", d)
			}
			if _, err := c.mkdirAll(cp.Dest); err != nil {
				return "", err
			}
			if err := c.hostTree(host, cp, pattern); err != nil {
				return "", err
			}
		}
	}
	return joinHash("multi", cp.Paths), nil
}

// hostEntry copies one file, directory or symlink of a source root to dst.
func (c *copier) hostEntry(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	st, _ := fi.Sys().(*unix.Stat_t)
	own := owner{}
	if st != nil {
		own = owner{int(st.Uid), int(st.Gid)}
	}
	own = c.own.or(own)
	switch {
	case fi.IsDir():
		host, err := c.mkdirAll(dst)
		if err != nil {
			return err
		}
		if err := os.Lchown(host, own.uid, own.gid); err != nil {
			return err
		}
		if err := os.Chmod(host, c.mode(fi.Mode())); err != nil {
			return err
		}
		return setMtime(host, fi.ModTime())
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return c.symlink(dst, target, own, fi.ModTime())
	case fi.Mode().IsRegular():
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		return c.writeFile(dst, f, fi.Mode(), own, fi.ModTime())
	default:
		return errdefs.InvalidArgument("COPY --from: %s is a device or socket, which COPY does not copy", dst)
	}
}

// globIn matches a wildcard pattern against the paths of a root.
func globIn(root, pattern string) ([]string, error) {
	pattern = path.Clean("/" + pattern)
	dir := path.Dir(pattern)
	for strings.ContainsAny(dir, "*?[") {
		dir = path.Dir(dir)
	}
	host, err := securejoin.SecureJoin(root, dir)
	if err != nil {
		return nil, err
	}
	var out []string
	err = filepath.WalkDir(host, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(host, p)
		full := path.Join(dir, filepath.ToSlash(rel))
		if ok, _ := path.Match(pattern, full); ok {
			out = append(out, full)
		}
		return nil
	})
	return out, err
}

// unpack extracts a local archive that ADD names into the destination
// directory, as Docker does for tar archives, plain or compressed. It
// reports false, and does nothing, when the file is not an archive. The
// archive goes through the extractor layers are unpacked with (its names
// and links resolved inside the destination at every entry, never through
// a path an earlier entry planted), with the same bounds.
func (c *copier) unpack(cp *plan.Copy, e *buildctx.Entry) (bool, error) {
	f, err := c.store.Open(e.Digest)
	if err != nil {
		return false, err
	}
	defer f.Close()
	return layer.ExtractInto(c.ctx, f, func() (string, error) { return c.mkdirAll(cp.Dest) }, layer.WithLimits(c.limits))
}
