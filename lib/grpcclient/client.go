// Package grpcclient dials Strata's services the way every Strata client
// should: with TLS or mutual TLS and a bearer token when configured, the
// caller's request ID forwarded, message-size limits matching the servers',
// and gRPC statuses turned back into lib/errdefs errors.
package grpcclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/flagenv"
	"github.com/strata-build/strata/lib/requestid"
)

// The default service addresses, and the environment variables that
// override them for every client.
const (
	DefaultBuilderAddr   = "localhost:50051"
	DefaultMetadataAddr  = "localhost:50052"
	DefaultBlobstoreAddr = "localhost:50053"

	BuilderAddrEnv   = "STRATA_BUILDER_ADDR"
	MetadataAddrEnv  = "STRATA_METADATA_ADDR"
	BlobstoreAddrEnv = "STRATA_BLOBSTORE_ADDR"
)

// MaxMsgSize is the largest message a client sends or accepts by default.
const MaxMsgSize = 16 << 20

// Config says how to reach a service securely.
type Config struct {
	// TLS turns on TLS with the system roots, or CAFile's when set.
	TLS bool
	// CAFile is a PEM bundle of the CAs that server certificates must chain to.
	CAFile string
	// CertFile and KeyFile are a client certificate, for mutual TLS.
	CertFile, KeyFile string
	// Token is a bearer token sent with every call.
	Token string
	// TokenFile holds the bearer token, as the first token of a server's
	// token file (auth.ParseTokens), when Token is empty.
	TokenFile string
}

// RegisterFlags registers, on a service's flag set, how that service
// reaches the Strata services it calls (--client-tls and the rest, with
// STRATA_CLIENT_… twins): one setting for all of them, as a deployment
// usually has one CA and one token.
func (c *Config) RegisterFlags(fs *flagenv.Set) {
	fs.BoolVar(&c.TLS, "client-tls", false, "use TLS to the services this one calls (the system roots unless --client-tls-ca)")
	fs.StringVar(&c.CAFile, "client-tls-ca", "", "CA bundle (PEM) that the called services' certificates must chain to; turns on TLS")
	fs.StringVar(&c.CertFile, "client-tls-cert", "", "client certificate (PEM) shown to the called services, for mutual TLS")
	fs.StringVar(&c.KeyFile, "client-tls-key", "", "private key (PEM) of --client-tls-cert")
	fs.StringVar(&c.Token, "client-token", "", "bearer token sent to the called services")
	fs.StringVar(&c.TokenFile, "client-token-file", "", "file holding the bearer token sent to the called services")
}

// Validate checks the flags RegisterFlags registered, naming the flag and
// the value that is wrong.
func (c *Config) Validate(fs *flagenv.Set) error {
	var errs []error
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, fmt.Errorf("--client-tls-cert %q and --client-tls-key %q must be given together", c.CertFile, c.KeyFile))
	}
	if c.Token != "" && c.TokenFile != "" {
		errs = append(errs, errors.New("--client-token and --client-token-file exclude each other"))
	}
	for _, name := range []string{"client-tls-ca", "client-tls-cert", "client-tls-key", "client-token-file"} {
		errs = append(errs, fs.ReadableFile(name))
	}
	return errors.Join(errs...)
}

// Dial returns a connection to addr, a target of one of the forms
// balance.go describes (one address, dns:///host:port, or a list of
// replicas). It does not wait for the server: the first call does, and
// fails with UNAVAILABLE if it is down. It refuses to send a token without
// TLS to an address that is not loopback.
func Dial(addr string, cfg Config, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	secure := cfg.TLS || cfg.CAFile != "" || cfg.CertFile != ""
	if secure {
		tlsCfg, err := auth.ClientTLS(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tlsCfg)
	}
	all := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(unaryInterceptor),
		grpc.WithChainStreamInterceptor(streamInterceptor),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnectBackoff, MinConnectTimeout: 20 * time.Second}),
	}
	file := cfg.TokenFile
	if cfg.Token != "" {
		file = ""
	}
	tokens, err := auth.ReadTokens(cfg.Token, file) // a server's own reader: the first token of the file is sent
	if err != nil {
		return nil, fmt.Errorf("reading the token file: %w", err)
	}
	if len(tokens) > 0 {
		local := isLocal(addr)
		if !secure && !local {
			return nil, fmt.Errorf("refusing to send a bearer token in clear text to %s, which is not a loopback address: turn on TLS "+
				"(the CLI's --tls or --tlscacert, a service's --client-tls-ca; STRATA_CLIENT_TLS_CA)", addr)
		}
		all = append(all, grpc.WithPerRPCCredentials(auth.TokenCredentials{Token: tokens[0].Value, Secure: !local}))
	}
	target, balanced := balance(addr)
	all = append(all, balanced...)
	conn, err := grpc.NewClient(target, append(all, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	return conn, nil
}

// reconnectBackoff is gRPC's default reconnection backoff with its ceiling
// lowered from two minutes to five seconds: a service back from a restart
// takes calls within seconds, at the cost of one connection attempt every
// five seconds while it stays down.
var reconnectBackoff = backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second}

// isLocal reports whether a dial target is on this machine: loopback
// hosts or a Unix socket.
func isLocal(target string) bool {
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		return true
	}
	for _, h := range Hosts(target) {
		if !auth.IsLoopback(h) {
			return false
		}
	}
	return true
}

// outgoing adds the request ID of ctx, when it has one, to the call's
// headers, and, in a service serving a caller, who that caller is (which
// the service called believes only of a caller with the service role).
func outgoing(ctx context.Context) context.Context {
	if id := requestid.From(ctx); id != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, requestid.Header, id)
	}
	if id, ok := auth.IdentityFrom(ctx); ok && id.Name != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, auth.OnBehalfOfHeader, id.Name)
	}
	return ctx
}

func unaryInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return errdefs.FromGRPC(invoker(outgoing(ctx), method, req, reply, cc, opts...))
}

func streamInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(outgoing(ctx), desc, cc, method, opts...)
	if err != nil {
		return nil, errdefs.FromGRPC(err)
	}
	return errStream{s}, nil
}

// errStream maps the errors of a client stream; io.EOF stays io.EOF.
type errStream struct{ grpc.ClientStream }

func (s errStream) SendMsg(m any) error { return mapStreamErr(s.ClientStream.SendMsg(m)) }
func (s errStream) RecvMsg(m any) error { return mapStreamErr(s.ClientStream.RecvMsg(m)) }
func (s errStream) CloseSend() error    { return mapStreamErr(s.ClientStream.CloseSend()) }

func mapStreamErr(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return errdefs.FromGRPC(err)
}
