// Package build runs Dockerfile builds the way Docker's classic builder
// does — one image per step, recorded with its parent, history and config as
// Docker writes them — with a cache keyed on content that every builder
// replica shares through the metadata service.
//
// A build is a pipeline, one package an arrow: internal/dockerfile parses
// the Dockerfile into instructions; internal/plan works out the plan
// (base images resolved, every instruction expanded, every step's cache
// key), so that one cache lookup serves the whole build; internal/exec
// runs the plan (COPY and ADD through internal/copier). This package wires
// them to the builder's services, looks the keys up and tags the result.
package build

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/dockerfile"
	"github.com/strata-build/strata/services/builder/internal/egress"
	"github.com/strata-build/strata/services/builder/internal/exec"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// Images is what a build needs of the metadata service (image.Store is
// it): what running a plan needs, and tags and cache lookups.
type Images interface {
	exec.Images
	// Tag points target at the image source and returns the tag recorded.
	Tag(ctx context.Context, source, target string) (string, error)
	// CacheRecords returns the image IDs of the keys that have a record.
	CacheRecords(ctx context.Context, keys []digest.Digest) (map[digest.Digest]string, error)
}

// Puller fetches an image that is not held locally from its registry.
type Puller interface {
	// Pull records the image and returns it; ErrNotFound or ErrUnavailable
	// naming the reference when it cannot be had.
	Pull(ctx context.Context, ref string) (*image.Image, error)
}

// Builder runs builds. Its fields are its dependencies; all are required
// but Puller.
type Builder struct {
	Images    Images
	Puller    Puller
	Snapshots exec.Snapshots
	Sandbox   exec.Sandbox
	Layers    exec.Layers
	// Contexts holds context file contents (and ADD downloads).
	Contexts *buildctx.Store
	// CacheMounts holds RUN --mount=type=cache directories (optional: a
	// build with a cache mount fails without it).
	CacheMounts exec.CacheMounts
	// Archives bounds the decompression of ADD's local archives, as layers
	// are bounded.
	Archives compression.Limits
	// Limits bound what one build's Dockerfile may cost to plan and record.
	Limits Limits
	// URLPolicy decides which addresses ADD may download from.
	URLPolicy egress.Policy
	// DownloadTimeout bounds one ADD download, start to end
	// (DefaultDownloadTimeout when zero).
	DownloadTimeout time.Duration
	Log             *slog.Logger
	// RejectedCacheRecords, if set, counts the cache records ignored
	// because their image is not what the step makes.
	RejectedCacheRecords prometheus.Counter
	// Leases, if set, hold each build's blobs against garbage collection
	// from its start until its image is recorded.
	Leases Leases
	// ParallelStages is the most stages of one build that run at once
	// (exec.DefaultParallelStages when zero).
	ParallelStages int

	// copyIntoMounts makes every COPY go into its mount, as when its layer
	// cannot be written from the context alone (tests compare the two).
	copyIntoMounts bool
}

// Limits bound a build's Dockerfile. A zero field takes its default.
type Limits struct {
	// MaxInstructions is the most instructions a Dockerfile may hold.
	MaxInstructions int
	// MaxConfigBytes is the most bytes of image config (config, container
	// config and history, in JSON) a build's steps may produce together.
	// Each step of Docker's classic builder records an image with the whole
	// config so far, so a Dockerfile of N LABEL lines records N images of
	// up to N labels: this bounds the quadratic growth, at planning.
	MaxConfigBytes int64
}

// Default limits.
const (
	DefaultMaxInstructions = 1000
	DefaultMaxConfigBytes  = 128 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxInstructions <= 0 {
		l.MaxInstructions = DefaultMaxInstructions
	}
	if l.MaxConfigBytes <= 0 {
		l.MaxConfigBytes = DefaultMaxConfigBytes
	}
	return l
}

