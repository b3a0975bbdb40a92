// Command strata-blobstore serves strata.blob.v1.BlobService over a local
// directory (--backend fs, the default) or an S3-compatible store
// (--backend s3).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/flagenv"
	"github.com/strata-build/strata/lib/grpcserver"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
	"github.com/strata-build/strata/services/blobstore/internal/fsblob"
	"github.com/strata-build/strata/services/blobstore/internal/s3blob"
	"github.com/strata-build/strata/services/blobstore/internal/server"
)

// config is the blob store's own flags.
type config struct {
	backend         string
	fsRoot          string
	s3              s3blob.Config
	partSize        int64
	janitorMaxAge   time.Duration
	janitorInterval time.Duration
	probeInterval   time.Duration
}

func (c *config) register(fs *flagenv.Set) {
	fs.StringVar(&c.backend, "backend", "fs", "where blobs live: fs (a local directory) or s3 (an S3-compatible store)")
	fs.StringVar(&c.fsRoot, "fs-root", "/var/lib/strata/blobs", "directory of the fs backend")
	fs.StringVar(&c.s3.Endpoint, "s3-endpoint", "", "S3 server, host[:port] (no scheme; see --s3-tls)")
	fs.StringVar(&c.s3.Bucket, "s3-bucket", "strata-blobs", "S3 bucket holding the blobs")
	fs.StringVar(&c.s3.Region, "s3-region", "", "S3 region (empty: found out from the server)")
	fs.BoolVar(&c.s3.PathStyle, "s3-path-style", false, "address the bucket in the URL path, not the host name (MinIO, versitygw, Ceph)")
	fs.BoolVar(&c.s3.TLS, "s3-tls", false, "reach S3 over HTTPS")
	fs.BoolVar(&c.s3.TLSInsecure, "s3-tls-insecure", false, "skip the S3 server's certificate check (testing only)")
	fs.StringVar(&c.s3.AccessKey, "s3-access-key", "", "S3 access key ID")
	fs.StringVar(&c.s3.SecretKey, "s3-secret-key", "", "S3 secret access key (prefer the environment variable)")
	fs.StringVar(&c.s3.SessionToken, "s3-session-token", "", "S3 session token, for temporary credentials")
	fs.BoolVar(&c.s3.CreateBucket, "s3-create-bucket", false, "create the bucket when it is missing")
	fs.Int64Var(&c.partSize, "s3-part-size", s3blob.DefaultPartSize, "bytes per multipart part (at least 5 MiB); memory per upload is about (concurrency+1) parts")
	fs.IntVar(&c.s3.Concurrency, "s3-concurrency", s3blob.DefaultConcurrency, "parts of one upload sent at once")
	fs.IntVar(&c.s3.MaxParts, "s3-max-parts", 0, "parts in flight across all uploads and reads, which bounds memory (0: 4 × --s3-concurrency)")
	fs.BoolVar(&c.s3.SignPayload, "s3-sign-payload", false, "sign every part's bytes (streaming SigV4) over plain HTTP; unsigned, the blob's digest check is the only check of its bytes")
	fs.IntVar(&c.s3.MaxRetries, "s3-max-retries", s3blob.DefaultMaxRetries, "tries of one S3 request before the call fails UNAVAILABLE")
	fs.DurationVar(&c.s3.IdleTimeout, "s3-idle-timeout", s3blob.DefaultIdleTimeout, "cut a connection to S3 that moves no byte for this long, and retry its request; must exceed the longest the server stays silent (completing the largest upload)")
	fs.DurationVar(&c.s3.LeaseTTL, "s3-upload-lease", s3blob.DefaultLeaseTTL, "how long an upload stays its writer's after the writer was last heard of; a resume on another replica after a crash waits this long")
	fs.DurationVar(&c.janitorMaxAge, "janitor-max-age", 24*time.Hour, "unfinished uploads idle this long are discarded")
	fs.DurationVar(&c.janitorInterval, "janitor-interval", time.Hour, "how often the janitor looks for abandoned uploads")
	fs.DurationVar(&c.probeInterval, "health-probe-interval", 5*time.Second, "how often the s3 backend checks that S3 answers; gRPC health is NOT_SERVING while it does not")
}

