// Package auth decides who may call Strata's services: bearer tokens checked
// by server interceptors and sent by client credentials, and the TLS
// configurations for TLS and mutual TLS on both sides.
package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/strata-build/strata/lib/errdefs"
)

// ReadTokens reads bearer tokens: the value itself when file is empty,
// otherwise one token per non-empty line of file. Empty input gives no tokens.
func ReadTokens(value, file string) ([]string, error) {
	if file == "" {
		if value == "" {
			return nil, nil
		}
		return []string{value}, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var tokens []string
	for _, line := range strings.Split(string(b), "\n") {
		if t := strings.TrimSpace(line); t != "" {
			tokens = append(tokens, t)
		}
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%s holds no token", file)
	}
	return tokens, nil
}

// TokenChecker accepts calls that carry one of its tokens in an
// "authorization: Bearer <token>" header. Methods listed as open (the health
// service, for probes) need none.
type TokenChecker struct {
	tokens [][]byte
	open   map[string]bool
}

// NewTokenChecker returns a checker for tokens. openMethods are full method
// names ("/grpc.health.v1.Health/Check") that need no token.
func NewTokenChecker(tokens []string, openMethods ...string) *TokenChecker {
	c := &TokenChecker{open: map[string]bool{}}
	for _, t := range tokens {
		c.tokens = append(c.tokens, []byte(t))
	}
	for _, m := range openMethods {
		c.open[m] = true
	}
	return c
}

var errNoToken = errors.New("missing bearer token: send \"authorization: Bearer <token>\"")

// Check returns an ErrUnauthenticated error unless ctx carries a valid token
// or method is open.
func (c *TokenChecker) Check(ctx context.Context, method string) error {
	if c.open[method] {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	if len(values) == 0 {
		return errdefs.New(errdefs.ErrUnauthenticated, "%s: %w", method, errNoToken)
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return errdefs.Unauthenticated("%s: authorization header is not a bearer token", method)
	}
	for _, t := range c.tokens {
		if subtle.ConstantTimeCompare(t, []byte(token)) == 1 {
			return nil
		}
	}
	return errdefs.Unauthenticated("%s: invalid bearer token", method)
}

// UnaryInterceptor checks unary calls.
func (c *TokenChecker) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := c.Check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor checks streaming calls.
func (c *TokenChecker) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := c.Check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// TokenCredentials sends a bearer token with every call.
type TokenCredentials struct {
	Token string
	// Secure makes gRPC refuse to send the token over a connection without TLS.
	Secure bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t TokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + t.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (t TokenCredentials) RequireTransportSecurity() bool { return t.Secure }
