package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	units "github.com/docker/go-units"
	"github.com/prometheus/client_golang/prometheus"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/flagenv"
	"github.com/strata-build/strata/services/builder/internal/build"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/builds"
	"github.com/strata-build/strata/services/builder/internal/cachemount"
	"github.com/strata-build/strata/services/builder/internal/content"
	"github.com/strata-build/strata/services/builder/internal/egress"
	"github.com/strata-build/strata/services/builder/internal/exec"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/sandbox"
	"github.com/strata-build/strata/services/builder/internal/server"
	"github.com/strata-build/strata/services/builder/internal/snapshot"
	"github.com/strata-build/strata/services/builder/internal/stepnet"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// buildConfig is the flags of the Build RPC.
type buildConfig struct {
	stateDir          string
	maxBuilds         int
	parallelStages    int
	detachedGrace     time.Duration
	keepBuilds        int
	contextStoreBytes int64
	snapshotBytes     int64
	cacheMountBytes   byteSize
	allowPrivateURLs  bool
	limits            build.Limits
	stepMemory        byteSize
	stepPids          int64
	stepCPUs          float64
	stepDisk          byteSize
	minFreeDisk       byteSize
	stepSubnet        string
	stepBridge        string
	stepDeny          string
	entitlements      string
	downloadTimeout   time.Duration
	leaseExpiry       time.Duration
	drainTimeout      time.Duration
}

// byteSize is a flag of bytes that takes Docker's sizes too ("4g", "512m").
type byteSize int64

func (b *byteSize) String() string { return fmt.Sprint(int64(*b)) }

func (b *byteSize) Set(s string) error {
	n, err := units.RAMInBytes(s)
	*b = byteSize(n)
	return err
}

// entitlementNetworkHost is BuildKit's name of the right to run RUN steps
// in the builder's own network namespace.
const entitlementNetworkHost = "network.host"

func (c *buildConfig) register(fs *flagenv.Set) {
	fs.StringVar(&c.stateDir, "state-dir", "/var/lib/strata-builder", "directory for unpacked layers, step mounts and context files (a real filesystem, not overlayfs)")
	fs.IntVar(&c.maxBuilds, "max-builds", 4, "most builds that run at once; more wait")
	fs.IntVar(&c.parallelStages, "parallel-stages", exec.DefaultParallelStages, "most stages of one build that run at once (stages that do not build on each other run in parallel; 1: one after another)")
	fs.DurationVar(&c.detachedGrace, "detached-grace", 60*time.Second, "how long a build whose client went away keeps running for a client to reattach (WatchBuild) before it is canceled")
	fs.IntVar(&c.keepBuilds, "keep-builds", 100, "most ended builds ListBuilds, GetBuild and WatchBuild still know")
	fs.Int64Var(&c.contextStoreBytes, "context-store-bytes", 10<<30, "most bytes of build context files kept between builds")
	fs.Int64Var(&c.snapshotBytes, "snapshot-bytes", 20<<30, "most bytes of unpacked layers kept between builds")
	c.cacheMountBytes = cachemount.DefaultMaxBytes
	fs.Var(&c.cacheMountBytes, "cache-mount-bytes", "most bytes the RUN --mount=type=cache directories keep between builds; past it, the least recently used directories no step uses are removed (bytes, or 10g, 512m)")
	fs.BoolVar(&c.allowPrivateURLs, "allow-private-urls", false, "let ADD download from loopback, link-local, private and other special-purpose addresses")
	fs.DurationVar(&c.downloadTimeout, "download-timeout", build.DefaultDownloadTimeout, "longest one ADD download may take, start to end")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 5*time.Minute, "on SIGTERM, how long running builds may go on finishing (new ones are refused and health is NOT_SERVING) before they are canceled and the builder stops")
	fs.DurationVar(&c.leaseExpiry, "build-lease-expiry", build.DefaultLeaseExpiry, "how long the lease that keeps a build's blobs from garbage collection lasts unless renewed (a running build renews it every third of this)")
	fs.IntVar(&c.limits.MaxInstructions, "max-instructions", build.DefaultMaxInstructions, "most instructions a Dockerfile may hold")
	fs.Int64Var(&c.limits.MaxConfigBytes, "max-config-bytes", build.DefaultMaxConfigBytes, "most bytes of image config a build's steps may record together (each step's image holds every label and history row before it)")
	c.stepMemory = byteSize(sandbox.DefaultMemory())
	fs.Var(&c.stepMemory, "step-memory", "memory limit of every RUN step, and the most a build's --memory may ask (bytes, or 4g, 512m; default: half of the builder's memory)")
	fs.Int64Var(&c.stepPids, "step-pids", sandbox.DefaultPids, "process limit of every RUN step, and the most a build's --pids-limit may ask")
	fs.Float64Var(&c.stepCPUs, "step-cpus", float64(runtime.NumCPU()), "CPUs every RUN step may use, and the most a build's --cpu-quota/--cpu-period may ask")
	c.stepDisk = sandbox.DefaultStepDisk
	fs.Var(&c.stepDisk, "step-disk", "most bytes one RUN step may write (a step past it is killed), and the most a build's --disk may ask (bytes, or 10g, 512m)")
	fs.Var(&c.minFreeDisk, "min-free-disk", "free space of the state directory's filesystem below which the RUN step that wrote the most is killed and new steps wait (bytes, or 2g; default 0: 5% of that filesystem, at most 1 GiB)")
	fs.StringVar(&c.stepSubnet, "step-subnet", "", "IPv4 subnet of the RUN steps' bridge (default: a free /24 of 10.88.0.0/14)")
	fs.StringVar(&c.stepBridge, "step-bridge", "", "name of the RUN steps' bridge (default: strata and 8 hex digits of the state directory)")
	fs.StringVar(&c.stepDeny, "step-deny", "", "comma-separated hosts, addresses and CIDR prefixes RUN steps may not reach, besides the builder's host, its metadata and blob store, and link-local addresses (S3, a database, ...)")
	fs.StringVar(&c.entitlements, "allow-insecure-entitlement", "", "comma-separated rights builds may ask for: network.host (RUN in the builder's network namespace)")
}

