package exec

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/durationpb"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/copier"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer"
	"github.com/strata-build/strata/services/builder/internal/plan"
	"github.com/strata-build/strata/services/builder/internal/sandbox"
)

// emptyTarDiffID is the diff ID of a layer without changes (1024 zero
// bytes): Docker records such a step as an empty layer.
const emptyTarDiffID = digest.Digest("sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef")

// Run carries out a plan, step by step, stages that do not build on each
// other at the same time (stages.go): a step the cache serves costs
// nothing; any other runs (RUN in the sandbox over a snapshot of its
// parent's layers, COPY and ADD into one, or written from the context),
// its changes become a layer streamed into the blob store, and its image
// and cache record are recorded once every step succeeded, so a failed run
// records nothing. It returns the target's image ID and manifest digest.
func Run(ctx context.Context, d Deps, pl *plan.Plan, o Options, events Events) (string, digest.Digest, error) {
	r := &run{d: d, o: o, pl: pl, hits: o.Hits, seq: newSequencer(pl, events, o.LiveEvents), results: map[*plan.Stage]current{},
		cids: map[*plan.Step]string{}, copyCmds: map[*plan.Step][]string{}, rejected: map[digest.Digest]string{}}
	r.events = r.seq.event
	id, manifest, err := r.all(ctx)
	return id, manifest, r.noSpace(ctx, nil, err)
}

// run is the execution of a plan.
type run struct {
	d    Deps
	o    Options
	pl   *plan.Plan
	hits map[digest.Digest]string
	// events sends a build event, in sequential order (seq) unless the
	// run's options want them live.
	events Events
	seq    *sequencer

	// mu guards what stages running at once share: the maps below.
	mu sync.Mutex
	// results holds each stage's final image.
	results map[*plan.Stage]current
	// cids are the container IDs the steps run as; copyCmds the container
	// Cmd of each COPY and ADD that ran, with the source hash Docker writes,
	// known only once the sources are at hand (the plan's stands in for it
	// in the cache key). The plan itself never changes.
	cids     map[*plan.Step]string
	copyCmds map[*plan.Step][]string
	// pending are the images (and their cache records) the build made,
	// parents first; they are recorded only once the whole build
	// succeeded, so a failed build records no image.
	pending []pendingImage
	// uploads are the layers being compressed and stored in the
	// background while later steps run, by diff ID.
	uploads map[digest.Digest]*upload
	// copies are the layers this build wrote from the context without a
	// directory, by diff ID, for the steps that mount them.
	copies map[digest.Digest]*copier.Layer
	// rejected are the images of the cache records the run found wrong,
	// by key: the records it stores replace them.
	rejected map[digest.Digest]string
	// sources are the COPY --from sources being mounted ahead of their
	// steps, and prep bounds how many are mounted at once.
	sources map[*plan.Step]*prepared
	prep    chan struct{}
	// links are the link records of --link steps a chain record served
	// that have none.
	links []image.CacheRecord
	// linked are the diff IDs of the --link layers this build made in a
	// mount: each was committed as a snapshot over an empty root, which a
	// mount over the layers below it cannot use.
	linked map[digest.Digest]bool
}

type pendingImage struct {
	n    image.New
	id   string
	key  digest.Digest
	desc string
	size int64
	// linkKey is a --link step's link key when the build stores its
	// record (it had none, or a wrong one).
	linkKey digest.Digest
}

// upload is a layer being stored from its committed snapshot.
type upload struct {
	done  chan struct{}
	layer image.Layer
	err   error
}

// all runs every stage and records the images; it returns the target's ID
// and manifest digest.
func (r *run) all(ctx context.Context) (string, digest.Digest, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := r.stages(ctx, cancel); err != nil {
		return "", "", err
	}
	last := r.results[r.pl.Stages[len(r.pl.Stages)-1]]
	manifests, err := r.record(ctx)
	if err != nil {
		return "", "", err
	}
	if m, ok := manifests[last.id]; ok {
		return last.id, m, nil
	}
	img, err := r.d.Images.Get(ctx, last.id)
	if err != nil {
		return "", "", fmt.Errorf("reading the built image %s: %w", last.id, err)
	}
	return last.id, img.ManifestDescriptor().Digest, nil
}

