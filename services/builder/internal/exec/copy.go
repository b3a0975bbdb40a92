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
	src, err := r.source(ctx, st)
	if err != nil {
		return err
	}
	defer src.Release()
	hash, err := copier.FromRoot(ctx, m.Root(), src.Root(), cp)
	if err != nil {
		return errdefs.New(errdefs.KindOf(err), "Dockerfile:%d: %w", st.Line, err)
	}
	r.setCopyCmd(st, hash)
	return nil
}

// source is the mounted root filesystem of a COPY --from's stage or image:
// the one its stage prepared ahead (prepareSources), else mounted now.
func (r *run) source(ctx context.Context, st *plan.Step) (Mount, error) {
	r.mu.Lock()
	p := r.sources[st]
	delete(r.sources, st)
	r.mu.Unlock()
	if p != nil {
		<-p.done
		return p.m, p.err
	}
	return r.mountSource(ctx, st.Copy)
}

func (r *run) mountSource(ctx context.Context, cp *plan.Copy) (Mount, error) {
	var layers []image.Layer
	if cp.FromStage != nil {
		from := r.result(cp.FromStage)
		if err := r.load(ctx, &from); err != nil {
			return nil, err
		}
		layers = from.layers
	} else {
		layers = cp.FromImage.Layers()
	}
	m, err := r.mount(ctx, layers, false)
	if err != nil {
		return nil, fmt.Errorf("mounting the source of COPY --from: %w", err)
	}
	return m, nil
}

// prepared is the source of a COPY --from being mounted ahead of its step.
type prepared struct {
	done chan struct{}
	m    Mount
	err  error
}

// prepareSources starts mounting the sources of stage sp's COPY --from
// steps that the cache will not serve (by their key, or a --link step's
// link key), at once rather than each when its step comes: an image's
// layers are unpacked meanwhile, each source's while the others' are, at
// most Options.ParallelStages at a time (r.prep). The steps take their
// mounts (source); release, which the stage calls when it ends, stops the
// mounting no step waits for any more and releases those no step took.
func (r *run) prepareSources(ctx context.Context, sp *plan.Stage) (release func()) {
	ctx, cancel := context.WithCancel(ctx)
	for _, st := range sp.Steps {
		if !st.FromElsewhere() {
			continue
		}
		if _, hit := r.hits[st.Key]; hit {
			continue
		}
		if _, hit := r.hits[st.LinkKey]; hit && st.LinkKey != "" {
			continue
		}
		p := &prepared{done: make(chan struct{})}
		r.mu.Lock()
		if r.sources == nil {
			r.sources = map[*plan.Step]*prepared{}
		}
		r.sources[st] = p
		r.mu.Unlock()
		go func() {
			defer close(p.done)
			select {
			case r.prep <- struct{}{}:
			case <-ctx.Done():
				p.err = ctx.Err()
				return
			}
			defer func() { <-r.prep }()
			p.m, p.err = r.mountSource(ctx, st.Copy)
		}()
	}
	return func() {
		cancel()
		for _, st := range sp.Steps {
			r.mu.Lock()
			p := r.sources[st]
			delete(r.sources, st)
			r.mu.Unlock()
			if p == nil {
				continue
			}
			<-p.done
			if p.m != nil {
				p.m.Release()
			}
		}
	}
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