func (c *buildConfig) validate(fs *flagenv.Set) error {
	var errs []error
	if c.stateDir == "" {
		errs = append(errs, fs.Invalid("state-dir", errors.New("a directory is required")))
	}
	if c.maxBuilds < 1 {
		errs = append(errs, fs.Invalid("max-builds", errors.New("must be at least 1")))
	}
	if c.parallelStages < 1 {
		errs = append(errs, fs.Invalid("parallel-stages", errors.New("must be at least 1")))
	}
	if c.detachedGrace < 0 {
		errs = append(errs, fs.Invalid("detached-grace", errors.New("must not be negative")))
	}
	if c.keepBuilds < 1 {
		errs = append(errs, fs.Invalid("keep-builds", errors.New("must be at least 1")))
	}
	if c.contextStoreBytes <= 0 {
		errs = append(errs, fs.Invalid("context-store-bytes", errors.New("must be positive")))
	}
	if c.snapshotBytes <= 0 {
		errs = append(errs, fs.Invalid("snapshot-bytes", errors.New("must be positive")))
	}
	if c.cacheMountBytes <= 0 {
		errs = append(errs, fs.Invalid("cache-mount-bytes", errors.New("must be positive")))
	}
	if c.drainTimeout < 0 {
		errs = append(errs, fs.Invalid("drain-timeout", errors.New("must not be negative")))
	}
	if c.leaseExpiry < 3*time.Second || c.leaseExpiry > 7*24*time.Hour {
		// The metadata service's bound is a week; below a few seconds the
		// renewals could not keep up.
		errs = append(errs, fs.Invalid("build-lease-expiry", errors.New("must be between 3s and 168h")))
	}
	if c.limits.MaxInstructions <= 0 {
		errs = append(errs, fs.Invalid("max-instructions", errors.New("must be positive")))
	}
	if c.limits.MaxConfigBytes <= 0 {
		errs = append(errs, fs.Invalid("max-config-bytes", errors.New("must be positive")))
	}
	if c.stepMemory < 6<<20 {
		errs = append(errs, fs.Invalid("step-memory", errors.New("must be at least 6 MiB")))
	}
	if c.stepPids < 1 {
		errs = append(errs, fs.Invalid("step-pids", errors.New("must be at least 1")))
	}
	if c.stepCPUs < 0.01 {
		errs = append(errs, fs.Invalid("step-cpus", errors.New("must be at least 0.01")))
	}
	if c.stepDisk < 1<<20 {
		errs = append(errs, fs.Invalid("step-disk", errors.New("must be at least 1 MiB")))
	}
	if c.minFreeDisk < 0 {
		errs = append(errs, fs.Invalid("min-free-disk", errors.New("must not be negative")))
	}
	if c.stepSubnet != "" {
		if p, err := netip.ParsePrefix(c.stepSubnet); err != nil || !p.Addr().Is4() || p.Bits() > 28 {
			errs = append(errs, fs.Invalid("step-subnet", errors.New("want an IPv4 prefix of /28 or larger, such as 10.88.0.0/24")))
		}
	}
	if len(c.stepBridge) > 15 {
		errs = append(errs, fs.Invalid("step-bridge", errors.New("a network interface name has at most 15 characters")))
	}
	for _, e := range list(c.entitlements) {
		if e != entitlementNetworkHost {
			errs = append(errs, fs.Invalid("allow-insecure-entitlement", fmt.Errorf("unknown entitlement %q: want %s", e, entitlementNetworkHost)))
		}
	}
	if c.downloadTimeout <= 0 {
		errs = append(errs, fs.Invalid("download-timeout", errors.New("must be positive")))
	}
	return errors.Join(errs...)
}

