// Package copier carries out COPY and ADD, two ways over one core.
//
// The general way copies the sources into a step's mounted root filesystem
// (IntoRoot, FromRoot for COPY --from): the mount's upper directory then
// becomes the layer. The fast way writes the layer of a COPY from the
// build context as a tar straight from the context store (ContextLayer),
// when the COPY's files land where the parent's root has nothing yet, or
// onto directories, files and symlinks the general way would merge into or
// replace (layer.go says which).
// Both take from this file where each entry lands (targets), its mode
// (plan.Copy.Mode), its owner (ownerOf), its mtime (mtimeOf) and the directories
// made above it (plan.Copy.DirMode, owned by the COPY's owner), so that they make the
// same layer but for what a mount decides itself: directories' mtimes (a
// mount's are when files were created in them) and the opaque markers
// overlay puts on directories it creates. The both-ways tests in
// internal/build (TestCopyFromContextMakesTheLayerCopyingWould,
// TestCopyFastPathFallsBackToTheGeneralPath) compare every other header
// field and every byte of content.
//
// Paths inside a root filesystem are always resolved in-root (securejoin,
// os.Root): a symlink a lower layer planted (`RUN ln -s / /app`, then `COPY
// f /app/x`) resolves inside the root, never onto the builder's host.
package copier

import (
	"path"
	"strings"
	"time"

	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/plan"
	"github.com/strata-build/strata/services/builder/internal/rootfs"
)

// Options are what COPY and ADD read their sources with.
type Options struct {
	// Store holds the context's file contents (and ADD's downloads).
	Store *buildctx.Store
	// Context is the build context the sources name.
	Context *buildctx.Context
	// Archives bounds the decompression of ADD's local archives, as
	// layers are bounded.
	Archives compression.Limits
}

// owner is a uid/gid pair.
type owner struct{ uid, gid int }

// ownerOf is who owns what cp creates: the --chown owner, looked up in the
// root's /etc/passwd and /etc/group as Docker does, or nil when cp has no
// --chown (root for context files, the source's owner for COPY --from).
// An error names the flag.
func ownerOf(root string, cp *plan.Copy) (*owner, error) {
	if cp.Chown == "" {
		return nil, nil
	}
	uid, gid, err := rootfs.LookupChown(root, cp.Chown)
	if err != nil {
		return nil, errdefs.InvalidArgument("--chown=%s: %v", cp.Chown, err)
	}
	return &owner{uid, gid}, nil
}

// or is o, or def when o is nil.
func (o *owner) or(def owner) owner {
	if o != nil {
		return *o
	}
	return def
}

// mtimeOf is the mtime a context entry keeps.
func mtimeOf(e *buildctx.Entry) time.Time { return time.Unix(0, e.ModTimeNano) }

// target is where one context entry lands.
type target struct {
	dst string // absolute, in the root
	e   *buildctx.Entry
}

// targets lists where the entries of the context source f land, in the
// context's walk order: a directory's entries (not the directory itself)
// below cp.Dest that --exclude keeps, or the file at its destination. destIsDir reports whether
// cp.Dest is a directory in the root; it is asked only for a single file.
func targets(bctx *buildctx.Context, cp *plan.Copy, f plan.Source, destIsDir func() (bool, error)) ([]target, error) {
	e := f.Entry
	if e.Mode.IsDir() {
		var all []*buildctx.Entry
		if err := bctx.Walk(e.Path, func(x *buildctx.Entry) error { all = append(all, x); return nil }); err != nil {
			return nil, err
		}
		all = plan.Filter(cp.Excluder, f.Include, all, func(x *buildctx.Entry) (string, bool) {
			if x == e {
				return "", true
			}
			return relTo(e.Path, x.Path), x.Mode.IsDir()
		})
		var out []target
		for _, x := range all {
			if x != e {
				out = append(out, target{dst: path.Join(cp.Dest, relTo(e.Path, x.Path)), e: x})
			}
		}
		return out, nil
	}
	name := path.Base(e.Path)
	if f.Name != "" {
		name = f.Name
	}
	isDir := false
	if !cp.DestDir {
		var err error
		if isDir, err = destIsDir(); err != nil {
			return nil, err
		}
	}
	return []target{{dst: destFor(cp, name, isDir), e: e}}, nil
}

// destFor returns the destination of a single source named base.
func destFor(cp *plan.Copy, base string, rootDirExists bool) string {
	if cp.DestDir || rootDirExists {
		return path.Join(cp.Dest, base)
	}
	return cp.Dest
}

// relTo returns p relative to the context directory base.
func relTo(base, p string) string {
	if base == "." {
		return p
	}
	return strings.TrimPrefix(strings.TrimPrefix(p, base), "/")
}

// name is the instruction's name, for messages.
func name(cp *plan.Copy) string {
	if cp.Add {
		return "ADD"
	}
	return "COPY"
}
