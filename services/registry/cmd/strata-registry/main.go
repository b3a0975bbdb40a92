// Command strata-registry serves the OCI distribution API over the blob
// store and the metadata service.
package main

import (
	"context"
	"errors"
	"log/slog"
	"os"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/flagenv"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/grpcserver"
	"github.com/strata-build/strata/services/registry/internal/registry"
)

// config is the registry's own flags.
type config struct {
	metadataAddr  string
	blobstoreAddr string
	anonymousPull bool
	client        grpcclient.Config
}

func (c *config) register(fs *flagenv.Set) {
	fs.StringVar(&c.metadataAddr, "metadata-addr", grpcclient.DefaultMetadataAddr, "address of the metadata service")
	fs.StringVar(&c.blobstoreAddr, "blobstore-addr", grpcclient.DefaultBlobstoreAddr, "address of the blob store")
	fs.BoolVar(&c.anonymousPull, "anonymous-pull", false, "let requests without a token pull (auth on)")
	c.client.RegisterFlags(fs)
}

func (c *config) validate(fs *flagenv.Set) error {
	var errs []error
	if err := grpcserver.ValidateAddr(c.metadataAddr); err != nil {
		errs = append(errs, fs.Invalid("metadata-addr", err))
	}
	if err := grpcserver.ValidateAddr(c.blobstoreAddr); err != nil {
		errs = append(errs, fs.Invalid("blobstore-addr", err))
	}
	errs = append(errs, c.client.Validate(fs))
	return errors.Join(errs...)
}

func main() {
	var cfg config
	os.Exit(grpcserver.Binary{
		Name:          "strata-registry",
		DefaultListen: ":5000",
		Flags:         cfg.register,
		Validate:      cfg.validate,
		Wire: func(ctx context.Context, srv *grpcserver.Server, log *slog.Logger) (func(), error) {
			metaConn, err := grpcclient.Dial(cfg.metadataAddr, cfg.client, grpcclient.Naming("metadata service", cfg.metadataAddr)...)
			if err != nil {
				return nil, err
			}
			blobConn, err := grpcclient.Dial(cfg.blobstoreAddr, cfg.client,
				append(grpcclient.Naming("blob store", cfg.blobstoreAddr), blobclient.DialOptions()...)...)
			if err != nil {
				metaConn.Close()
				return nil, err
			}
			auth := registry.NewAuth(srv.Auth(), cfg.anonymousPull)
			srv.HTTP = registry.New(metadatav1.NewImageServiceClient(metaConn), blobclient.New(blobConn), auth, log, registry.NewMetrics(srv.Metrics))
			log.Info("registry wired", "metadata", cfg.metadataAddr, "blobstore", cfg.blobstoreAddr, "auth", srv.Auth().Enabled(), "anonymous_pull", cfg.anonymousPull)
			return func() {
				blobConn.Close()
				metaConn.Close()
			}, nil
		},
	}.Main(os.Args[1:]))
}
