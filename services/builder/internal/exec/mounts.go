package exec

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/cachemount"
	"github.com/strata-build/strata/services/builder/internal/copier"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// CacheMounts holds the directories of RUN --mount=type=cache
// (cachemount.Store is it).
type CacheMounts interface {
	// Acquire returns the directory of a cache mount and the function
	// that gives it back once the step ended; a locked one waits for the
	// other steps using its id, or for ctx to end.
	Acquire(ctx context.Context, sp cachemount.Spec) (dir string, release func(), err error)
}

// stepMounts prepares a RUN step's --mount options: a cache's directory,
// a tmpfs, a bind mount's source (a stage's or an image's root filesystem
// mounted apart, or the context's files under the source copied into a
// scratch mount), in target order so that a mount inside another comes
// after it. release gives back everything they hold: a bind mount's writes
// (rw) go with it.
func (r *run) stepMounts(ctx context.Context, st *plan.Step) (_ []specs.Mount, _ func(), retErr error) {
	var releases []func()
	// Not the named result, which an error return sets to nil before the
	// deferred call runs.
	release := func() {
		for i := len(releases) - 1; i >= 0; i-- {
			releases[i]()
		}
	}
	defer func() {
		if retErr != nil {
			release()
		}
	}()
	// Cache directories first, in id order, so that two steps locking the
	// same ids never wait for each other. Mounts of one id (and from=) in
	// a step share its directory whatever their sharing, as BuildKit's
	// exec op shares them: a second locked one would wait for the step
	// itself.
	caches := map[*plan.Mount]string{}
	acquired := map[[2]string]string{}
	byID := slices.Clone(st.Mounts)
	slices.SortStableFunc(byID, func(a, b *plan.Mount) int { return strings.Compare(a.CacheID, b.CacheID) })
	for _, m := range byID {
		if m.Type != instructions.MountTypeCache {
			continue
		}
		what := fmt.Sprintf("Dockerfile:%d: RUN --mount=type=cache,target=%s", st.Line, m.Target)
		if r.d.CacheMounts == nil {
			return nil, nil, errdefs.Unimplemented("%s: this builder keeps no cache mounts", what)
		}
		uid, gid := m.CacheOwner()
		sp := cachemount.Spec{
			ID: m.CacheID, Sharing: cachemount.Sharing(m.CacheSharing), Mode: fs.FileMode(m.CacheMode()), UID: uid, GID: gid,
		}
		if m.FromStage != nil || m.FromImage != nil {
			sp.Base, sp.Seed = r.cacheSeed(ctx, m)
		}
		if m.Source == "/" && (m.Mode != nil || m.UID != nil || m.GID != nil) {
			// BuildKit makes such a cache's directory in a state of its
			// own, which is part of the cache's key: the id with another
			// mode or owner, or with none, is another cache.
			sp.Base += fmt.Sprintf(" dir %o %d:%d", sp.Mode, uid, gid)
		}
		if dir, ok := acquired[[2]string{sp.ID, sp.Base}]; ok {
			caches[m] = dir
			continue
		}
		dir, done, err := r.d.CacheMounts.Acquire(ctx, sp)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", what, err)
		}
		releases = append(releases, done)
		caches[m] = dir
		acquired[[2]string{sp.ID, sp.Base}] = dir
	}
	ms := slices.Clone(st.Mounts)
	slices.SortStableFunc(ms, func(a, b *plan.Mount) int { return strings.Compare(a.Target, b.Target) })
	var out []specs.Mount
	for _, m := range ms {
		what := fmt.Sprintf("Dockerfile:%d: RUN --mount=type=%s,target=%s", st.Line, m.Type, m.Target)
		opts := []string{"rbind", "rprivate"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		switch m.Type {
		case instructions.MountTypeCache:
			out = append(out, specs.Mount{Destination: m.Target, Type: "bind", Source: caches[m], Options: opts})
		case instructions.MountTypeTmpfs:
			o := []string{"nosuid"}
			if m.ReadOnly {
				o = append(o, "ro")
			}
			if m.SizeLimit > 0 {
				o = append(o, fmt.Sprintf("size=%d", m.SizeLimit))
			}
			out = append(out, specs.Mount{Destination: m.Target, Type: "tmpfs", Source: "tmpfs", Options: o})
		case instructions.MountTypeBind:
			src, done, err := r.bindSource(ctx, m)
			if err != nil {
				return nil, nil, errdefs.New(errdefs.KindOf(err), "%s: %w", what, err)
			}
			releases = append(releases, done)
			out = append(out, specs.Mount{Destination: m.Target, Type: "bind", Source: src, Options: opts})
		default:
			return nil, nil, errdefs.InvalidArgument("Dockerfile:%d: RUN --mount=type=%s is not supported by this builder", st.Line, m.Type)
		}
	}
	return out, release, nil
}

