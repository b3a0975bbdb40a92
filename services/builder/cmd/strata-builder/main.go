// Command strata-builder serves strata.builder.v1.BuildService.
package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"strings"

	"google.golang.org/grpc"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/flagenv"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/grpcserver"
	"github.com/strata-build/strata/services/builder/internal/archive"
	"github.com/strata-build/strata/services/builder/internal/build"
	"github.com/strata-build/strata/services/builder/internal/cachemount"
	"github.com/strata-build/strata/services/builder/internal/content"
	"github.com/strata-build/strata/services/builder/internal/egress"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/server"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// config is the builder's own flags.
type config struct {
	metadataAddr  string
	blobstoreAddr string
	client        grpcclient.Config
	limits        transfer.Limits
	builds        buildConfig
	// registries is where FROM, pull and push may connect.
	registries             egress.Policy
	allowPrivateRegistries bool
	allowRegistries        string
	registryAddr           string
}

func (c *config) register(fs *flagenv.Set) {
	fs.StringVar(&c.metadataAddr, "metadata-addr", grpcclient.DefaultMetadataAddr, "address of the metadata service")
	fs.StringVar(&c.blobstoreAddr, "blobstore-addr", grpcclient.DefaultBlobstoreAddr, "address of the blob store")
	fs.Int64Var(&c.limits.MaxSize, "max-layer-size", compression.DefaultMaxSize, "most bytes one layer or ADD archive may hold uncompressed (import, load, pull, unpack, ADD)")
	fs.Int64Var(&c.limits.MaxExpansion, "max-expansion", compression.DefaultMaxExpansion, "most a compressed layer or archive may expand, uncompressed bytes per compressed byte, past 256 MiB")
	fs.Int64Var(&c.limits.MaxArchiveSize, "max-archive-size", transfer.DefaultMaxArchiveSize, "most bytes a load archive may hold")
	fs.IntVar(&c.limits.MaxArchiveDocuments, "max-archive-documents", transfer.DefaultMaxArchiveDocuments, "most JSON documents and links a load archive may hold (kept in memory during the load)")
	fs.Int64Var(&c.limits.MaxArchiveDocumentBytes, "max-archive-document-bytes", transfer.DefaultMaxArchiveDocumentBytes, "most bytes the JSON documents of a load archive may hold together")
	fs.BoolVar(&c.allowPrivateRegistries, "allow-private-registries", false, "let FROM, pull and push reach registries on loopback, link-local, private and other special-purpose addresses")
	fs.StringVar(&c.allowRegistries, "allow-registries", "", "registries FROM, pull and push may reach whatever their address: comma-separated host, host:port or address prefixes (127.0.0.0/8)")
	fs.StringVar(&c.registryAddr, "registry-addr", "", "Strata's own registry, host:port, which FROM, pull and push may reach whatever its address")
	c.client.RegisterFlags(fs)
	c.builds.register(fs)
}

func (c *config) validate(fs *flagenv.Set) error {
	var errs []error
	for name, addr := range map[string]string{"metadata-addr": c.metadataAddr, "blobstore-addr": c.blobstoreAddr} {
		if err := grpcserver.ValidateAddr(addr); err != nil {
			errs = append(errs, fs.Invalid(name, err))
		}
	}
	for name, v := range map[string]int64{"max-layer-size": c.limits.MaxSize, "max-expansion": c.limits.MaxExpansion, "max-archive-size": c.limits.MaxArchiveSize,
		"max-archive-documents": int64(c.limits.MaxArchiveDocuments), "max-archive-document-bytes": c.limits.MaxArchiveDocumentBytes} {
		if v <= 0 {
			errs = append(errs, fs.Invalid(name, errors.New("must be positive")))
		}
	}
	c.registries = egress.Policy{AllowPrivate: c.allowPrivateRegistries, Allow: "the builder's --allow-private-registries or --allow-registries"}
	if err := c.registries.ParseAllowList(c.allowRegistries); err != nil {
		errs = append(errs, fs.Invalid("allow-registries", err))
	}
	if c.registryAddr != "" {
		if err := grpcserver.ValidateAddr(c.registryAddr); err != nil {
			errs = append(errs, fs.Invalid("registry-addr", err))
		}
		c.registries.Hosts = append(c.registries.Hosts, strings.ToLower(c.registryAddr))
	}
	errs = append(errs, c.client.Validate(fs), c.builds.validate(fs))
	return errors.Join(errs...)
}

