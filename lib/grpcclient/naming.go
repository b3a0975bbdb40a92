package grpcclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/strata-build/strata/lib/errdefs"
)

// Naming returns dial options that make a connection's UNAVAILABLE errors
// say which service is down and where: "the blob store at 10.0.0.7:50053
// cannot be reached: connection refused" when the connection fails, "the
// blob store at 10.0.0.7:50053 is unavailable: <its message>" when the
// service answers UNAVAILABLE itself. A service that calls another passes
// that on to its own callers instead of gRPC's transport wording. Pass them
// to Dial.
func Naming(service, addr string) []grpc.DialOption {
	n := naming{service: service, addr: addr}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(n.unary), grpc.WithChainStreamInterceptor(n.stream)}
}

type naming struct{ service, addr string }

func (n naming) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return n.rename(invoker(ctx, method, req, reply, cc, opts...))
}

func (n naming) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, n.rename(err)
	}
	return namedStream{s, n}, nil
}

type namedStream struct {
	grpc.ClientStream
	n naming
}

func (s namedStream) SendMsg(m any) error { return s.n.rename(s.ClientStream.SendMsg(m)) }
func (s namedStream) RecvMsg(m any) error { return s.n.rename(s.ClientStream.RecvMsg(m)) }
func (s namedStream) CloseSend() error    { return s.n.rename(s.ClientStream.CloseSend()) }

// rename rewrites an UNAVAILABLE status; other errors, io.EOF included,
// pass unchanged.
func (n naming) rename(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return err
	}
	if FromService(err) {
		p := st.Proto()
		p.Message = fmt.Sprintf("the %s at %s is unavailable: %s", n.service, n.addr, p.GetMessage())
		return status.ErrorProto(p)
	}
	return status.Error(codes.Unavailable, fmt.Sprintf("the %s at %s cannot be reached: %s", n.service, n.addr, transportCause(st.Message())))
}

// FromService reports whether err is a status a Strata service sent (it
// carries the google.rpc.ErrorInfo lib/errdefs adds), as opposed to one the
// client's gRPC made up because it could not reach the service.
func FromService(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == errdefs.Domain {
			return true
		}
	}
	return false
}

// transportCause shortens gRPC's account of a failed connection to its
// cause: `connection error: desc = "transport: Error while dialing: dial tcp
// 10.0.0.7:50053: connect: connection refused"` becomes "connection refused".
func transportCause(msg string) string {
	switch {
	case strings.Contains(msg, "produced zero addresses"):
		return "its address resolves to no IP address"
	case strings.Contains(msg, "health check failed"):
		return "no replica is healthy (their gRPC health is NOT_SERVING: " + msg + ")"
	case strings.Contains(msg, "error reading from server"), strings.Contains(msg, "transport is closing"):
		return "the connection broke (" + msg + ")"
	}
	if i := strings.Index(msg, "transport: "); i >= 0 {
		msg = strings.TrimSuffix(msg[i+len("transport: "):], `"`)
	}
	if strings.HasPrefix(msg, "Error while dialing: ") {
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
	}
	return msg
}