func (c *config) validate(fs *flagenv.Set) error {
	var errs []error
	switch c.backend {
	case "fs":
		if c.fsRoot == "" {
			errs = append(errs, fs.Invalid("fs-root", errors.New("a directory is required")))
		}
	case "s3":
		switch {
		case c.s3.Endpoint == "":
			errs = append(errs, fs.Invalid("s3-endpoint", errors.New("the s3 backend needs an endpoint, host[:port]")))
		case strings.Contains(c.s3.Endpoint, "://"):
			errs = append(errs, fs.Invalid("s3-endpoint", errors.New("give host[:port] without a scheme; --s3-tls turns on HTTPS")))
		}
		if c.s3.Bucket == "" {
			errs = append(errs, fs.Invalid("s3-bucket", errors.New("a bucket is required")))
		}
		if c.s3.AccessKey == "" || c.s3.SecretKey == "" {
			errs = append(errs, errors.New("the s3 backend needs --s3-access-key and --s3-secret-key (or STRATA_S3_ACCESS_KEY and STRATA_S3_SECRET_KEY)"))
		}
	default:
		errs = append(errs, fs.Invalid("backend", errors.New("want fs or s3")))
	}
	if c.partSize < s3blob.MinPartSize || c.partSize > 5<<30 {
		errs = append(errs, fs.Invalid("s3-part-size", fmt.Errorf("want %d (5 MiB) to %d (5 GiB)", s3blob.MinPartSize, int64(5<<30))))
	}
	if c.s3.Concurrency < 1 || c.s3.Concurrency > 64 {
		errs = append(errs, fs.Invalid("s3-concurrency", errors.New("want 1 to 64")))
	}
	if c.s3.MaxParts < 0 {
		errs = append(errs, fs.Invalid("s3-max-parts", errors.New("must not be negative")))
	}
	if c.s3.MaxRetries < 1 {
		errs = append(errs, fs.Invalid("s3-max-retries", errors.New("want 1 or more")))
	}
	if c.s3.IdleTimeout < time.Second {
		errs = append(errs, fs.Invalid("s3-idle-timeout", errors.New("want 1s or more")))
	}
	if c.s3.LeaseTTL < time.Second {
		errs = append(errs, fs.Invalid("s3-upload-lease", errors.New("want 1s or more")))
	}
	if c.janitorMaxAge <= 0 {
		errs = append(errs, fs.Invalid("janitor-max-age", errors.New("must be positive")))
	}
	if c.janitorInterval <= 0 {
		errs = append(errs, fs.Invalid("janitor-interval", errors.New("must be positive")))
	}
	if c.probeInterval <= 0 {
		errs = append(errs, fs.Invalid("health-probe-interval", errors.New("must be positive")))
	}
	return errors.Join(errs...)
}

// open opens the backend. An S3 server that is down at start is no reason
// to stop: calls fail UNAVAILABLE until it is back.
func (c *config) open(ctx context.Context, log *slog.Logger) (blob.Store, error) {
	if c.backend == "fs" {
		s, err := fsblob.New(c.fsRoot)
		if err != nil {
			return nil, fmt.Errorf("--fs-root: %w", err)
		}
		return s, nil
	}
	c.s3.PartSize = c.partSize
	s, err := s3blob.New(c.s3)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.Check(cctx); err != nil {
		log.Warn("S3 is not usable yet; calls fail UNAVAILABLE until it is", "error", err.Error())
	}
	return s, nil
}

func main() {
	// An upload's live memory is its part buffers; what comes and goes is
	// 1 MiB message buffers. Collecting at a quarter of the live heap
	// instead of all of it keeps the resident size near the live one, at
	// little cost, since byte buffers hold no pointers to scan (measured:
	// peak RSS of a 1 GiB upload 137 MiB at 50, 115 MiB at 25, the same
	// CPU). GOGC still rules when set.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	var cfg config
	os.Exit(grpcserver.Binary{
		Name:          "strata-blobstore",
		DefaultListen: ":50053",
		Flags:         cfg.register,
		Validate:      cfg.validate,
		ServerOptions: blobclient.ServerOptions(),
		Wire: func(ctx context.Context, srv *grpcserver.Server, log *slog.Logger) (func(), error) {
			store, err := cfg.open(ctx, log)
			if err != nil {
				return nil, err
			}
			blobv1.RegisterBlobServiceServer(srv.GRPC, server.New(store, server.NewMetrics(srv.Metrics)))
			if s3, ok := store.(*s3blob.Store); ok {
				srv.SetProbe(grpcserver.Probe{Check: s3.Check, Interval: cfg.probeInterval})
			}
			jctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				blob.RunJanitor(jctx, store, cfg.janitorMaxAge, cfg.janitorInterval, log)
			}()
			log.Info("blob store ready", "backend", cfg.backend, "fs_root", cfg.fsRoot, "s3_endpoint", cfg.s3.Endpoint,
				"s3_bucket", cfg.s3.Bucket, "janitor_max_age", cfg.janitorMaxAge.String())
			return func() {
				stop()
				<-done
				if c, ok := store.(io.Closer); ok {
					c.Close() // the fs backend's lock on its root
				}
			}, nil
		},
	}.Main(os.Args[1:]))
}
