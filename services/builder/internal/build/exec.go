package build

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/image"
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
	results map[*stagePlan]*image.Image
	// pending are the images (and their cache records) the build made, in
	// order; they are recorded only once the whole build succeeded, so a
	// failed build records no image.
	pending []pendingImage
}

type pendingImage struct {
	n      image.New
	key    digest.Digest
	desc   string
	size   int64
	record *metadatav1.Image
}

// all runs every stage and records the images; it returns the target's.
func (r *run) all(ctx context.Context) (*image.Image, error) {
	var last *image.Image
	for _, sp := range r.pl.stages {
		img, err := r.stage(ctx, sp)
		if err != nil {
			return nil, err
		}
		r.results[sp] = img
		last = img
	}
	if err := r.record(ctx); err != nil {
		return nil, err
	}
	return last, nil
}

// record stores the images the build made, parents first, and their cache
// records.
func (r *run) record(ctx context.Context) error {
	for _, p := range r.pending {
		if _, err := r.b.Images.Put(ctx, p.n); err != nil {
			return fmt.Errorf("recording image %s: %w", p.record.GetId(), err)
		}
	}
	for _, p := range r.pending {
		if p.key == "" {
			continue
		}
		_, err := r.b.Index.PutCacheRecord(ctx, &metadatav1.PutCacheRecordRequest{Record: &metadatav1.CacheRecord{
			Key: string(p.key), ImageId: p.record.GetId(), Description: p.desc, Size: p.size,
		}})
		if err != nil {
			return fmt.Errorf("storing the cache record of %q: %w", p.desc, err)
		}
	}
	return nil
}

// current is where a stage stands: its latest image, in memory until
// recorded.
type current struct {
	id     string
	config *image.Config
	layers []image.Layer
	img    *image.Image
}

func (r *run) stage(ctx context.Context, sp *stagePlan) (*image.Image, error) {
	var cur current
	switch {
	case sp.baseStage != nil:
		base := r.results[sp.baseStage]
		cur = current{id: string(base.ID()), config: base.Config, layers: base.Layers(), img: base}
	case sp.baseImage != nil:
		cur = current{id: string(sp.baseImage.ID()), config: sp.baseImage.Config, layers: sp.baseImage.Layers(), img: sp.baseImage}
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
		if id, ok := r.hits[st.key]; ok && !missed {
			// The metadata service answers only with records whose image
			// exists; it is read only if a later step needs it.
			cur = current{id: id}
			r.events(&builderv1.BuildEvent{Step: int32(st.number), Event: &builderv1.BuildEvent_Cached{Cached: &builderv1.StepCached{ImageId: id}}})
			r.events(done(st.number, id, time.Since(t0), nil))
			continue
		}
		if err := r.load(ctx, &cur); err != nil {
			return nil, err
		}
		missed = true
		next, l, err := r.step(ctx, sp, st, cur)
		if err != nil {
			return nil, err
		}
		cur = next
		r.events(done(st.number, cur.id, time.Since(t0), l))
	}
	if cur.id == "" {
		return nil, errdefs.InvalidArgument("stage %s is FROM scratch and has no steps: there is no image to make", stageLabel(sp))
	}
	if err := r.load(ctx, &cur); err != nil {
		return nil, err
	}
	return cur.img, nil
}

// load reads the image of a cached step, which the build needs after all.
func (r *run) load(ctx context.Context, cur *current) error {
	if cur.img != nil || cur.id == "" {
		return nil
	}
	img, err := r.b.Images.Get(ctx, cur.id)
	if err != nil {
		return fmt.Errorf("reading cached image %s: %w", cur.id, err)
	}
	*cur = current{id: string(img.ID()), config: img.Config, layers: img.Layers(), img: img}
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
	h := image.History{Created: now, CreatedBy: st.createdBy(), Author: st.author, EmptyLayer: layer == nil}
	if st.copy != nil && st.copy.fromStage != nil || st.copy != nil && st.copy.fromImage != nil {
		h.CreatedBy = strings.Join(st.copy.containerCmd, " ")
		cfg.ContainerConfig.Cmd = st.copy.containerCmd
	}
	cfg.History = append(cfg.History, h)
	layers := cur.layers
	if layer != nil {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, layer.DiffID)
		layers = append(append([]image.Layer(nil), cur.layers...), *layer)
	}
	n := image.New{Config: cfg, Layers: layers, Parent: cur.id, Action: metadatav1.EventAction_EVENT_ACTION_BUILD}
	rec, _, err := image.Assemble(n)
	if err != nil {
		return current{}, nil, err
	}
	img, err := image.FromRecord(rec)
	if err != nil {
		return current{}, nil, err
	}
	var size int64
	if layer != nil {
		size = layer.DiffSize
	}
	r.pending = append(r.pending, pendingImage{n: n, key: st.key, desc: st.createdBy(), size: size, record: rec})
	return current{id: rec.GetId(), config: cfg, layers: layers, img: img}, layer, nil
}

// changeFS runs a step that changes the filesystem in a mount over the
// parent's layers and writes the changes as a layer.
func (r *run) changeFS(ctx context.Context, sp *stagePlan, st *step, cur current) (image.Layer, error) {
	t0 := time.Now()
	m, err := r.b.Snapshots.Mount(ctx, cur.layers, st.kind != kindCopy)
	if err != nil {
		return image.Layer{}, fmt.Errorf("preparing the root filesystem of step %d: %w", st.number, err)
	}
	defer m.Release()
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
	l, err := r.b.Layers.WriteDiff(ctx, m.Upper())
	if err != nil {
		return image.Layer{}, fmt.Errorf("writing the layer of step %d: %w", st.number, err)
	}
	if r.b.Log != nil {
		r.b.Log.DebugContext(ctx, "step changed the filesystem", "step", st.number, "work", tWork.Sub(t0),
			"layer", time.Since(tWork), "diff_size", l.DiffSize, "blob_size", l.Blob.Size)
	}
	if l.DiffID != emptyTarDiffID {
		if err := m.Commit(ctx, l); err != nil {
			return image.Layer{}, err
		}
	}
	return l, nil
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
		Hostname: st.cid[:12], Network: r.req.Network, Stdout: out, Stderr: errw,
	})
	out.Flush()
	errw.Flush()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("running step %d: %w", st.number, err)
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
