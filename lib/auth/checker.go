package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/fsnotify/fsnotify"
	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/strata-build/strata/lib/errdefs"
)

// CheckerConfig says how a server identifies its callers.
type CheckerConfig struct {
	// Token is one accepted token, with every role; TokenFile, when set,
	// holds the accepted tokens instead (see ParseTokens) and is read again
	// when it changes (Watch) or on Reload.
	Token, TokenFile string
	// ClientCerts says that the server verifies client certificates
	// (mutual TLS), which then identify callers that send no token.
	ClientCerts bool
	// Log receives reloads and their failures.
	Log *slog.Logger
}

// Checker authenticates calls (a bearer token, else a verified client
// certificate) and authorizes them (the role RoleFor names). With neither
// tokens nor client certificates configured every caller is anonymous and
// may call everything, as on a loopback development server.
type Checker struct {
	cfg CheckerConfig
	// tokens is nil when token auth is off.
	tokens atomic.Pointer[tokenSet]
	mu     sync.Mutex // serializes reloads
}

// tokenSet holds tokens by the SHA-256 of their value, so that finding one
// takes no time that depends on how much of a guess was right.
type tokenSet struct {
	byHash map[[32]byte]Token
	source [32]byte // hash of the file's bytes, to skip reloads that change nothing
}

// NewChecker reads the tokens cfg names.
func NewChecker(cfg CheckerConfig) (*Checker, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	c := &Checker{cfg: cfg}
	if cfg.TokenFile != "" {
		if err := c.Reload(); err != nil {
			return nil, err
		}
	} else if cfg.Token != "" {
		c.tokens.Store(newTokenSet([]Token{{Value: cfg.Token, Role: RoleService, Name: "--auth-token"}}, nil))
	}
	return c, nil
}

func newTokenSet(tokens []Token, source []byte) *tokenSet {
	s := &tokenSet{byHash: map[[32]byte]Token{}, source: sha256.Sum256(source)}
	for _, t := range tokens {
		s.byHash[sha256.Sum256([]byte(t.Value))] = t
	}
	return s
}

// Enabled reports whether callers must prove who they are.
func (c *Checker) Enabled() bool { return c.tokens.Load() != nil || c.cfg.ClientCerts }

// Reload reads the token file again. When it cannot be read or parsed, the
// tokens in use stay and the error says why.
func (c *Checker) Reload() error {
	if c.cfg.TokenFile == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := os.ReadFile(c.cfg.TokenFile)
	if err != nil {
		return fmt.Errorf("reading the token file: %w", err)
	}
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	if cur := c.tokens.Load(); cur != nil && cur.source == sha256.Sum256(b) {
		return nil
	}
	tokens, err := ParseTokens(c.cfg.TokenFile, b)
	if err != nil {
		return err
	}
	first := c.tokens.Load() == nil
	c.tokens.Store(newTokenSet(tokens, b))
	if !first {
		c.cfg.Log.Info("token file read again", "file", c.cfg.TokenFile, "tokens", len(tokens))
	}
	return nil
}

// Watch reads the token file again whenever its directory changes (an
// edit, a rename over it, a Kubernetes secret update), until ctx is done.
// A file that does not parse is logged and the tokens in use stay.
func (c *Checker) Watch(ctx context.Context) error {
	if c.cfg.TokenFile == "" {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching the token file %s: %w", c.cfg.TokenFile, err)
	}
	defer w.Close()
	// The directory, not the file: editors and secret mounts replace the
	// file rather than write it, which ends a watch on the file itself.
	if err := w.Add(filepath.Dir(c.cfg.TokenFile)); err != nil {
		return fmt.Errorf("watching the token file %s: %w", c.cfg.TokenFile, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			c.cfg.Log.Warn("watching the token file", "file", c.cfg.TokenFile, "error", err.Error())
		case <-w.Events:
			if err := c.Reload(); err != nil {
				c.cfg.Log.Error("the token file changed but cannot be used; the tokens read before stay", "error", err.Error())
			}
		}
	}
}

// callAuth is what identify found out, kept in the call's context for
// authorize (and the logs) further down the interceptor chain.
type callAuth struct {
	id  Identity
	err error
}

type callAuthKey struct{}