// Request is one build.
type Request struct {
	Dockerfile []byte
	Context    *buildctx.Context
	// ContextContents, when set, waits until the context's file contents
	// are all in the context store, or returns why they cannot be; COPY and
	// ADD call it before reading them, so that a build can start while its
	// context still streams in. Nil means they are there.
	ContextContents func(ctx context.Context) error
	// BuildArgs are the --build-arg values. One given without a value
	// arrives with the value of the client's environment, or not at all
	// when that has none. BuildOptions.build_arg_names, which lists such
	// args, is read by nothing (so an unset one is never reported unused);
	// whether the proto keeps it is for the proto's owners.
	BuildArgs map[string]string
	Target    string
	Labels    map[string]string
	NoCache   bool
	Network   builderv1.NetworkMode
	// Resources limit each RUN step; nil means the sandbox's defaults.
	Resources *builderv1.RunResources
	Tags      []string
	// Secrets are the build's secrets by ID (strata build --secret), for
	// RUN --mount=type=secret. They are held in memory only, given to the
	// steps that mount them, and never logged, recorded or hashed.
	Secrets map[string][]byte
	// LiveEvents sends the events of stages that run at once as they
	// happen, interleaved, rather than in a sequential build's order.
	LiveEvents bool
	// Agents are the SSH agents the client forwards (strata build --ssh),
	// for RUN --mount=type=ssh; nil when none.
	Agents exec.Agents
}

// Result is a finished build.
type Result struct {
	ImageID        string
	ManifestDigest string
	Tags           []string
}

// Build runs a build. It returns INVALID_ARGUMENT errors naming the
// Dockerfile line for bad Dockerfiles and failed RUN steps. A failed build
// records nothing: no image, no cache record, no tag (the step images are
// recorded only once every step succeeded).
func (b *Builder) Build(ctx context.Context, req *Request, events exec.Events) (*Result, error) {
	t0 := time.Now()
	if err := b.Sandbox.Admit(req.Network, req.Resources); err != nil {
		return nil, err
	}
	df, err := dockerfile.Parse(req.Dockerfile)
	if err != nil {
		return nil, err
	}
	limits := b.Limits.withDefaults()
	if n := df.Instructions(); n > limits.MaxInstructions {
		return nil, errdefs.InvalidArgument("the Dockerfile has %d instructions, more than the builder's limit of %d (--max-instructions)", n, limits.MaxInstructions).
			WithReason("DOCKERFILE_TOO_LARGE")
	}
	for _, w := range df.Warnings {
		events(&builderv1.BuildEvent{Event: &builderv1.BuildEvent_Warning{Warning: &builderv1.BuildWarning{Message: w.Message, Line: int32(w.Line)}}})
	}
	images, layers := b.Images, exec.Layers(b.Layers)
	if b.Leases != nil {
		// From before the first image is read or blob stored until the
		// image and its tags are recorded.
		l, err := b.Leases.Start(ctx)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err := l.Release(context.WithoutCancel(ctx)); err != nil && b.Log != nil {
				b.Log.WarnContext(ctx, "releasing a build's lease (it expires on its own)", "error", err)
			}
		}()
		h := newLeased(b.Images, b.Layers, l)
		images, layers = h, h
	}
	pl, err := plan.Make(ctx, plan.Input{
		Dockerfile: df, Context: req.Context, BuildArgs: req.BuildArgs, Target: req.Target, Labels: req.Labels,
		MaxConfigBytes: limits.MaxConfigBytes, Images: planImages{b, images}, Downloads: downloads{b},
		Network: keyNetwork(req.Network), Parallel: b.parallelStages(),
	})
	if err != nil {
		return nil, err
	}
	if err := b.admitSteps(pl, req); err != nil {
		return nil, err
	}
	tPlan := time.Now()
	hits := map[digest.Digest]string{}
	if !req.NoCache {
		if hits, err = b.lookup(ctx, pl); err != nil {
			return nil, err
		}
	}
	if h, ok := images.(leased); ok && len(hits) > 0 {
		ids := slices.Collect(maps.Values(hits))
		slices.Sort(ids)
		if err := h.prefetch(ctx, slices.Compact(ids)); err != nil {
			return nil, err
		}
	}
	tLookup := time.Now()
	// Layer uploads run in the background; a failed build stops them.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	finalID, manifest, err := exec.Run(ctx, b.deps(images, layers), pl, exec.Options{
		Hits: hits, Context: req.Context, ContextContents: req.ContextContents, Network: req.Network, Resources: req.Resources,
		ParallelStages: b.parallelStages(),
		Secrets:        req.Secrets,
		LiveEvents:     req.LiveEvents,
		Agents:         req.Agents,
	}, events)
	if err != nil {
		return nil, err
	}
	tRun := time.Now()
	for _, w := range pl.Warnings {
		events(&builderv1.BuildEvent{Event: &builderv1.BuildEvent_Warning{Warning: &builderv1.BuildWarning{Message: w}}})
	}
	res := &Result{ImageID: finalID, ManifestDigest: string(manifest)}
	for _, t := range req.Tags {
		tag, err := images.Tag(ctx, res.ImageID, t)
		if err != nil {
			return nil, fmt.Errorf("tagging %s: %w", t, err)
		}
		res.Tags = append(res.Tags, tag)
	}
	if b.Log != nil {
		b.Log.InfoContext(ctx, "build finished", "image", res.ImageID, "steps", pl.Total, "cached", len(hits),
			"plan", tPlan.Sub(t0), "lookup", tLookup.Sub(tPlan), "run", tRun.Sub(tLookup), "tag", time.Since(tRun))
	}
	return res, nil
}