// list splits a comma-separated flag value, dropping empty items.
func list(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// puller pulls FROM images that are not held, through the transfer service.
type puller struct {
	transfers *transfer.Service
	images    *image.Store
}

func (p puller) Pull(ctx context.Context, ref string) (*image.Image, error) {
	res, err := p.transfers.Pull(ctx, ref, transfer.PullOptions{}, nil)
	if err != nil {
		return nil, err
	}
	return p.images.Get(ctx, string(res.ImageID))
}

// wire builds the build service. peers are the addresses of the services
// the builder calls, which RUN steps may not reach. The returned function
// releases the RUN sandbox's network once the server has stopped.
func (c *buildConfig) wire(ctx context.Context, peers []string, blobs *content.Store, images *image.Store, leases build.Leases, index metadatav1.ImageServiceClient, transfers *transfer.Service,
	limits compression.Limits, metrics prometheus.Registerer, log *slog.Logger) (*server.Builds, *cachemount.Store, func(), error) {
	rejected := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "strata_build_cache_records_rejected_total",
		Help: "Cache records ignored because their image is not what the step makes of its parent (a miss: the step ran).",
	})
	if err := metrics.Register(rejected); err != nil {
		return nil, nil, nil, err
	}
	// The sandbox first: it kills the containers a crashed builder left
	// before the snapshot store unmounts the root filesystems they run in.
	var subnet netip.Prefix
	if c.stepSubnet != "" {
		subnet = netip.MustParsePrefix(c.stepSubnet) // validate checked it
	}
	runner, err := sandbox.New(ctx, filepath.Join(c.stateDir, "sandbox"), sandbox.Options{
		Memory: int64(c.stepMemory), Pids: c.stepPids, CPUs: c.stepCPUs,
		StepDisk: int64(c.stepDisk), MinFreeDisk: int64(c.minFreeDisk),
		Network: stepnet.Options{
			Bridge: c.stepBridge, Subnet: subnet, Deny: append(peers, list(c.stepDeny)...),
			AllowHost: slices.Contains(list(c.entitlements), entitlementNetworkHost),
			PoolSize:  c.maxBuilds,
		},
	})
	if err != nil {
		return nil, nil, nil, err
	}
	release := func() { runner.Close(context.Background()) }
	snaps, err := snapshot.New(filepath.Join(c.stateDir, "snapshots"), snapshot.Options{MaxBytes: c.snapshotBytes, Limits: limits})
	if err != nil {
		release()
		return nil, nil, nil, err
	}
	contexts, err := buildctx.NewStore(filepath.Join(c.stateDir, "context"), c.contextStoreBytes)
	if err != nil {
		release()
		return nil, nil, nil, err
	}
	cacheMounts, err := cachemount.New(filepath.Join(c.stateDir, "cachemounts"), int64(c.cacheMountBytes))
	if err != nil {
		release()
		return nil, nil, nil, err
	}
	b := &build.Builder{
		Images:               images,
		Puller:               puller{transfers: transfers, images: images},
		Snapshots:            exec.SnapshotStore(snaps, blobs),
		Sandbox:              exec.RuncSandbox(runner),
		Layers:               exec.LayerWriter(blobs),
		Contexts:             contexts,
		CacheMounts:          cacheMounts,
		Archives:             limits,
		Limits:               c.limits,
		URLPolicy:            egress.Policy{AllowPrivate: c.allowPrivateURLs, Allow: "the builder's --allow-private-urls"},
		DownloadTimeout:      c.downloadTimeout,
		Log:                  log,
		RejectedCacheRecords: rejected,
		Leases:               leases,
		ParallelStages:       c.parallelStages,
	}
	receiver := buildctx.NewReceiver(contexts, c.maxBuilds, log)
	receiver.SetTarSources(blobs.Open, limits)
	// Build events are a convenience for WatchEvents: a metadata service
	// that is down or older (no RecordBuildEvent) does not fail a build.
	record := func(ctx context.Context, ev *metadatav1.Event) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := index.RecordBuildEvent(ctx, &metadatav1.RecordBuildEventRequest{Event: ev}); err != nil {
			log.WarnContext(ctx, "recording a build event", "action", ev.GetAction().String(), "build", ev.GetAttributes()["build_id"], "error", err.Error())
		}
	}
	return server.NewBuilds(ctx, b, receiver, builds.NewRegistry(c.detachedGrace, c.keepBuilds), record), cacheMounts, release, nil
}
