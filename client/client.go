// Package client is Strata's Go client: one value that reaches the builder,
// the metadata service and the blob store, with a typed method for every
// operation the strata CLI performs (the CLI is built on it).
//
//	c, err := client.New(ctx) // STRATA_*_ADDR, STRATA_CLIENT_*, the config file
//	if err != nil { … }
//	defer c.Close()
//	res, err := c.Build(ctx, "./app", client.BuildOptions{Tags: []string{"app:1"}})
//
// Errors match the sentinels of this package with errors.Is (ErrNotFound,
// ErrInvalidArgument, …); a Dockerfile error is also a *BuildError with its
// line. Messages, results and events are the generated types of
// github.com/strata-build/strata/gen, aliased here where a caller needs them.
package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/version"
)

// Client reaches Strata's services. Connections are made on first use, one
// per service, and closed by Close. A Client is safe for concurrent use.
type Client struct {
	cfg Config

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// Option changes a Client's configuration.
type Option func(*options)

type options struct {
	base  *Config // set by WithConfig: neither the file nor the environment is read
	edits []func(*Config)
}

func edit(f func(*Config)) Option { return func(o *options) { o.edits = append(o.edits, f) } }

// WithConfig starts from cfg instead of what LoadConfig reads from the
// configuration file and the environment; the other options still apply.
func WithConfig(cfg Config) Option { return func(o *options) { o.base = &cfg } }

// WithBuilderAddr sets the builder's address (host:port, or a comma-separated
// list of replicas).
func WithBuilderAddr(addr string) Option { return edit(func(c *Config) { c.Builder = addr }) }

// WithMetadataAddr sets the metadata service's address.
func WithMetadataAddr(addr string) Option { return edit(func(c *Config) { c.Metadata = addr }) }

// WithBlobstoreAddr sets the blob store's address.
func WithBlobstoreAddr(addr string) Option { return edit(func(c *Config) { c.Blobstore = addr }) }

// WithTLS turns on TLS, trusting caFile's CAs (the system roots when empty).
func WithTLS(caFile string) Option {
	return edit(func(c *Config) { c.TLS, c.TLSCACert = true, caFile })
}

// WithClientCertificate presents a client certificate, for mutual TLS.
func WithClientCertificate(certFile, keyFile string) Option {
	return edit(func(c *Config) { c.TLSCert, c.TLSKey = certFile, keyFile })
}

// WithToken sends a bearer token with every call.
func WithToken(token string) Option { return edit(func(c *Config) { c.Token = token }) }

// WithTokenFile reads the bearer token from a file.
func WithTokenFile(path string) Option { return edit(func(c *Config) { c.TokenFile = path }) }

// New returns a Client configured, in increasing precedence, by the built-in
// defaults, the configuration file, the environment (as LoadConfig reads
// them: the strata CLI's rules) and opts. It does not connect: each service
// is dialed on its first call.
func New(ctx context.Context, opts ...Option) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var cfg Config
	if o.base != nil {
		cfg = *o.base
	} else {
		var err error
		if cfg, err = LoadConfig(); err != nil {
			return nil, err
		}
	}
	for _, e := range o.edits {
		e(&cfg)
	}
	for _, a := range []struct{ name, addr string }{{"builder", cfg.Builder}, {"metadata", cfg.Metadata}, {"blobstore", cfg.Blobstore}} {
		if a.addr == "" {
			return nil, fmt.Errorf("%w: no %s address", ErrInvalidArgument, a.name)
		}
	}
	return &Client{cfg: cfg}, nil
}

// Config returns the configuration the Client was made with.
func (c *Client) Config() Config { return c.cfg }

// Close closes the Client's connections.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for addr, conn := range c.conns {
		errs = append(errs, conn.Close())
		delete(c.conns, addr)
	}
	return errors.Join(errs...)
}

// Conn returns the connection to addr, made once. The generated clients of
// gen/ can be made on it for calls this package does not wrap.
func (c *Client) Conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn, ok := c.conns[addr]; ok {
		return conn, nil
	}
	conn, err := grpcclient.Dial(addr, c.cfg.connConfig())
	if err != nil {
		return nil, err
	}
	if c.conns == nil {
		c.conns = map[string]*grpc.ClientConn{}
	}
	c.conns[addr] = conn
	return conn, nil
}

func (c *Client) builder() (builderv1.BuildServiceClient, error) {
	conn, err := c.Conn(c.cfg.Builder)
	if err != nil {
		return nil, err
	}
	return builderv1.NewBuildServiceClient(conn), nil
}

func (c *Client) images() (metadatav1.ImageServiceClient, error) {
	conn, err := c.Conn(c.cfg.Metadata)
	if err != nil {
		return nil, err
	}
	return metadatav1.NewImageServiceClient(conn), nil
}

// Blobs returns the blob store's client: Put, Open (get), Stat, Verify,
// List, Delete and resumable uploads.
func (c *Client) Blobs() (*blobclient.Client, error) {
	conn, err := c.Conn(c.cfg.Blobstore)
	if err != nil {
		return nil, err
	}
	return blobclient.New(conn), nil
}

// ServiceStatus is a service's health and the version it reports.
type ServiceStatus struct {
	// Status is the gRPC health status, such as "SERVING".
	Status string
	// Version is the service's version, "unknown" when it sends none.
	Version string
}

// Health asks the service at addr (one of Config's addresses) for its
// health and version.
func (c *Client) Health(ctx context.Context, addr string) (ServiceStatus, error) {
	conn, err := c.Conn(addr)
	if err != nil {
		return ServiceStatus{}, err
	}
	var header metadata.MD
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&header))
	if err != nil {
		return ServiceStatus{}, err
	}
	s := ServiceStatus{Status: resp.GetStatus().String(), Version: "unknown"}
	if h := header.Get(version.Header); len(h) > 0 {
		s.Version = h[0]
	}
	return s, nil
}