// record waits for the layer uploads, then stores the images the build
// made, parents first, and their cache records. It returns the manifest
// digests of the images it stored.
func (r *run) record(ctx context.Context) (map[string]digest.Digest, error) {
	t0 := time.Now()
	for _, u := range r.uploadList() {
		select {
		case <-u.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if u.err != nil {
			return nil, u.err
		}
	}
	tUploads := time.Now()
	manifests := map[string]digest.Digest{}
	for _, p := range r.pending {
		p.n.Layers = r.stored(p.n.Layers)
		rec, err := r.d.Images.Put(ctx, p.n)
		if err != nil {
			return nil, fmt.Errorf("recording image %s: %w", p.id, err)
		}
		if rec.GetId() != p.id {
			return nil, errdefs.Internal("image %s was recorded as %s", p.id, rec.GetId())
		}
		manifests[p.id] = digest.Digest(rec.GetManifest().GetDigest())
	}
	// The records form chains, a step's image the child of its parent
	// step's. When another build of the same steps recorded a key first,
	// its record stays (the first writer wins), and this build's images
	// that descend from the one it names get no record either: a later
	// build, on the other build's image, would reject them. A record
	// replaces one this run found wrong, and, below an image whose record
	// this run stored, the one it saw at lookup, which is not that image's
	// child.
	lost, won := map[string]bool{}, map[string]bool{}
	for _, p := range r.pending {
		if lost[p.n.Parent] {
			lost[p.id] = true
			continue
		}
		replaces := r.rejected[p.key]
		if replaces == "" && won[p.n.Parent] {
			replaces = r.hits[p.key]
		}
		stored, err := r.d.Images.PutCacheRecord(ctx, image.CacheRecord{Key: p.key, ImageID: p.id, Description: p.desc, Size: p.size, Replaces: replaces})
		if err != nil {
			return nil, fmt.Errorf("storing the cache record of %q: %w", p.desc, err)
		}
		if stored == p.id {
			won[p.id] = true
		} else {
			lost[p.id] = true
		}
	}
	// A --link step's link record names an image whose top layer is the
	// step's own, whatever the image's parent: it stands outside the
	// chains, and the first writer's stays.
	for _, lr := range r.linkRecords() {
		if _, err := r.d.Images.PutCacheRecord(ctx, lr); err != nil {
			return nil, fmt.Errorf("storing the link cache record of %q: %w", lr.Description, err)
		}
	}
	if r.d.Log != nil {
		r.d.Log.DebugContext(ctx, "images recorded", "images", len(r.pending), "waiting_for_layers", tUploads.Sub(t0),
			"recording", time.Since(tUploads))
	}
	return manifests, nil
}

// linkRecords are the link records the build stores: of the --link steps
// it ran or rebased without a record to rely on, and of those its chain
// records served that have none (recorded before link records were).
func (r *run) linkRecords() []image.CacheRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.links)
	for _, p := range r.pending {
		if p.linkKey != "" {
			out = append(out, image.CacheRecord{Key: p.linkKey, ImageID: p.id, Description: p.desc, Size: p.size, Replaces: r.rejected[p.linkKey]})
		}
	}
	return out
}

func (r *run) uploadList() []*upload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Collect(maps.Values(r.uploads))
}

// stored fills in the blob descriptors of layers whose upload finished;
// layers still uploading keep an empty one (their snapshots stay pinned, so
// nothing needs their blob until then).
func (r *run) stored(layers []image.Layer) []image.Layer {
	out := slices.Clone(layers)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, l := range out {
		if l.Blob.Digest != "" {
			continue
		}
		if u := r.uploads[l.DiffID]; u != nil {
			select {
			case <-u.done:
				if u.err == nil {
					out[i] = u.layer
				}
			default:
			}
		}
	}
	return out
}

// current is where a stage stands: its latest image, in memory until
// recorded. config is nil for a cached step's image until it is read.
type current struct {
	id     string
	config *image.Config
	layers []image.Layer
}

