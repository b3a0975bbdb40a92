// Command strata-metadata serves strata.metadata.v1.ImageService.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/flagenv"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/grpcserver"
	"github.com/strata-build/strata/services/metadata/internal/image"
	"github.com/strata-build/strata/services/metadata/internal/server"
	"github.com/strata-build/strata/services/metadata/internal/sqlstore"
)

// config is the metadata service's own flags.
type config struct {
	store          string
	sqlitePath     string
	postgresDSN    string
	blobstoreAddr  string
	client         grpcclient.Config
	gcInterval     time.Duration
	gcGrace        time.Duration
	eventRetention time.Duration
	probeInterval  time.Duration
}

func (c *config) register(fs *flagenv.Set) {
	fs.StringVar(&c.store, "store", "sqlite", "where metadata lives: sqlite (an embedded file) or postgres (shared by replicas)")
	fs.StringVar(&c.sqlitePath, "sqlite-path", "/var/lib/strata/metadata.db", "file of the sqlite store")
	fs.StringVar(&c.postgresDSN, "postgres-dsn", "", "PostgreSQL connection string of the postgres store, postgres://user@host:port/db")
	fs.StringVar(&c.blobstoreAddr, "blobstore-addr", grpcclient.DefaultBlobstoreAddr, "address of the blob store")
	fs.DurationVar(&c.gcInterval, "gc-interval", time.Hour, "how often unreferenced blobs are garbage collected (0: only on request)")
	fs.DurationVar(&c.gcGrace, "gc-grace-period", time.Hour, "unreferenced blobs younger than this are kept (uploads and builds in flight)")
	fs.DurationVar(&c.eventRetention, "event-retention", 24*time.Hour, "how long events stay replayable")
	fs.DurationVar(&c.probeInterval, "health-probe-interval", 5*time.Second, "how often the service checks that its database answers; gRPC health is NOT_SERVING while it does not")
	c.client.RegisterFlags(fs)
}

func (c *config) validate(fs *flagenv.Set) error {
	var errs []error
	switch c.store {
	case "sqlite":
		if c.sqlitePath == "" {
			errs = append(errs, fs.Invalid("sqlite-path", errors.New("the sqlite store needs a file path")))
		}
	case "postgres":
		if c.postgresDSN == "" {
			errs = append(errs, fs.Invalid("postgres-dsn", errors.New("the postgres store needs a DSN")))
		}
	default:
		errs = append(errs, fs.Invalid("store", errors.New("want sqlite or postgres")))
	}
	if err := grpcserver.ValidateAddr(c.blobstoreAddr); err != nil {
		errs = append(errs, fs.Invalid("blobstore-addr", err))
	}
	if c.gcInterval < 0 {
		errs = append(errs, fs.Invalid("gc-interval", errors.New("must not be negative")))
	}
	if c.gcGrace < 0 {
		errs = append(errs, fs.Invalid("gc-grace-period", errors.New("must not be negative")))
	}
	if c.probeInterval <= 0 {
		errs = append(errs, fs.Invalid("health-probe-interval", errors.New("must be positive")))
	}
	if c.eventRetention <= 0 {
		errs = append(errs, fs.Invalid("event-retention", errors.New("must be positive")))
	}
	errs = append(errs, c.client.Validate(fs))
	return errors.Join(errs...)
}

func main() {
	var cfg config
	os.Exit(grpcserver.Binary{
		Name:          "strata-metadata",
		DefaultListen: ":50052",
		Flags:         cfg.register,
		Validate:      cfg.validate,
		Wire: func(ctx context.Context, srv *grpcserver.Server, log *slog.Logger) (func(), error) {
			var db *sqlstore.DB
			var err error
			switch cfg.store {
			case "postgres":
				db, err = sqlstore.OpenPostgres(ctx, cfg.postgresDSN, log)
			default:
				db, err = sqlstore.OpenSQLite(ctx, cfg.sqlitePath, log)
			}
			if err != nil {
				return nil, fmt.Errorf("opening the %s store: %w", cfg.store, err)
			}
			blobConn, err := grpcclient.Dial(cfg.blobstoreAddr, cfg.client, grpcclient.Naming("blob store", cfg.blobstoreAddr)...)
			if err != nil {
				db.Close()
				return nil, err
			}
			images := image.New(db, image.Options{})
			srv.SetProbe(grpcserver.Probe{Check: images.Ping, Interval: cfg.probeInterval})
			blobs := blobclient.New(blobConn)
			gc := &image.Collector{Images: images, Blobs: blobs, Grace: cfg.gcGrace, Log: log}
			metadatav1.RegisterImageServiceServer(srv.GRPC, server.New(images, blobs, gc, log, nil, ctx.Done()))
			gcCtx, stopGC := context.WithCancel(ctx)
			gcDone := make(chan struct{})
			go func() {
				defer close(gcDone)
				if cfg.gcInterval > 0 {
					gc.Run(gcCtx, cfg.gcInterval, cfg.eventRetention)
				}
			}()
			log.Info("metadata store open", "store", cfg.store, "blobstore", cfg.blobstoreAddr)
			return func() {
				stopGC()
				<-gcDone
				blobConn.Close()
				db.Close()
			}, nil
		},
	}.Main(os.Args[1:]))
}
