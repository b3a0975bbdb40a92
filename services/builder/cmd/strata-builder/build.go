package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/flagenv"
	"github.com/strata-build/strata/services/builder/internal/build"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/content"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer"
	"github.com/strata-build/strata/services/builder/internal/sandbox"
	"github.com/strata-build/strata/services/builder/internal/server"
	"github.com/strata-build/strata/services/builder/internal/snapshot"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// buildConfig is the flags of the Build RPC.
type buildConfig struct {
	stateDir          string
	maxBuilds         int
	contextStoreBytes int64
	snapshotBytes     int64
	allowPrivateURLs  bool
	limits            build.Limits
}

func (c *buildConfig) register(fs *flagenv.Set) {
	fs.StringVar(&c.stateDir, "state-dir", "/var/lib/strata-builder", "directory for unpacked layers, step mounts and context files (a real filesystem, not overlayfs)")
	fs.IntVar(&c.maxBuilds, "max-builds", 4, "most builds that run at once; more wait")
	fs.Int64Var(&c.contextStoreBytes, "context-store-bytes", 10<<30, "most bytes of build context files kept between builds")
	fs.Int64Var(&c.snapshotBytes, "snapshot-bytes", 20<<30, "most bytes of unpacked layers kept between builds")
	fs.BoolVar(&c.allowPrivateURLs, "allow-private-urls", false, "let ADD download from loopback, link-local and private addresses")
	fs.IntVar(&c.limits.MaxInstructions, "max-instructions", build.DefaultMaxInstructions, "most instructions a Dockerfile may hold")
	fs.Int64Var(&c.limits.MaxConfigBytes, "max-config-bytes", build.DefaultMaxConfigBytes, "most bytes of image config a build's steps may record together (each step's image holds every label and history row before it)")
}

func (c *buildConfig) validate(fs *flagenv.Set) error {
	var errs []error
	if c.stateDir == "" {
		errs = append(errs, fs.Invalid("state-dir", errors.New("a directory is required")))
	}
	if c.maxBuilds < 1 {
		errs = append(errs, fs.Invalid("max-builds", errors.New("must be at least 1")))
	}
	if c.contextStoreBytes <= 0 {
		errs = append(errs, fs.Invalid("context-store-bytes", errors.New("must be positive")))
	}
	if c.snapshotBytes <= 0 {
		errs = append(errs, fs.Invalid("snapshot-bytes", errors.New("must be positive")))
	}
	if c.limits.MaxInstructions <= 0 {
		errs = append(errs, fs.Invalid("max-instructions", errors.New("must be positive")))
	}
	if c.limits.MaxConfigBytes <= 0 {
		errs = append(errs, fs.Invalid("max-config-bytes", errors.New("must be positive")))
	}
	return errors.Join(errs...)
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

func (c *buildConfig) wire(ctx context.Context, blobs *content.Store, images *image.Store, index metadatav1.ImageServiceClient, transfers *transfer.Service, limits compression.Limits, log *slog.Logger) (*server.Builds, error) {
	snaps, err := snapshot.New(filepath.Join(c.stateDir, "snapshots"), snapshot.Options{MaxBytes: c.snapshotBytes, Limits: limits})
	if err != nil {
		return nil, err
	}
	contexts, err := buildctx.NewStore(filepath.Join(c.stateDir, "context"), c.contextStoreBytes)
	if err != nil {
		return nil, err
	}
	runner, err := sandbox.New(ctx, filepath.Join(c.stateDir, "sandbox"), sandbox.Options{})
	if err != nil {
		return nil, err
	}
	b := &build.Builder{
		Images:    images,
		Index:     index,
		Puller:    puller{transfers: transfers, images: images},
		Snapshots: build.SnapshotStore(snaps, blobs),
		Sandbox:   build.RuncSandbox(runner),
		Layers: build.LayerWriter(func(ctx context.Context, mediaType string) (layer.BlobWriter, error) {
			return blobs.Writer(ctx, mediaType)
		}),
		Contexts:  contexts,
		Archives:  limits,
		Limits:    c.limits,
		URLPolicy: build.URLPolicy{AllowPrivate: c.allowPrivateURLs},
		Log:       log,
	}
	return server.NewBuilds(b, contexts, c.maxBuilds), nil
}
