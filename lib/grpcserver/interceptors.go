package grpcserver

import (
	"context"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/requestid"
	"github.com/strata-build/strata/lib/version"
)

// withRequestID puts the caller's request ID (or a new one) in ctx and
// announces it and the server's version in the response headers.
func withRequestID(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	id := ""
	if v := md.Get(requestid.Header); len(v) > 0 && requestid.Valid(v[0]) {
		id = v[0]
	} else {
		id = requestid.New()
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs(requestid.Header, id, version.Header, version.String()))
	return requestid.With(ctx, id)
}

func unaryHeaders(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(withRequestID(ctx), req)
}

func streamHeaders(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	wrapped := middleware.WrapServerStream(ss)
	wrapped.WrappedContext = withRequestID(ss.Context())
	return handler(srv, wrapped)
}

// unaryErrors and streamErrors are the one place where handler errors become
// gRPC statuses (lib/errdefs decides the codes).
func unaryErrors(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	return resp, errdefs.ToGRPC(err)
}

func streamErrors(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return errdefs.ToGRPC(handler(srv, ss))
}