// parallelStages is how many stages of a build run at once, and how many
// of the images it names are fetched at once.
func (b *Builder) parallelStages() int {
	if b.ParallelStages > 0 {
		return b.ParallelStages
	}
	return exec.DefaultParallelStages
}

// lookup asks the metadata service for every key of the plan at once, the
// link keys of --link steps with them.
func (b *Builder) lookup(ctx context.Context, pl *plan.Plan) (map[digest.Digest]string, error) {
	var keys []digest.Digest
	for _, sp := range pl.Stages {
		for _, st := range sp.Steps {
			keys = append(keys, st.Key)
			if st.LinkKey != "" {
				keys = append(keys, st.LinkKey)
			}
		}
	}
	hits, err := b.Images.CacheRecords(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("looking up the build cache: %w", err)
	}
	return hits, nil
}

// admitSteps refuses, before anything runs, a RUN --network the sandbox
// does not allow (host, without the builder's network.host entitlement).
func (b *Builder) admitSteps(pl *plan.Plan, req *Request) error {
	for _, sp := range pl.Stages {
		for _, st := range sp.Steps {
			if n := exec.StepNetwork(st, req.Network); n != req.Network {
				if err := b.Sandbox.Admit(n, req.Resources); err != nil {
					return errdefs.New(errdefs.KindOf(err), "Dockerfile:%d: RUN --network=%s: %w", st.Line, st.Run.Network, err)
				}
			}
		}
	}
	return nil
}

// keyNetwork is the name the RUN steps' cache keys give the build's
// network: none for the default bridge, so their keys are those of every
// build before the network was keyed.
func keyNetwork(m builderv1.NetworkMode) string {
	switch m {
	case builderv1.NetworkMode_NETWORK_MODE_NONE:
		return "none"
	case builderv1.NetworkMode_NETWORK_MODE_HOST:
		return "host"
	}
	return ""
}

// planImages gives the planner the build's images.
type planImages struct {
	b      *Builder
	images Images
}

func (p planImages) Resolve(ctx context.Context, ref string) (*image.Image, error) {
	return p.b.resolveImage(ctx, p.images, ref)
}

// deps are what running a plan takes of the builder, with the build's
// images and layers.
func (b *Builder) deps(images exec.Images, layers exec.Layers) exec.Deps {
	return exec.Deps{
		Images: images, Snapshots: b.Snapshots, Sandbox: b.Sandbox, Layers: layers, Contexts: b.Contexts, CacheMounts: b.CacheMounts,
		Archives: b.Archives, Log: b.Log, RejectedCacheRecords: b.RejectedCacheRecords, CopyIntoMounts: b.copyIntoMounts,
		Downloads: downloads{b},
	}
}

// resolveImage finds a base image: held locally, or pulled. It reads it
// through images, the build's, which hold its blobs.
func (b *Builder) resolveImage(ctx context.Context, images Images, ref string) (*image.Image, error) {
	img, err := images.Get(ctx, ref)
	if err == nil || !errdefs.IsNotFound(err) || b.Puller == nil {
		if errdefs.IsNotFound(err) {
			return nil, errdefs.NotFound("image %s not found locally and no registry to pull it from", ref)
		}
		return img, err
	}
	pulled, err := b.Puller.Pull(ctx, ref)
	if err != nil {
		return nil, err
	}
	return images.Get(ctx, string(pulled.ID()))
}
