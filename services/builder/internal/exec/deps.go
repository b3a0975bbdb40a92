// Package exec runs a build's plan (internal/plan): the execution stage of
// the builder's pipeline, Dockerfile → instructions → plan → exec. It
// reaches the rest of the builder through the small interfaces below:
// Images (the metadata service), Snapshots and Mount (root filesystems
// over layers), Sandbox (RUN), Layers (layer tars into blobs); COPY and ADD
// are internal/copier's.
package exec

import (
	"context"
	"io"
	"log/slog"
	"net"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/prometheus/client_golang/prometheus"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer"
	"github.com/strata-build/strata/services/builder/internal/plan"
	"github.com/strata-build/strata/services/builder/internal/sandbox"
)

// Images reads and records images and their cache records (image.Store is
// it).
type Images interface {
	// Get returns an image by reference or ID; ErrNotFound when unknown.
	Get(ctx context.Context, ref string) (*image.Image, error)
	// Put records an image with its tags.
	Put(ctx context.Context, n image.New) (*metadatav1.Image, error)
	// PutCacheRecord stores a record of a recorded image and returns the
	// image ID of the key's record: another image's when another build
	// recorded the key first (the first writer wins).
	PutCacheRecord(ctx context.Context, r image.CacheRecord) (string, error)
}

// Blobs is the part of the blob store a build uses (content.Store is it).
type Blobs interface {
	// Open reads a blob from its start; ErrNotFound when absent.
	Open(ctx context.Context, d digest.Digest) (io.ReadCloser, error)
	// Writer opens an upload whose digest is given at Commit.
	Writer(ctx context.Context, mediaType string) (layer.BlobWriter, error)
}

// Mount is a writable root filesystem over an image's layers.
type Mount interface {
	// Root is the merged directory the step works in.
	Root() string
	// Upper is the directory that collects the step's changes.
	Upper() string
	// Commit keeps the upper directory as the snapshot of the layer it
	// holds (l's diff ID and size), so later steps mount it without
	// unpacking, and returns it pinned until released.
	Commit(ctx context.Context, l image.Layer) (Snapshot, error)
	// Release unmounts and removes what was not committed.
	Release() error
}

// Snapshot is a committed layer directory, kept from eviction until
// released.
type Snapshot interface {
	// Dir holds the layer's files in overlay form (what Layers reads).
	Dir() string
	Release()
}

// Snapshots mounts root filesystems over layers.
type Snapshots interface {
	// Mount returns a writable root filesystem over layers (bottom first),
	// unpacking the layers it does not hold: from opts.Tars when it has the
	// layer's diff ID, from its blob otherwise.
	Mount(ctx context.Context, layers []image.Layer, opts MountOptions) (Mount, error)
	// Add keeps as a snapshot over layers the files fill writes into an
	// empty directory (in overlay form), so that a later Mount finds the
	// layer unpacked, and returns it pinned until released with the diff
	// ID and size fill returned, which the caller vouches for.
	Add(ctx context.Context, layers []image.Layer, fill func(ctx context.Context, dir string) (image.Layer, error)) (image.Layer, Snapshot, error)
}

// MountOptions say how to mount a step.
type MountOptions struct {
	// Init puts Docker's init layer (the mount points of a container)
	// between the layers and the upper directory, so they never show up in
	// the step's diff.
	Init bool
	// Tars produce, by diff ID, layers this build made without a directory
	// (a COPY written straight from the context) whose blobs may not be
	// stored yet.
	Tars map[digest.Digest]layer.Source
}

// Process is a RUN step's process.
type Process struct {
	Root     string
	Args     []string
	Env      []string
	Cwd      string
	User     string
	Hostname string
	Network  builderv1.NetworkMode
	// Resources are the build's limits (nil: the sandbox's defaults).
	Resources *builderv1.RunResources
	// Upper is the directory collecting the step's writes, which the
	// sandbox holds to its disk limits; Discard gives its space back
	// (Mount.Release) when the sandbox killed the step for disk.
	Upper   string
	Discard func() error
	Stdout  io.Writer
	Stderr  io.Writer
	// Mounts are the step's RUN --mount options, their mount points
	// present in Root.
	Mounts []specs.Mount
	// Secrets are the step's secret mounts with their values.
	Secrets []sandbox.Secret
	// Agents are the step's ssh mounts, served by the build's agents.
	Agents []sandbox.Agent
}