func (r *run) stage(ctx context.Context, sp *plan.Stage) (current, error) {
	defer r.prepareSources(ctx, sp)()
	var cur current
	switch {
	case sp.BaseStage != nil:
		cur = r.result(sp.BaseStage)
		if err := r.load(ctx, &cur); err != nil {
			return current{}, err
		}
	case sp.BaseImage != nil:
		cur = current{id: string(sp.BaseImage.ID()), config: sp.BaseImage.Config, layers: sp.BaseImage.Layers()}
	default:
		cur = current{config: &image.Config{Architecture: "amd64", OS: "linux", RootFS: image.RootFS{Type: "layers"}}}
	}
	started := r.startedIn(sp)
	r.events(&builderv1.BuildEvent{Step: int32(sp.Number), Event: &builderv1.BuildEvent_Started{Started: started(&builderv1.StepStarted{
		Instruction: sp.FromText, BaseImageId: cur.id,
	})}})
	r.events(done(sp.Number, cur.id, 0, nil))

	missed := false
	for _, st := range sp.Steps {
		t0 := time.Now()
		if !st.Trigger {
			cid := ""
			if st.RunsContainer() {
				cid = containerID()
			}
			r.events(&builderv1.BuildEvent{Step: int32(st.Number), Event: &builderv1.BuildEvent_Started{Started: started(&builderv1.StepStarted{
				Instruction: st.Text, ContainerId: cid, Line: int32(st.Line),
			})}})
			r.setCID(st, cid)
		} else {
			r.setCID(st, containerID())
		}
		if err := r.load(ctx, &cur); err != nil {
			return current{}, err
		}
		if id, ok := r.hits[st.Key]; ok && !missed {
			// A record is used only if its image is what this step makes
			// of this parent (see cached); any other is a miss.
			hit, err := r.cached(ctx, st, cur, id)
			if err != nil {
				return current{}, err
			}
			if hit != nil {
				cur = *hit
				r.linkServed(st, *hit)
				r.events(&builderv1.BuildEvent{Step: int32(st.Number), Event: &builderv1.BuildEvent_Cached{Cached: &builderv1.StepCached{ImageId: id}}})
				r.events(done(st.Number, id, time.Since(t0), nil))
				continue
			}
		}
		missed = true
		if id, ok := r.hits[st.LinkKey]; ok && st.LinkKey != "" {
			// A --link step's layer does not depend on its parent: the
			// one its link record names is put over this parent, as
			// BuildKit rebases a linked copy (see rebase).
			next, l, err := r.rebase(ctx, st, cur, id)
			if err != nil {
				return current{}, err
			}
			if next != nil {
				cur = *next
				r.events(&builderv1.BuildEvent{Step: int32(st.Number), Event: &builderv1.BuildEvent_Cached{Cached: &builderv1.StepCached{ImageId: cur.id}}})
				r.events(done(st.Number, cur.id, time.Since(t0), l))
				continue
			}
		}
		next, l, err := r.step(ctx, sp, st, cur)
		if err != nil {
			return current{}, r.noSpace(ctx, st, err)
		}
		cur = next
		r.events(done(st.Number, cur.id, time.Since(t0), l))
	}
	if cur.id == "" {
		return current{}, errdefs.InvalidArgument("stage %s is FROM scratch and has no steps: there is no image to make", stageLabel(sp))
	}
	return cur, nil
}

// result is the final image of a stage that has finished.
func (r *run) result(sp *plan.Stage) current {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.results[sp]
}

// cid is the container ID step st runs as.
func (r *run) cid(st *plan.Step) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cids[st]
}

func (r *run) setCID(st *plan.Step, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cids[st] = id
}

// load reads the image of a cached step, which the build needs after all.
func (r *run) load(ctx context.Context, cur *current) error {
	if cur.config != nil || cur.id == "" {
		return nil
	}
	img, err := r.d.Images.Get(ctx, cur.id)
	if err != nil {
		return fmt.Errorf("reading cached image %s: %w", cur.id, err)
	}
	*cur = current{id: string(img.ID()), config: img.Config, layers: img.Layers()}
	return nil
}

// historyCreatedBy is the created_by of the history row st writes: a COPY
// or ADD that ran writes Docker's source hash.
func (r *run) historyCreatedBy(st *plan.Step) string {
	if cmd := r.copyCmd(st); cmd != nil {
		return strings.Join(cmd, " ")
	}
	return st.CreatedBy()
}

// copyCmd is the container Cmd a COPY or ADD that ran records, or nil.
func (r *run) copyCmd(st *plan.Step) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.copyCmds[st]
}

// setCopyCmd records the container Cmd of a COPY or ADD whose sources
// hash to hash.
func (r *run) setCopyCmd(st *plan.Step, hash string) {
	cp := st.Copy
	shell := st.ContainerConfig.Cmd[:len(st.ContainerConfig.Cmd)-1]
	cmd := append(slices.Clone(shell), "#(nop) "+plan.CopyComment(strings.ToUpper(st.Cmd.Name()), &plan.Copy{Chown: cp.Chown, Hash: hash, DestText: cp.DestText}))
	r.mu.Lock()
	r.copyCmds[st] = cmd
	r.mu.Unlock()
}