// identify finds out who makes the call.
func (c *Checker) identify(ctx context.Context) (Identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var id Identity
	tokens := c.tokens.Load()
	switch values := md.Get("authorization"); {
	case !c.Enabled():
		id = Identity{Role: RoleService}
	case tokens != nil && len(values) > 0:
		scheme, value, ok := strings.Cut(values[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			return Identity{}, errdefs.Unauthenticated("the authorization header is not a bearer token").WithReason("BAD_TOKEN")
		}
		var err error
		if id, err = c.tokenIdentity(tokens, value); err != nil {
			return Identity{}, err
		}
	default:
		cert, ok := peerCertificate(ctx)
		switch {
		case ok && c.cfg.ClientCerts:
			id = cert
		case tokens != nil:
			return Identity{}, errdefs.Unauthenticated(`missing bearer token: send "authorization: Bearer <token>"`).WithReason("NO_TOKEN")
		default:
			return Identity{}, errdefs.Unauthenticated("no verified client certificate").WithReason("NO_CERTIFICATE")
		}
	}
	if id.Role.Includes(RoleService) {
		if v := md.Get(OnBehalfOfHeader); len(v) > 0 && printable(v[0]) {
			id.Via, id.Name = id.Name, v[0]
		}
	}
	return id, nil
}

func (c *Checker) tokenIdentity(tokens *tokenSet, value string) (Identity, error) {
	t, ok := tokens.byHash[sha256.Sum256([]byte(strings.TrimSpace(value)))]
	if !ok {
		return Identity{}, errdefs.Unauthenticated("invalid bearer token").WithReason("BAD_TOKEN")
	}
	return Identity{Name: t.Name, Role: t.Role}, nil
}

// IdentifyRequest identifies the caller of a request of another protocol
// (the registry's HTTP) by the same rules as a gRPC call: the token it
// carries ("" for none), else its verified client certificate (nil for
// none); every caller holds every role when auth is off.
func (c *Checker) IdentifyRequest(token string, cert *x509.Certificate) (Identity, error) {
	tokens := c.tokens.Load()
	switch {
	case !c.Enabled():
		return Identity{Role: RoleService}, nil
	case tokens != nil && token != "":
		return c.tokenIdentity(tokens, token)
	case cert != nil && c.cfg.ClientCerts:
		return CertificateIdentity(cert), nil
	case tokens != nil:
		return Identity{}, errdefs.Unauthenticated("missing token").WithReason("NO_TOKEN")
	}
	return Identity{}, errdefs.Unauthenticated("no verified client certificate").WithReason("NO_CERTIFICATE")
}

// peerCertificate returns the identity of the call's verified client
// certificate, if it has one.
func peerCertificate(ctx context.Context) (Identity, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Identity{}, false
	}
	return CertificateIdentity(info.State.VerifiedChains[0][0]), true
}

// Identify returns ctx carrying the caller's identity (IdentityFrom), or
// why there is none. It refuses nothing: Authorize does, later, so that
// refused calls are logged with the rest.
func (c *Checker) Identify(ctx context.Context) context.Context {
	id, err := c.identify(ctx)
	ctx = context.WithValue(ctx, callAuthKey{}, callAuth{id: id, err: err})
	if err != nil {
		return ctx
	}
	return WithIdentity(ctx, id)
}

// Authorize returns nil when the caller Identify found may call method:
// ErrUnauthenticated when they did not prove who they are, and
// ErrPermissionDenied, naming the RPC and the role it needs, when they lack
// the role or the method declares none.
func (c *Checker) Authorize(ctx context.Context, method string) error {
	name := strings.TrimPrefix(method, "/")
	role, ok := RoleFor(method)
	if !ok {
		return errdefs.New(errdefs.ErrPermissionDenied, "%s declares no role, so no one may call it", name).
			WithReason("NO_ROLE_DECLARED").WithDetail("method", name)
	}
	if role == Open {
		return nil
	}
	a, ok := ctx.Value(callAuthKey{}).(callAuth)
	if !ok {
		return errdefs.Internal("%s: the caller was not identified", name)
	}
	if a.err != nil {
		var e *errdefs.Error
		if errors.As(a.err, &e) {
			return errdefs.New(errdefs.ErrUnauthenticated, "%s: %s", name, e.Error()).WithReason(e.Reason()).WithDetail("method", name)
		}
		return a.err
	}
	if !a.id.Role.Includes(role) {
		has := string(a.id.Role)
		if has == "" {
			has = "no role"
		} else {
			has = "the " + has + " role"
		}
		return errdefs.New(errdefs.ErrPermissionDenied, "%s needs the %s role; %s has %s", name, role, a.id, has).
			WithReason("ROLE_REQUIRED").WithDetail("method", name).WithDetail("role", string(role))
	}
	return nil
}

// UnaryIdentify and StreamIdentify run Identify on every call.
func (c *Checker) UnaryIdentify() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(c.Identify(ctx), req)
	}
}

func (c *Checker) StreamIdentify() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		wrapped := middleware.WrapServerStream(ss)
		wrapped.WrappedContext = c.Identify(ss.Context())
		return handler(srv, wrapped)
	}
}

// UnaryAuthorize and StreamAuthorize refuse the calls Authorize refuses.
func (c *Checker) UnaryAuthorize() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := c.Authorize(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func (c *Checker) StreamAuthorize() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := c.Authorize(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}
