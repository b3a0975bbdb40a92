// Command strata-blobstore serves strata.blob.v1.BlobService over a local
// directory (--backend fs, the default) or an S3-compatible store
// (--backend s3).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/flagenv"
	"github.com/strata-build/strata/lib/grpcserver"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
	"github.com/strata-build/strata/services/blobstore/internal/fsblob"
	"github.com/strata-build/strata/services/blobstore/internal/server"
)

// config is the blob store's own flags.
type config struct {
	backend         string
	fsRoot          string
	janitorMaxAge   time.Duration
	janitorInterval time.Duration
}

func (c *config) register(fs *flagenv.Set) {
	fs.StringVar(&c.backend, "backend", "fs", "where blobs live: fs (a local directory) or s3 (an S3-compatible store)")
	fs.StringVar(&c.fsRoot, "fs-root", "/var/lib/strata/blobs", "directory of the fs backend")
	fs.DurationVar(&c.janitorMaxAge, "janitor-max-age", 24*time.Hour, "unfinished uploads idle this long are discarded")
	fs.DurationVar(&c.janitorInterval, "janitor-interval", time.Hour, "how often the janitor looks for abandoned uploads")
}

func (c *config) validate(fs *flagenv.Set) error {
	var errs []error
	switch c.backend {
	case "fs":
		if c.fsRoot == "" {
			errs = append(errs, fs.Invalid("fs-root", errors.New("a directory is required")))
		}
	default:
		errs = append(errs, fs.Invalid("backend", errors.New("want fs or s3")))
	}
	if c.janitorMaxAge <= 0 {
		errs = append(errs, fs.Invalid("janitor-max-age", errors.New("must be positive")))
	}
	if c.janitorInterval <= 0 {
		errs = append(errs, fs.Invalid("janitor-interval", errors.New("must be positive")))
	}
	return errors.Join(errs...)
}

func (c *config) open() (blob.Store, error) {
	s, err := fsblob.New(c.fsRoot)
	if err != nil {
		return nil, fmt.Errorf("--fs-root: %w", err)
	}
	return s, nil
}

func main() {
	var cfg config
	os.Exit(grpcserver.Binary{
		Name:          "strata-blobstore",
		DefaultListen: ":50053",
		Flags:         cfg.register,
		Validate:      cfg.validate,
		Wire: func(ctx context.Context, srv *grpcserver.Server, log *slog.Logger) (func(), error) {
			store, err := cfg.open()
			if err != nil {
				return nil, err
			}
			blobv1.RegisterBlobServiceServer(srv.GRPC, server.New(store, server.NewMetrics(srv.Metrics)))
			jctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				blob.RunJanitor(jctx, store, cfg.janitorMaxAge, cfg.janitorInterval, log)
			}()
			log.Info("blob store ready", "backend", cfg.backend, "janitor_max_age", cfg.janitorMaxAge.String())
			return func() { stop(); <-done }, nil
		},
	}.Main(os.Args[1:]))
}
