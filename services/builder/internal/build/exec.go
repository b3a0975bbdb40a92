package build

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer"
)

// emptyTarDiffID is the diff ID of a layer without changes (1024 zero
// bytes): Docker records such a step as an empty layer.
const emptyTarDiffID = digest.Digest("sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef")

// run is the execution of a plan.
type run struct {
	b      *Builder
	req    *Request
	pl     *plan
	hits   map[digest.Digest]string
	events Events
	// results holds each stage's final image.
	results map[*stagePlan]current
	// pending are the images (and their cache records) the build made, in
	// order; they are recorded only once the whole build succeeded, so a
	// failed build records no image.
	pending []pendingImage

	// uploads are the layers being compressed and stored in the
	// background while later steps run, by diff ID.
	mu      sync.Mutex
	uploads map[digest.Digest]*upload
	// copies are the layers this build wrote from the context without a
	// directory, by diff ID, for the steps that mount them.
	copies map[digest.Digest]*copyLayerTar
}

type pendingImage struct {
	n    image.New
	id   string
	key  digest.Digest
	desc string
	size int64
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
	var last current
	for _, sp := range r.pl.stages {
		cur, err := r.stage(ctx, sp)
		if err != nil {
			return "", "", err
		}
		r.results[sp] = cur
		last = cur
	}
	manifests, err := r.record(ctx)
	if err != nil {
		return "", "", err
	}
	if m, ok := manifests[last.id]; ok {
		return last.id, m, nil
	}
	img, err := r.b.Images.Get(ctx, last.id)
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
		rec, err := r.b.Images.Put(ctx, p.n)
		if err != nil {
			return nil, fmt.Errorf("recording image %s: %w", p.id, err)
		}
		if rec.GetId() != p.id {
			return nil, errdefs.Internal("image %s was recorded as %s", p.id, rec.GetId())
		}
		manifests[p.id] = digest.Digest(rec.GetManifest().GetDigest())
	}
	for _, p := range r.pending {
		err := r.b.Images.PutCacheRecord(ctx, image.CacheRecord{Key: p.key, ImageID: p.id, Description: p.desc, Size: p.size})
		if err != nil {
			return nil, fmt.Errorf("storing the cache record of %q: %w", p.desc, err)
		}
	}
	if r.b.Log != nil {
		r.b.Log.DebugContext(ctx, "images recorded", "images", len(r.pending), "waiting_for_layers", tUploads.Sub(t0),
			"recording", time.Since(tUploads))
	}
	return manifests, nil
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

func (r *run) stage(ctx context.Context, sp *stagePlan) (current, error) {
	var cur current
	switch {
	case sp.baseStage != nil:
		cur = r.results[sp.baseStage]
		if err := r.load(ctx, &cur); err != nil {
			return current{}, err
		}
	case sp.baseImage != nil:
		cur = current{id: string(sp.baseImage.ID()), config: sp.baseImage.Config, layers: sp.baseImage.Layers()}
	default:
		cur = current{config: &image.Config{Architecture: "amd64", OS: "linux", RootFS: image.RootFS{Type: "layers"}}}
	}
	r.events(&builderv1.BuildEvent{Step: int32(sp.number), Event: &builderv1.BuildEvent_Started{Started: &builderv1.StepStarted{
		TotalSteps: int32(r.pl.total), Instruction: sp.fromText, Stage: stageLabel(sp), BaseImageId: cur.id,
	}}})
	r.events(done(sp.number, cur.id, 0, nil))

	missed := false
	for _, st := range sp.steps {
		t0 := time.Now()
		if !st.trigger {
			cid := ""
			if st.container() {
				cid = containerID()
			}
			r.events(&builderv1.BuildEvent{Step: int32(st.number), Event: &builderv1.BuildEvent_Started{Started: &builderv1.StepStarted{
				TotalSteps: int32(r.pl.total), Instruction: st.text, Stage: stageLabel(sp), ContainerId: cid,
			}}})
			st.cid = cid
		} else {
			st.cid = containerID()
		}
		if err := r.load(ctx, &cur); err != nil {
			return current{}, err
		}
		if id, ok := r.hits[st.key]; ok && !missed {
			// A record is used only if its image is what this step makes
			// of this parent (see cached); any other is a miss.
			hit, err := r.cached(ctx, st, cur, id)
			if err != nil {
				return current{}, err
			}
			if hit != nil {
				cur = *hit
				r.events(&builderv1.BuildEvent{Step: int32(st.number), Event: &builderv1.BuildEvent_Cached{Cached: &builderv1.StepCached{ImageId: id}}})
				r.events(done(st.number, id, time.Since(t0), nil))
				continue
			}
		}
		missed = true
		next, l, err := r.step(ctx, sp, st, cur)
		if err != nil {
			return current{}, err
		}
		cur = next
		r.events(done(st.number, cur.id, time.Since(t0), l))
	}
	if cur.id == "" {
		return current{}, errdefs.InvalidArgument("stage %s is FROM scratch and has no steps: there is no image to make", stageLabel(sp))
	}
	return cur, nil
}