// startedIn returns what fills in the StepStarted events of stage sp's
// steps, in their order: the build's step count, the stage and the step's
// place in it.
func (r *run) startedIn(sp *plan.Stage) func(*builderv1.StepStarted) *builderv1.StepStarted {
	steps := 1
	for _, st := range sp.Steps {
		if !st.Trigger {
			steps++
		}
	}
	n := 0
	return func(s *builderv1.StepStarted) *builderv1.StepStarted {
		n++
		s.TotalSteps, s.Stage, s.StageIndex, s.StageName = int32(r.pl.Total), stageLabel(sp), int32(sp.Index), sp.Name
		s.StageStep, s.StageSteps = int32(n), int32(steps)
		return s
	}
}

func stageLabel(sp *plan.Stage) string {
	if sp.Name != "" {
		return sp.Name
	}
	return fmt.Sprint(sp.Index)
}

// step carries out one step that the cache did not serve and returns the
// image it made (held in memory, recorded at the end of the build).
func (r *run) step(ctx context.Context, sp *plan.Stage, st *plan.Step, cur current) (current, *image.Layer, error) {
	var layer *image.Layer
	switch st.Kind {
	case plan.KindMeta:
		if err := r.checkVolumes(ctx, st, cur); err != nil {
			return current{}, nil, err
		}
	default:
		l, err := r.changeFS(ctx, sp, st, cur)
		if err != nil {
			return current{}, nil, err
		}
		if l.DiffID != emptyTarDiffID {
			layer = &l
		}
	}
	next, err := r.commit(st, cur, layer)
	return next, layer, err
}

// commit makes the image of step st over cur with its layer (nil for an
// empty one), held in memory and recorded at the end of the build.
func (r *run) commit(st *plan.Step, cur current, layer *image.Layer) (current, error) {
	cfg := cur.config.Clone()
	cfg.Config = st.Config.Clone()
	cfg.Config.Image = cur.id
	cfg.ContainerConfig = st.ContainerConfig.Clone()
	cfg.ContainerConfig.Image = cur.id
	cfg.Container = ""
	if st.RunsContainer() {
		cfg.Container = r.cid(st)
	}
	if st.Kind == plan.KindMeta || st.Kind == plan.KindWorkdir {
		// Docker creates these steps' containers from the very config it
		// records, so the daemon's defaults show in it: the container's
		// hostname, and labels as an empty map rather than null.
		cfg.ContainerConfig.Hostname = r.cid(st)[:12]
		if cfg.ContainerConfig.Labels == nil {
			cfg.ContainerConfig.Labels = map[string]string{}
		}
	}
	now := time.Now().UTC()
	cfg.Created = now
	cfg.Author = st.Author
	cfg.DockerVersion = ""
	cfg.Comment = ""
	h := image.History{Created: now, CreatedBy: r.historyCreatedBy(st), Author: st.Author, EmptyLayer: layer == nil}
	if cmd := r.copyCmd(st); cmd != nil {
		cfg.ContainerConfig.Cmd = cmd
	}
	cfg.History = append(cfg.History, h)
	layers := cur.layers
	if layer != nil {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, layer.DiffID)
		layers = append(append([]image.Layer(nil), cur.layers...), *layer)
	}
	// The image ID is the config's digest; the manifest waits for the
	// layer uploads, at the end of the build.
	b, err := cfg.Marshal()
	if err != nil {
		return current{}, err
	}
	id := string(digest.FromBytes(b))
	var size int64
	if layer != nil {
		size = layer.DiffSize
	}
	n := image.New{Config: cfg, Layers: layers, Parent: cur.id, Action: metadatav1.EventAction_EVENT_ACTION_BUILD}
	p := pendingImage{n: n, id: id, key: st.Key, desc: st.CreatedBy(), size: size}
	r.mu.Lock()
	if st.LinkKey != "" && (r.hits[st.LinkKey] == "" || r.rejected[st.LinkKey] != "") {
		p.linkKey = st.LinkKey
	}
	r.pending = append(r.pending, p)
	r.mu.Unlock()
	return current{id: id, config: cfg, layers: layers}, nil
}

