package grpcclient

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/strata-build/strata/lib/errdefs"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestNamingSaysWhichServiceIsDown(t *testing.T) {
	ctx := context.Background()

	// Nothing listens: the client's gRPC makes the error up.
	addr := freeAddr(t)
	conn, err := Dial(addr, Config{}, Naming("blob store", addr)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = conn.Invoke(ctx, "/strata.test.v1.Test/Call", &emptypb.Empty{}, &emptypb.Empty{})
	if !errdefs.IsUnavailable(err) || err.Error() != "the blob store at "+addr+" cannot be reached: connection refused" {
		t.Errorf("unary call to nothing: %v", err)
	}
	if FromService(err) {
		t.Error("FromService of the client's own error = true")
	}
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/strata.test.v1.Test/Stream")
	if err == nil {
		err = stream.RecvMsg(&emptypb.Empty{})
	}
	if !errdefs.IsUnavailable(err) || !strings.HasPrefix(err.Error(), "the blob store at "+addr+" cannot be reached: ") {
		t.Errorf("stream to nothing: %v", err)
	}

	// The service answers UNAVAILABLE itself: its message and reason stay.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
		return errdefs.ToGRPC(errdefs.Unavailable("the S3 backend is down").WithReason("BACKEND_DOWN"))
	}))
	go srv.Serve(lis)
	defer srv.Stop()
	up := lis.Addr().String()
	conn2, err := Dial(up, Config{}, Naming("blob store", up)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	err = conn2.Invoke(ctx, "/strata.test.v1.Test/Call", &emptypb.Empty{}, &emptypb.Empty{})
	var e *errdefs.Error
	if !errdefs.IsUnavailable(err) || err.Error() != "the blob store at "+up+" is unavailable: the S3 backend is down" {
		t.Errorf("service's UNAVAILABLE: %v", err)
	} else if !errors.As(err, &e) || e.Reason() != "BACKEND_DOWN" {
		t.Errorf("service's UNAVAILABLE lost its reason: %v", err)
	}
	if !FromService(err) {
		t.Error("FromService of the service's error = false")
	}

	// Other errors pass unchanged.
	srv2 := grpc.NewServer(grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
		return errdefs.ToGRPC(errdefs.NotFound("no such blob"))
	}))
	lis2, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv2.Serve(lis2)
	defer srv2.Stop()
	conn3, _ := Dial(lis2.Addr().String(), Config{}, Naming("blob store", lis2.Addr().String())...)
	defer conn3.Close()
	if err := conn3.Invoke(ctx, "/strata.test.v1.Test/Call", &emptypb.Empty{}, &emptypb.Empty{}); !errdefs.IsNotFound(err) || err.Error() != "no such blob" {
		t.Errorf("NOT_FOUND: %v", err)
	}
}