// load reads the image of a cached step, which the build needs after all.
func (r *run) load(ctx context.Context, cur *current) error {
	if cur.config != nil || cur.id == "" {
		return nil
	}
	img, err := r.b.Images.Get(ctx, cur.id)
	if err != nil {
		return fmt.Errorf("reading cached image %s: %w", cur.id, err)
	}
	*cur = current{id: string(img.ID()), config: img.Config, layers: img.Layers()}
	return nil
}

func stageLabel(sp *stagePlan) string {
	if sp.name != "" {
		return sp.name
	}
	return fmt.Sprint(sp.index)
}

// step carries out one step that the cache did not serve and returns the
// image it made (held in memory, recorded at the end of the build).
func (r *run) step(ctx context.Context, sp *stagePlan, st *step, cur current) (current, *image.Layer, error) {
	var layer *image.Layer
	switch st.kind {
	case kindMeta:
	default:
		l, err := r.changeFS(ctx, sp, st, cur)
		if err != nil {
			return current{}, nil, err
		}
		if l.DiffID != emptyTarDiffID {
			layer = &l
		}
	}
	cfg := cur.config.Clone()
	cfg.Config = st.config.Clone()
	cfg.Config.Image = cur.id
	cfg.ContainerConfig = st.containerConfig.Clone()
	cfg.ContainerConfig.Image = cur.id
	cfg.Container = ""
	if st.container() {
		cfg.Container = st.cid
	}
	if st.kind == kindMeta || st.kind == kindWorkdir {
		// Docker creates these steps' containers from the very config it
		// records, so the daemon's defaults show in it: the container's
		// hostname, and labels as an empty map rather than null.
		cfg.ContainerConfig.Hostname = st.cid[:12]
		if cfg.ContainerConfig.Labels == nil {
			cfg.ContainerConfig.Labels = map[string]string{}
		}
	}
	now := time.Now().UTC()
	cfg.Created = now
	cfg.Author = st.author
	cfg.DockerVersion = ""
	cfg.Comment = ""
	h := image.History{Created: now, CreatedBy: st.historyCreatedBy(), Author: st.author, EmptyLayer: layer == nil}
	if st.copyFromElsewhere() {
		cfg.ContainerConfig.Cmd = st.copy.containerCmd
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
		return current{}, nil, err
	}
	id := string(digest.FromBytes(b))
	var size int64
	if layer != nil {
		size = layer.DiffSize
	}
	n := image.New{Config: cfg, Layers: layers, Parent: cur.id, Action: metadatav1.EventAction_EVENT_ACTION_BUILD}
	r.pending = append(r.pending, pendingImage{n: n, id: id, key: st.key, desc: st.createdBy(), size: size})
	return current{id: id, config: cfg, layers: layers}, layer, nil
}

// mount mounts a step's root filesystem over layers.
func (r *run) mount(ctx context.Context, layers []image.Layer, init bool) (Mount, error) {
	tars := map[digest.Digest]layer.Source{}
	r.mu.Lock()
	for d, cl := range r.copies {
		tars[d] = cl.write
	}
	r.mu.Unlock()
	return r.b.Snapshots.Mount(ctx, r.stored(layers), MountOptions{Init: init, Tars: tars})
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
	return cl != nil && cl.hasDir(dir)
}

// changeFS runs a step that changes the filesystem in a mount over the
// parent's layers. The changes are committed as the snapshot of the new
// layer as soon as their diff ID is known; compressing and storing the
// layer blob then goes on in the background while later steps run.
func (r *run) changeFS(ctx context.Context, sp *stagePlan, st *step, cur current) (image.Layer, error) {
	t0 := time.Now()
	if st.kind == kindWorkdir && r.hasDir(cur.layers, st.workdir) {
		// The directory is there: nothing to create, nothing to mount.
		return image.Layer{DiffID: emptyTarDiffID}, nil
	}
	if st.kind == kindCopy && r.req.ContextContents != nil {
		if err := r.req.ContextContents(ctx); err != nil {
			return image.Layer{}, fmt.Errorf("Dockerfile:%d: %s: receiving the build context: %w", st.line, strings.ToUpper(st.cmd.Name()), err)
		}
	}
	m, err := r.mount(ctx, cur.layers, st.kind != kindCopy)
	if err != nil {
		return image.Layer{}, fmt.Errorf("preparing the root filesystem of step %d: %w", st.number, err)
	}
	defer m.Release()
	if st.kind == kindCopy {
		cl, err := r.planCopyLayer(st, m.Root(), t0)
		if err != nil {
			return image.Layer{}, err
		}
		if cl != nil {
			// Nothing is written to the mount: the layer is written from
			// the context store, and unpacked only if a later step mounts it.
			m.Release()
			return r.copyLayer(ctx, st, cl, t0, time.Now())
		}
	}
	switch st.kind {
	case kindRun:
		err = r.runProcess(ctx, st, m)
	case kindCopy:
		err = r.copy(ctx, st, m)
	case kindWorkdir:
		err = mkdirIn(m.Root(), st.workdir, cur.config.Config)
	}
	if err != nil {
		return image.Layer{}, err
	}
	tWork := time.Now()
	l, err := r.b.Layers.DiffID(ctx, layer.DirSource(m.Upper()))
	if err != nil {
		return image.Layer{}, fmt.Errorf("reading the changes of step %d: %w", st.number, err)
	}
	if l.DiffID == emptyTarDiffID {
		return l, nil
	}
	snap, err := m.Commit(ctx, l)
	if err != nil {
		return image.Layer{}, err
	}
	if r.b.Log != nil {
		r.b.Log.DebugContext(ctx, "step changed the filesystem", "step", st.number, "work", tWork.Sub(t0),
			"diff_id", time.Since(tWork), "diff_size", l.DiffSize)
	}
	r.upload(ctx, st.number, l, layer.DirSource(snap.Dir()), snap.Release)
	return l, nil
}