// init keeps the main goroutine on the process's main thread for good
// (Go's documented way: main then runs on it and no other goroutine does).
// The RUN network makes namespaces on threads it locks, switches and lets
// the runtime end; Go cannot end the main thread, so it parks it, in the
// new namespace, for good. The main thread's namespaces are the ones
// /proc/PID/ns shows, where `docker exec` and Kubernetes' exec probes run:
// the health probe then ran in a RUN step's network, found nothing on
// 127.0.0.1:50051, and a builder that served kept failing its health
// check (one start in three of the scale stack's builders).
func init() { runtime.LockOSThread() }

func main() {
	var cfg config
	// builds is set by Wire; Drain, which runs only after Wire succeeded,
	// waits for its running builds.
	var builds *server.Builds
	os.Exit(grpcserver.Binary{
		Name:          "strata-builder",
		DefaultListen: ":50051",
		Flags:         cfg.register,
		Validate:      cfg.validate,
		// A stop cancels running builds (NewBuilds); their handlers then
		// kill their steps and unmount their roots, and the server waits
		// for that before the sandbox's network is released.
		ServerOptions: []grpc.ServerOption{grpc.WaitForHandlers(true)},
		// A rolling restart: SIGTERM refuses new builds and lets running
		// ones finish for up to --drain-timeout before the stop cancels
		// what is left.
		Drain: func(ctx context.Context, log *slog.Logger) {
			ctx, cancel := context.WithTimeout(ctx, cfg.builds.drainTimeout)
			defer cancel()
			if err := builds.Drain(ctx); err != nil {
				log.Warn("drain timed out: canceling the builds still running", "timeout", cfg.builds.drainTimeout.String())
			}
		},
		Wire: func(ctx context.Context, srv *grpcserver.Server, log *slog.Logger) (func(), error) {
			metaConn, err := grpcclient.Dial(cfg.metadataAddr, cfg.client, grpcclient.Naming("metadata service", cfg.metadataAddr)...)
			if err != nil {
				return nil, err
			}
			blobConn, err := grpcclient.Dial(cfg.blobstoreAddr, cfg.client, append(blobclient.DialOptions(), grpcclient.Naming("blob store", cfg.blobstoreAddr)...)...)
			if err != nil {
				metaConn.Close()
				return nil, err
			}
			blobc, metac := blobclient.New(blobConn), metadatav1.NewImageServiceClient(metaConn)
			blobs := content.New(blobc)
			images := image.NewStore(blobs, metac)
			leases := build.MetadataLeases{Images: metac, Blobs: blobc, Expiry: cfg.builds.leaseExpiry, Log: log}
			transfers := transfer.New(blobs, images, log, transfer.WithLimits(cfg.limits), transfer.WithEgress(cfg.registries))
			// The peers' hosts, not their targets: "dns:///metadata:50052" is
			// not an address RUN steps could be kept from.
			peers := append(grpcclient.Hosts(cfg.metadataAddr), grpcclient.Hosts(cfg.blobstoreAddr)...)
			var releaseBuilds func()
			var cacheMounts *cachemount.Store
			builds, cacheMounts, releaseBuilds, err = cfg.builds.wire(ctx, peers, blobs, images, leases, metac, transfers, cfg.limits.Limits, srv.Metrics, log)
			if err != nil {
				metaConn.Close()
				blobConn.Close()
				return nil, err
			}
			builderv1.RegisterBuildServiceServer(srv.GRPC, server.New(builds, transfers, archive.New(transfers, blobs, images), cacheMounts))
			return func() {
				releaseBuilds()
				metaConn.Close()
				blobConn.Close()
			}, nil
		},
	}.Main(os.Args[1:]))
}