// cacheSeed returns what a cache mount's from= and source= fill its
// directory with when it is created: the files under the source in the
// stage's or image's root filesystem, with their owners and modes, and the
// source directory's own for the directory (BuildKit's cache is a
// snapshot of the stage, the source its subpath), unless source is the
// root and mode, uid or gid say otherwise.
func (r *run) cacheSeed(ctx context.Context, m *plan.Mount) (string, func(dir string) error) {
	base := ""
	if m.FromStage != nil {
		base = "stage " + string(m.FromStage.LastKey())
	} else {
		base = "image " + string(m.FromImage.ID())
	}
	return base + " " + m.Source, func(dir string) error {
		layers, err := r.fromLayers(ctx, m)
		if err != nil {
			return err
		}
		src, err := r.mount(ctx, layers, false)
		if err != nil {
			return err
		}
		defer src.Release()
		if _, err := copier.FromRoot(ctx, dir, src.Root(), &plan.Copy{Paths: []string{m.Source}, Dest: "/", DestText: "/", DestDir: true}); err != nil {
			return err
		}
		host, err := securejoin.SecureJoin(src.Root(), m.Source)
		if err != nil {
			return err
		}
		keepRoot := m.Source != "/" || (m.Mode == nil && m.UID == nil && m.GID == nil)
		return keepOwners(dir, host, keepRoot)
	}
}

// keepOwners gives the tree copied from src into dst the owners and modes
// it has in src (the copier gives COPY's: root's), dst itself too when
// root is set. It changes only what src and dst both hold, and follows
// no symlink.
func keepOwners(dst, src string, root bool) error {
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		return err
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || (rel == "." && !root) {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		target := filepath.Join(dst, rel)
		got, err := os.Lstat(target)
		if err != nil || got.Mode().Type() != fi.Mode().Type() {
			return nil
		}
		// Chown before chmod: chown clears the setuid and setgid bits.
		if err := os.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return nil
		}
		return os.Chmod(target, fi.Mode())
	})
}

// fromLayers are the layers of a mount's from= stage or image; none for
// the context.
func (r *run) fromLayers(ctx context.Context, m *plan.Mount) ([]image.Layer, error) {
	switch {
	case m.FromStage != nil:
		from := r.result(m.FromStage)
		if err := r.load(ctx, &from); err != nil {
			return nil, err
		}
		return from.layers, nil
	case m.FromImage != nil:
		return m.FromImage.Layers(), nil
	}
	return nil, nil
}

// bindSource returns the host path a bind mount shows, in a mount of its
// own that release unmounts (with whatever a rw mount's step wrote).
func (r *run) bindSource(ctx context.Context, m *plan.Mount) (string, func(), error) {
	layers, err := r.fromLayers(ctx, m)
	if err != nil {
		return "", nil, err
	}
	src, err := r.mount(ctx, layers, false)
	if err != nil {
		return "", nil, err
	}
	done := func() { src.Release() }
	if m.FromStage == nil && m.FromImage == nil {
		// The build context: its files under the source, copied into an
		// empty root as COPY would copy them.
		if r.o.ContextContents != nil {
			if err := r.o.ContextContents(ctx); err != nil {
				done()
				return "", nil, fmt.Errorf("receiving the build context: %w", err)
			}
		}
		e := m.ContextEntry
		cp := &plan.Copy{Dest: "/", DestText: "/", DestDir: true, Sources: []plan.Source{{Src: m.Source, Entry: e}}}
		if err := copier.IntoRoot(ctx, src.Root(), cp, r.copyOptions()); err != nil {
			done()
			return "", nil, err
		}
		if !e.Mode.IsDir() {
			return filepath.Join(src.Root(), path.Base(e.Path)), done, nil
		}
		return src.Root(), done, nil
	}
	host, err := securejoin.SecureJoin(src.Root(), m.Source)
	if err != nil {
		done()
		return "", nil, err
	}
	if _, err := os.Stat(host); err != nil {
		done()
		return "", nil, errdefs.NotFound("source %s: not found in %s", m.Source, m.From)
	}
	return host, done, nil
}