// copyLayer makes a COPY's layer from its tar: its diff ID now, the blob in
// the background.
func (r *run) copyLayer(ctx context.Context, st *step, cl *copyLayerTar, t0, tWork time.Time) (image.Layer, error) {
	src := cl.write
	l, err := r.b.Layers.DiffID(ctx, src)
	if err != nil {
		return image.Layer{}, fmt.Errorf("Dockerfile:%d: %s: %w", st.line, strings.ToUpper(st.cmd.Name()), err)
	}
	if l.DiffID == emptyTarDiffID {
		return l, nil
	}
	r.mu.Lock()
	if r.copies == nil {
		r.copies = map[digest.Digest]*copyLayerTar{}
	}
	r.copies[l.DiffID] = cl
	r.mu.Unlock()
	if r.b.Log != nil {
		r.b.Log.DebugContext(ctx, "step changed the filesystem", "step", st.number, "work", tWork.Sub(t0), "diff_id", time.Since(tWork),
			"diff_size", l.DiffSize, "written", "from the context store")
	}
	r.upload(ctx, st.number, l, src, func() {})
	return l, nil
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
		stored, err := r.b.Layers.Store(ctx, src)
		switch {
		case err != nil:
			u.err = fmt.Errorf("storing the layer of step %d: %w", step, err)
		case stored.DiffID != l.DiffID:
			u.err = errdefs.Internal("the layer of step %d changed while it was stored: diff ID %s, then %s", step, l.DiffID, stored.DiffID)
		default:
			u.layer = stored
		}
		if r.b.Log != nil {
			r.b.Log.DebugContext(ctx, "layer stored", "step", step, "duration", time.Since(t0), "blob_size", stored.Blob.Size, "error", u.err)
		}
	}()
}

// runProcess runs a RUN step's command in the sandbox.
func (r *run) runProcess(ctx context.Context, st *step, m Mount) error {
	out := newLineWriter(st.number, builderv1.OutputStream_OUTPUT_STREAM_STDOUT, r.events)
	errw := newLineWriter(st.number, builderv1.OutputStream_OUTPUT_STREAM_STDERR, r.events)
	if r.b.Sandbox == nil {
		return errdefs.Unimplemented("Dockerfile:%d: this builder has no sandbox to run RUN steps in", st.line)
	}
	cwd := st.config.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	// The classic builder runs RUN with the image's volumes mounted: their
	// mount points appear in the layer, and what the command writes inside
	// them does not.
	vols := slices.Sorted(maps.Keys(st.config.Volumes))
	for _, v := range vols {
		if err := mkdirIn(m.Root(), v, nil); err != nil {
			return err
		}
	}
	defer discardVolumeWrites(m.Upper(), vols)
	code, err := r.b.Sandbox.Run(ctx, Process{
		Root: m.Root(), Args: st.run.Args, Env: st.run.Env, Cwd: cwd, User: st.config.User,
		Hostname: st.cid[:12], Network: r.req.Network, Resources: r.req.Resources, Stdout: out, Stderr: errw,
	})
	out.Flush()
	errw.Flush()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Most often the image or the Dockerfile is at fault (a WORKDIR
		// runc refuses, a USER it cannot be), so the line is named.
		return fmt.Errorf("Dockerfile:%d: running step %d: %w", st.line, st.number, err)
	}
	if code != 0 {
		tail := lastLines(out, errw)
		msg := fmt.Sprintf("Dockerfile:%d: The command '%s' returned a non-zero code: %d", st.line, strings.Join(st.run.Args, " "), code)
		if tail != "" {
			msg += "\nlast output:\n" + tail
		}
		return errdefs.InvalidArgument("%s", msg).WithReason("RUN_FAILED").WithDetail("exit_code", fmt.Sprint(code))
	}
	return nil
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
