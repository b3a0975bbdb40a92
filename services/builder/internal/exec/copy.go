package exec

import (
	"context"
	"fmt"
	"time"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/copier"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// copy carries out COPY or ADD cp of step st into a mounted root
// filesystem.
func (r *run) copy(ctx context.Context, st *plan.Step, cp *plan.Copy, m Mount) error {
	if cp.FromStage == nil && cp.FromImage == nil {
		if err := copier.IntoRoot(ctx, m.Root(), cp, r.copyOptions()); err != nil {
			return errdefs.New(errdefs.KindOf(err), "Dockerfile:%d: %w", st.Line, err)
		}
		return nil
	}
	var layers []image.Layer
	if cp.FromStage != nil {
		from := r.result(cp.FromStage)
		if err := r.load(ctx, &from); err != nil {
			return err
		}
		layers = from.layers
	} else {
		layers = cp.FromImage.Layers()
	}
	src, err := r.mount(ctx, layers, false)
	if err != nil {
		return fmt.Errorf("mounting the source of COPY --from: %w", err)
	}
	defer src.Release()
	hash, err := copier.FromRoot(ctx, m.Root(), src.Root(), cp)
	if err != nil {
		return errdefs.New(errdefs.KindOf(err), "Dockerfile:%d: %w", st.Line, err)
	}
	r.setCopyCmd(st, hash)
	return nil
}

func (r *run) copyOptions() copier.Options {
	return copier.Options{Store: r.d.Contexts, Context: r.o.Context, Archives: r.d.Archives}
}

// planCopyLayer returns the layer of a COPY from the context when it can be
// written from the context store alone, and nil when the COPY must go into
// the mount at root. now is the time the directories it creates get.
func (r *run) planCopyLayer(cp *plan.Copy, root string, now time.Time) *copier.Layer {
	if r.d.CopyIntoMounts {
		return nil
	}
	return copier.ContextLayer(root, cp, r.copyOptions(), now)
}

// mkdirIn creates a WORKDIR (or a volume's mount point) in a root
// filesystem, owned by root and 0755 as Docker creates it, resolving
// symlinks inside the root.
func mkdirIn(root, dir string) error {
	if err := copier.MkdirAll(root, dir); err != nil {
		return errdefs.InvalidArgument("WORKDIR %s: %v", dir, err)
	}
	return nil
}
