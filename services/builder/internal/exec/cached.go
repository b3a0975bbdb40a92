package exec

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

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
	img, err := r.recordImage(ctx, st, st.Key, id)
	if img == nil || err != nil {
		return nil, err
	}
	if why := mismatch(st, r.historyCreatedBy(st), cur, img); why != "" {
		r.reject(ctx, st, st.Key, id, why)
		return nil, nil
	}
	return &current{id: string(img.ID()), config: img.Config, layers: img.Layers()}, nil
}

// recordImage reads image id, which the cache record of st under key
// names; a record whose image does not exist is rejected, and nil
// returned.
func (r *run) recordImage(ctx context.Context, st *plan.Step, key digest.Digest, id string) (*image.Image, error) {
	img, err := r.d.Images.Get(ctx, id)
	if errdefs.IsNotFound(err) {
		r.reject(ctx, st, key, id, "its image does not exist")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading cached image %s: %w", id, err)
	}
	return img, nil
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

// rebase makes the image of --link step st over parent cur from the image
// id its link record names: that image's top layer (the step's, made in an
// empty root, so the same over any parent) goes over cur's layers, blob
// and all, with the step's config and Docker's history row, as if the step
// had run. It is BuildKit's rebase of a linked copy: nothing is copied or
// stored again. A record whose image is not a --link step's of the same
// instruction is logged and counted, and nil returned: the step runs.
func (r *run) rebase(ctx context.Context, st *plan.Step, cur current, id string) (*current, *image.Layer, error) {
	img, err := r.recordImage(ctx, st, st.LinkKey, id)
	if img == nil || err != nil {
		return nil, nil, err
	}
	l, hash, why := linkLayer(st, img)
	if why != "" {
		r.reject(ctx, st, st.LinkKey, id, why)
		return nil, nil, nil
	}
	r.setCopyCmd(st, hash)
	next, err := r.commit(st, cur, l)
	if err != nil {
		return nil, nil, err
	}
	return &next, l, nil
}

// linkLayer returns the layer (nil for an empty one) and the history
// source hash of --link step st that img, the image a link record names,
// ends with; or why img does not end with st.
func linkLayer(st *plan.Step, img *image.Image) (*image.Layer, string, string) {
	hist := img.Config.History
	if len(hist) == 0 {
		return nil, "", "its image has no history"
	}
	last := hist[len(hist)-1]
	// The shell that prefixes "#(nop)" is the parent's (SHELL), not the
	// step's layer.
	_, got, _ := strings.Cut(last.CreatedBy, "#(nop) ")
	_, want, _ := strings.Cut(st.CreatedBy(), "#(nop) ")
	hash := copyHashRE.FindString(got)
	if got == "" || hash == "" || maskHash(got) != maskHash(want) {
		return nil, "", fmt.Sprintf("its image's last step is %q, not %q", last.CreatedBy, st.CreatedBy())
	}
	if last.EmptyLayer {
		return nil, hash, ""
	}
	layers := img.Layers()
	diffIDs := img.Config.RootFS.DiffIDs
	if len(layers) == 0 || len(layers) != len(diffIDs) || layers[len(layers)-1].DiffID != diffIDs[len(diffIDs)-1] {
		return nil, "", "its image's layers are not its config's"
	}
	top := layers[len(layers)-1]
	return &top, hash, ""
}

// linkServed notes the link record of a --link step that the chain record
// id served, when the step has none.
func (r *run) linkServed(st *plan.Step, hit current) {
	if st.LinkKey == "" || r.hits[st.LinkKey] != "" {
		return
	}
	var size int64
	if h := hit.config.History; len(h) > 0 && !h[len(h)-1].EmptyLayer && len(hit.layers) > 0 {
		size = hit.layers[len(hit.layers)-1].DiffSize
	}
	r.mu.Lock()
	r.links = append(r.links, image.CacheRecord{Key: st.LinkKey, ImageID: hit.id, Description: st.CreatedBy(), Size: size})
	r.mu.Unlock()
}

// reject logs and counts a cache record, of key, that failed its check.
func (r *run) reject(ctx context.Context, st *plan.Step, key digest.Digest, id, why string) {
	r.mu.Lock()
	r.rejected[key] = id
	r.mu.Unlock()
	if r.d.RejectedCacheRecords != nil {
		r.d.RejectedCacheRecords.Inc()
	}
	if r.d.Log != nil {
		r.d.Log.WarnContext(ctx, "cache record ignored: the step runs", "step", st.Number, "line", st.Line, "key", key, "image", id, "reason", why)
	}
}