// Sandbox runs RUN steps.
type Sandbox interface {
	// Admit refuses, before a build runs anything, a network or limits
	// the sandbox does not allow, with an error naming the flag.
	Admit(network builderv1.NetworkMode, res *builderv1.RunResources) error
	// Run runs the process to its end and returns its exit code; the
	// process is killed when ctx ends. A process the sandbox stopped at a
	// limit is an error saying which.
	Run(ctx context.Context, p Process) (int, error)
}

// Layers turns layer tars (the changes of an upper directory or a committed
// snapshot, see layer.DirSource, or a tar written from elsewhere) into layers.
type Layers interface {
	// DiffID returns the layer's diff ID and Docker's diff size, without
	// storing anything.
	DiffID(ctx context.Context, src layer.Source) (image.Layer, error)
	// Store compresses the layer and stores its blob in the blob store.
	Store(ctx context.Context, src layer.Source) (image.Layer, error)
}

// Deps are what running a plan needs; all are required but the log and
// the metric.
type Deps struct {
	Images    Images
	Snapshots Snapshots
	Sandbox   Sandbox
	Layers    Layers
	// Contexts holds context file contents (and ADD downloads).
	Contexts *buildctx.Store
	// CacheMounts holds RUN --mount=type=cache directories; without it a
	// step with a cache mount fails.
	CacheMounts CacheMounts
	// Archives bounds the decompression of ADD's local archives, as layers
	// are bounded.
	Archives compression.Limits
	Log      *slog.Logger
	// RejectedCacheRecords, if set, counts the cache records ignored
	// because their image is not what the step makes.
	RejectedCacheRecords prometheus.Counter
	// CopyIntoMounts makes every COPY go into its mount, as when its layer
	// cannot be written from the context alone (tests compare the two).
	CopyIntoMounts bool
	// Downloads fetches the ADD --checksum sources of the steps that run
	// (planning leaves them to the step); a build with one fails without it.
	Downloads plan.Downloads
}

// Options are one run's.
type Options struct {
	// Hits are the cache records found for the plan's keys: image IDs by
	// key. A hit is used only if its image is what the step makes.
	Hits map[digest.Digest]string
	// Context is the build context the plan's COPY and ADD read.
	Context *buildctx.Context
	// ContextContents, when set, waits until the context's file contents
	// are all in the context store, or returns why they cannot be; COPY and
	// ADD call it before reading them. Nil means they are there.
	ContextContents func(ctx context.Context) error
	Network         builderv1.NetworkMode
	// Resources limit each RUN step; nil means the sandbox's defaults.
	Resources *builderv1.RunResources
	// ParallelStages is the most stages that run at once (one at a time
	// when zero; the builder passes its flag, DefaultParallelStages
	// unless set).
	ParallelStages int
	// Secrets are the build's secrets by ID, for RUN --mount=type=secret;
	// they are given to the steps that mount them and kept nowhere.
	Secrets map[string][]byte
	// LiveEvents sends each event as it happens, the steps of stages
	// that run at once interleaved, rather than in the order of a
	// sequential build.
	LiveEvents bool
	// Agents are the SSH agents the build's client forwards, for RUN
	// --mount=type=ssh; nil when it forwards none.
	Agents Agents
}

// Agents are the SSH agents a build's client forwards.
type Agents interface {
	// Has reports whether the build forwards the agent id.
	Has(id string) bool
	// Serve carries one connection of a step to the agent id until conn
	// or ctx is done.
	Serve(ctx context.Context, id string, conn net.Conn)
}

// Events receives a build's progress.
type Events func(*builderv1.BuildEvent)