// mount mounts a step's root filesystem over layers.
func (r *run) mount(ctx context.Context, layers []image.Layer, init bool) (Mount, error) {
	if err := r.linkedStored(ctx, layers); err != nil {
		return nil, err
	}
	tars := map[digest.Digest]layer.Source{}
	r.mu.Lock()
	for d, cl := range r.copies {
		tars[d] = cl.Write
	}
	r.mu.Unlock()
	return r.d.Snapshots.Mount(ctx, r.stored(layers), MountOptions{Init: init, Tars: tars})
}

// linkedStored waits for the blobs of the --link layers this build made
// in a mount that layers holds over others: they are unpacked from their
// blobs there (see linked), while the layers of other steps were
// committed over their parents and are mounted as they are.
func (r *run) linkedStored(ctx context.Context, layers []image.Layer) error {
	for i, l := range layers {
		r.mu.Lock()
		u := r.uploads[l.DiffID]
		wait := i > 0 && r.linked[l.DiffID] && u != nil && l.Blob.Digest == ""
		r.mu.Unlock()
		if !wait {
			continue
		}
		select {
		case <-u.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if u.err != nil {
			return u.err
		}
	}
	return nil
}

// hasDir reports whether dir is a directory over layers, as far as the top
// layer tells without mounting them: when it is a COPY this build wrote
// from the context that holds dir.
func (r *run) hasDir(layers []image.Layer, dir string) bool {
	if len(layers) == 0 {
		return false
	}
	r.mu.Lock()
	cl := r.copies[layers[len(layers)-1].DiffID]
	r.mu.Unlock()
	return cl != nil && cl.HasDir(dir)
}

// changeFS runs a step that changes the filesystem in a mount over the
// parent's layers. The changes are committed as the snapshot of the new
// layer as soon as their diff ID is known; compressing and storing the
// layer blob then goes on in the background while later steps run.
func (r *run) changeFS(ctx context.Context, sp *plan.Stage, st *plan.Step, cur current) (image.Layer, error) {
	t0 := time.Now()
	if st.Kind == plan.KindWorkdir && r.hasDir(cur.layers, st.Workdir) {
		// The directory is there: nothing to create, nothing to mount.
		return image.Layer{DiffID: emptyTarDiffID}, nil
	}
	// cp is the step's COPY or ADD with its downloads at hand.
	cp := st.Copy
	if st.Kind == plan.KindCopy && !st.FromElsewhere() {
		if r.o.ContextContents != nil {
			if err := r.o.ContextContents(ctx); err != nil {
				return image.Layer{}, fmt.Errorf("Dockerfile:%d: %s: receiving the build context: %w", st.Line, strings.ToUpper(st.Cmd.Name()), err)
			}
		}
		var err error
		if cp, err = cp.Fetch(ctx, r.d.Downloads); err != nil {
			return image.Layer{}, errdefs.Wrap(err, "Dockerfile:%d", st.Line)
		}
		hash, err := copier.SourceHash(cp, r.copyOptions())
		if err != nil {
			return image.Layer{}, errdefs.New(errdefs.KindOf(err), "Dockerfile:%d: %w", st.Line, err)
		}
		r.setCopyCmd(st, hash)
	}
	below := cur.layers
	if st.Kind == plan.KindCopy && st.Copy.Link {
		// COPY --link makes its layer on its own, as BuildKit merges it:
		// the copy goes into an empty root, so nothing below (a symlink,
		// a directory at the destination) decides where its files land.
		below = nil
	}
	m, err := r.mount(ctx, below, st.Kind != plan.KindCopy)
	if err != nil {
		return image.Layer{}, fmt.Errorf("preparing the root filesystem of step %d: %w", st.Number, err)
	}
	defer m.Release()
	if st.Kind == plan.KindCopy {
		if cl := r.planCopyLayer(cp, m.Root(), t0); cl != nil {
			// Nothing is written to the mount: the layer is written from
			// the context store, and unpacked only if a later step mounts it.
			m.Release()
			return r.copyLayer(ctx, st, cl, cur.layers, mountedLater(sp, st, cl), t0, time.Now())
		}
	}
	switch st.Kind {
	case plan.KindRun:
		err = r.runProcess(ctx, st, m)
	case plan.KindCopy:
		err = r.copy(ctx, st, cp, m)
	case plan.KindWorkdir:
		err = mkdirIn(m.Root(), st.Workdir)
	}
	if err != nil {
		return image.Layer{}, err
	}
	if st.Kind == plan.KindCopy && len(below) > 0 {
		if same, err := r.unchanged(ctx, cur.layers, m.Upper()); err != nil || same {
			return image.Layer{DiffID: emptyTarDiffID}, err
		}
	}
	tWork := time.Now()
	l, err := r.d.Layers.DiffID(ctx, layer.DirSource(m.Upper()))
	if err != nil {
		return image.Layer{}, fmt.Errorf("reading the changes of step %d: %w", st.Number, err)
	}
	if l.DiffID == emptyTarDiffID {
		return l, nil
	}
	snap, err := m.Commit(ctx, l)
	if err != nil {
		return image.Layer{}, err
	}
	if r.d.Log != nil {
		r.d.Log.DebugContext(ctx, "step changed the filesystem", "step", st.Number, "work", tWork.Sub(t0),
			"diff_id", time.Since(tWork), "diff_size", l.DiffSize)
	}
	r.upload(ctx, st.Number, l, layer.DirSource(snap.Dir()), snap.Release)
	if len(below) < len(cur.layers) {
		r.mu.Lock()
		if r.linked == nil {
			r.linked = map[digest.Digest]bool{}
		}
		r.linked[l.DiffID] = true
		r.mu.Unlock()
	}
	return l, nil
}

// unchanged reports whether a COPY's upper directory changes nothing of
// the root over layers: Docker then records an empty layer.
func (r *run) unchanged(ctx context.Context, layers []image.Layer, upper string) (bool, error) {
	lower, err := r.mount(ctx, layers, false)
	if err != nil {
		return false, err
	}
	defer lower.Release()
	return layer.Unchanged(upper, lower.Root())
}

// copyLayer makes a COPY's layer over parent from its tar: its diff ID now,
// the blob in the background. When a later step mounts it (mounted), its
// files are written as its snapshot beside the pass that hashes it, rather
// than its tar written again, unpacked and hashed again on that mount.
func (r *run) copyLayer(ctx context.Context, st *plan.Step, cl *copier.Layer, parent []image.Layer, mounted bool, t0, tWork time.Time) (image.Layer, error) {
	src := cl.Write
	var (
		l   image.Layer
		err error
	)
	if mounted {
		var snap Snapshot
		if l, snap, err = r.d.Snapshots.Add(ctx, parent, func(ctx context.Context, dir string) (image.Layer, error) {
			return r.writeCopyLayer(ctx, cl, dir)
		}); err == nil {
			snap.Release()
		}
	} else {
		l, err = r.d.Layers.DiffID(ctx, src)
	}
	if err != nil {
		return image.Layer{}, fmt.Errorf("Dockerfile:%d: %s: %w", st.Line, strings.ToUpper(st.Cmd.Name()), err)
	}
	if l.DiffID == emptyTarDiffID {
		return l, nil
	}
	r.mu.Lock()
	if r.copies == nil {
		r.copies = map[digest.Digest]*copier.Layer{}
	}
	r.copies[l.DiffID] = cl
	r.mu.Unlock()
	if r.d.Log != nil {
		r.d.Log.DebugContext(ctx, "step changed the filesystem", "step", st.Number, "work", tWork.Sub(t0), "diff_id", time.Since(tWork),
			"diff_size", l.DiffSize, "written", "from the context store", "unpacked", mounted)
	}
	r.upload(ctx, st.Number, l, src, func() {})
	return l, nil
}

// writeCopyLayer writes a COPY's layer files into dir while its diff ID is
// computed from its tar, both from the context store.
func (r *run) writeCopyLayer(ctx context.Context, cl *copier.Layer, dir string) (image.Layer, error) {
	g, ctx := errgroup.WithContext(ctx)
	var l image.Layer
	g.Go(func() (err error) {
		l, err = r.d.Layers.DiffID(ctx, cl.Write)
		return err
	})
	g.Go(func() error { return cl.WriteFiles(ctx, dir) })
	return l, g.Wait()
}

// mountedLater reports whether a step of stage sp after st, whose layer
// is cl, changes the filesystem, and so mounts that layer: a WORKDIR of a
// directory the layer holds mounts nothing (see changeFS).
func mountedLater(sp *plan.Stage, st *plan.Step, cl *copier.Layer) bool {
	i := slices.Index(sp.Steps, st)
	if i < 0 {
		return false
	}
	return slices.ContainsFunc(sp.Steps[i+1:], func(s *plan.Step) bool {
		return s.Kind != plan.KindMeta && (s.Kind != plan.KindWorkdir || !cl.HasDir(s.Workdir))
	})
}

// upload stores a layer in the background from its tar; release is called
// when src is no longer read.
func (r *run) upload(ctx context.Context, step int, l image.Layer, src layer.Source, release func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.uploads == nil {
		r.uploads = map[digest.Digest]*upload{}
	}
	if _, ok := r.uploads[l.DiffID]; ok {
		release()
		return
	}
	u := &upload{done: make(chan struct{}), layer: l}
	r.uploads[l.DiffID] = u
	go func() {
		defer close(u.done)
		defer release()
		t0 := time.Now()
		stored, err := r.d.Layers.Store(ctx, src)
		switch {
		case err != nil:
			u.err = fmt.Errorf("storing the layer of step %d: %w", step, err)
		case stored.DiffID != l.DiffID:
			u.err = errdefs.Internal("the layer of step %d changed while it was stored: diff ID %s, then %s", step, l.DiffID, stored.DiffID)
		default:
			u.layer = stored
		}
		if r.d.Log != nil {
			r.d.Log.DebugContext(ctx, "layer stored", "step", step, "duration", time.Since(t0), "blob_size", stored.Blob.Size, "error", u.err)
		}
	}()
}

// checkVolumes fails a VOLUME step whose mount point is a file the parent
// holds, as Docker does: it creates the step's container with the volume
// mounted, which a file cannot take ("file exists").
func (r *run) checkVolumes(ctx context.Context, st *plan.Step, cur current) error {
	if len(cur.layers) == 0 || st.Config == nil {
		return nil
	}
	var vols []string
	for v := range st.Config.Volumes {
		if cur.config != nil && cur.config.Config != nil {
			if _, had := cur.config.Config.Volumes[v]; had {
				continue
			}
		}
		vols = append(vols, v)
	}
	if len(vols) == 0 {
		return nil
	}
	m, err := r.mount(ctx, cur.layers, false)
	if err != nil {
		return fmt.Errorf("preparing the root filesystem of step %d: %w", st.Number, err)
	}
	defer m.Release()
	for _, v := range vols {
		host, err := securejoin.SecureJoin(m.Root(), v)
		if err != nil {
			return err
		}
		if fi, err := os.Stat(host); err == nil && !fi.IsDir() {
			return errdefs.InvalidArgument("Dockerfile:%d: VOLUME %s: cannot mount volume over existing file, file exists %s", st.Line, v, v)
		}
	}
	return nil
}

// runProcess runs a RUN step's command in the sandbox.
func (r *run) runProcess(ctx context.Context, st *plan.Step, m Mount) error {
	out := newLineWriter(st.Number, builderv1.OutputStream_OUTPUT_STREAM_STDOUT, r.events)
	errw := newLineWriter(st.Number, builderv1.OutputStream_OUTPUT_STREAM_STDERR, r.events)
	cwd := st.Config.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	// The classic builder runs RUN with the image's volumes mounted: their
	// mount points appear in the layer, and what the command writes inside
	// them does not.
	vols := slices.Sorted(maps.Keys(st.Config.Volumes))
	for _, v := range vols {
		if err := mkdirIn(m.Root(), v); err != nil {
			return err
		}
	}
	defer discardVolumeWrites(m.Upper(), vols)
	secrets, err := r.secrets(st)
	if err != nil {
		return err
	}
	agents, err := r.agents(st)
	if err != nil {
		return err
	}
	mounts, release, err := r.stepMounts(ctx, st)
	if err != nil {
		return err
	}
	defer release()
	// The mount points, the secrets' too, are made here, where the step's
	// upper directory is known to become its layer, and taken out of it
	// after the run.
	stubs, err := makeStubs(m.Root(), m.Upper(), mountPoints(mounts, secrets, agents))
	defer stubs.remove()
	if err != nil {
		return errdefs.New(errdefs.KindOf(err), "Dockerfile:%d: RUN --mount: %w", st.Line, err)
	}
	code, err := r.d.Sandbox.Run(ctx, Process{
		Root: m.Root(), Args: st.Run.Args, Env: st.Run.Env, Cwd: cwd, User: st.Config.User,
		Hostname: r.cid(st)[:12], Network: StepNetwork(st, r.o.Network), Resources: r.o.Resources, Stdout: out, Stderr: errw,
		Upper: m.Upper(), Discard: m.Release, Mounts: mounts, Secrets: secrets, Agents: agents,
	})
	out.Flush()
	errw.Flush()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Most often the image or the Dockerfile is at fault (a WORKDIR
		// runc refuses, a USER it cannot be), so the line is named.
		return fmt.Errorf("Dockerfile:%d: running step %d: %w", st.Line, st.Number, err)
	}
	if code != 0 {
		tail := lastLines(out, errw)
		msg := fmt.Sprintf("Dockerfile:%d: The command '%s' returned a non-zero code: %d", st.Line, strings.Join(st.Run.Args, " "), code)
		if tail != "" {
			msg += "\nlast output:\n" + tail
		}
		return errdefs.InvalidArgument("%s", msg).WithReason("RUN_FAILED").WithDetail("exit_code", fmt.Sprint(code))
	}
	return nil
}

// secrets returns a RUN step's secret mounts with their values. A secret
// the build lacks is no file, as in BuildKit, unless the mount requires
// it: then the step fails naming it. Its env= variable is set, empty, as
// BuildKit's exec op sets it.
func (r *run) secrets(st *plan.Step) ([]sandbox.Secret, error) {
	var out []sandbox.Secret
	for _, m := range st.Run.Secrets {
		v, ok := r.o.Secrets[m.ID]
		if !ok {
			if m.Required {
				return nil, errdefs.InvalidArgument("Dockerfile:%d: secret %q is required but the build has none of that ID: pass it with strata build --secret id=%s,src=FILE (or env=VARIABLE)",
					st.Line, m.ID, m.ID).WithReason("SECRET_NOT_FOUND")
			}
			if m.Env != "" {
				out = append(out, sandbox.Secret{Env: m.Env})
			}
			continue
		}
		out = append(out, sandbox.Secret{Target: m.Target, Env: m.Env, Data: v, Mode: fs.FileMode(m.Mode), UID: m.UID, GID: m.GID})
	}
	return out, nil
}

// agents returns a RUN step's ssh mounts served by the build's agents. An
// agent the build does not forward skips its mount, as in BuildKit,
// unless the mount requires it: then the step fails naming it.
func (r *run) agents(st *plan.Step) ([]sandbox.Agent, error) {
	var out []sandbox.Agent
	for _, m := range st.Run.SSH {
		if r.o.Agents == nil || !r.o.Agents.Has(m.ID) {
			if m.Required {
				return nil, errdefs.InvalidArgument("Dockerfile:%d: SSH agent %q is required but the build forwards none of that ID: pass it with strata build --ssh %s (the agent of $SSH_AUTH_SOCK) or --ssh %s=KEY_OR_SOCKET",
					st.Line, m.ID, m.ID, m.ID).WithReason("SSH_NOT_FOUND")
			}
			continue
		}
		id := m.ID
		out = append(out, sandbox.Agent{Target: m.Target, Mode: fs.FileMode(m.Mode), UID: m.UID, GID: m.GID,
			Serve: func(ctx context.Context, conn net.Conn) { r.o.Agents.Serve(ctx, id, conn) }})
	}
	return out, nil
}

// discardVolumeWrites drops what a RUN wrote inside volume mount points
// from its upper directory, keeping the mount points.
func discardVolumeWrites(upper string, vols []string) {
	for _, v := range vols {
		// Resolved inside the upper directory: the command may have planted
		// symlinks there, which must not lead outside it.
		dir, err := securejoin.SecureJoin(upper, v)
		if err != nil {
			continue
		}
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
			continue
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

func containerID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func done(number int, id string, d time.Duration, l *image.Layer) *builderv1.BuildEvent {
	ev := &builderv1.StepDone{ImageId: id, Duration: durationpb.New(d), EmptyLayer: l == nil}
	if l != nil {
		ev.LayerSize, ev.LayerBlobSize = l.DiffSize, l.Blob.Size
	}
	return &builderv1.BuildEvent{Step: int32(number), Event: &builderv1.BuildEvent_Done{Done: ev}}
}

// StepNetwork is the network a RUN step runs on: its RUN --network, else
// the build's.
func StepNetwork(st *plan.Step, build builderv1.NetworkMode) builderv1.NetworkMode {
	if st.Run == nil {
		return build
	}
	switch st.Run.Network {
	case "none":
		return builderv1.NetworkMode_NETWORK_MODE_NONE
	case "host":
		return builderv1.NetworkMode_NETWORK_MODE_HOST
	}
	return build
}
