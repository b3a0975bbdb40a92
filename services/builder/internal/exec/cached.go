package exec

import (
	"context"
	"fmt"
	"regexp"
	"slices"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// cached returns the image a cache record names for step st over parent
// cur when it is what the step makes of that parent: an image that exists,
// whose parent is cur, whose history and layers are cur's plus one row (the
// step's instruction, an empty layer for a metadata step) and at most one
// layer. Otherwise it logs and counts the record and returns nil: the step
// runs, as on a miss. Cache keys are computable from public inputs, so a
// record that does not hold up is never trusted, whoever wrote it.
func (r *run) cached(ctx context.Context, st *plan.Step, cur current, id string) (*current, error) {
	img, err := r.d.Images.Get(ctx, id)
	if errdefs.IsNotFound(err) {
		r.reject(ctx, st, id, "its image does not exist")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading cached image %s: %w", id, err)
	}
	if why := mismatch(st, r.historyCreatedBy(st), cur, img); why != "" {
		r.reject(ctx, st, id, why)
		return nil, nil
	}
	return &current{id: string(img.ID()), config: img.Config, layers: img.Layers()}, nil
}

// mismatch says how img is not what st, whose history row is createdBy,
// makes over parent, or "".
func mismatch(st *plan.Step, createdBy string, parent current, img *image.Image) string {
	if p := img.Record.GetParent(); p != parent.id {
		return fmt.Sprintf("its image's parent is %q, the step's is %q", p, parent.id)
	}
	var want image.Config
	if parent.config != nil {
		want = *parent.config
	}
	got := img.Config
	n := len(want.History)
	if len(got.History) != n+1 || !slices.EqualFunc(got.History[:n], want.History, sameHistory) {
		return "its image's history is not its parent's and one step"
	}
	last := got.History[n]
	if last.CreatedBy != createdBy && (st.Kind != plan.KindCopy || maskHash(last.CreatedBy) != maskHash(createdBy)) {
		return fmt.Sprintf("its image's last step is %q, not %q", last.CreatedBy, createdBy)
	}
	if st.Kind == plan.KindMeta && !last.EmptyLayer {
		return "its image has a layer for a step that makes none"
	}
	layers := len(want.RootFS.DiffIDs)
	if !last.EmptyLayer {
		layers++
	}
	if len(got.RootFS.DiffIDs) != layers || !slices.Equal(got.RootFS.DiffIDs[:len(want.RootFS.DiffIDs)], want.RootFS.DiffIDs) {
		return "its image's layers are not its parent's and the step's"
	}
	return ""
}

// copyHashRE matches the source hash of a COPY or ADD history row. Until
// the step runs, the plan's hash stands in for the one Docker writes (which
// needs the sources at hand); the cache key covers the sources themselves,
// so a cached row is checked for everything but the hash.
var copyHashRE = regexp.MustCompile(`(?:file|dir|multi):[0-9a-f]{64}|from:\S+`)

func maskHash(createdBy string) string { return copyHashRE.ReplaceAllString(createdBy, "<hash>") }

func sameHistory(a, b image.History) bool {
	return a.Created.Equal(b.Created) && a.CreatedBy == b.CreatedBy && a.Author == b.Author &&
		a.Comment == b.Comment && a.EmptyLayer == b.EmptyLayer
}

// reject logs and counts a cache record that failed its check.
func (r *run) reject(ctx context.Context, st *plan.Step, id, why string) {
	r.mu.Lock()
	r.rejected[st.Key] = id
	r.mu.Unlock()
	if r.d.RejectedCacheRecords != nil {
		r.d.RejectedCacheRecords.Inc()
	}
	if r.d.Log != nil {
		r.d.Log.WarnContext(ctx, "cache record ignored: the step runs", "step", st.Number, "line", st.Line, "key", st.Key, "image", id, "reason", why)
	}
}
