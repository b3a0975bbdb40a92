package errdefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		err  error
		kind error
		code codes.Code
	}{
		{"not found", NotFound("image %q not found", "nginx:latest"), ErrNotFound, codes.NotFound},
		{"already exists", AlreadyExists("tag exists"), ErrAlreadyExists, codes.AlreadyExists},
		{"invalid", InvalidArgument("bad reference"), ErrInvalidArgument, codes.InvalidArgument},
		{"precondition", FailedPrecondition("image has children"), ErrFailedPrecondition, codes.FailedPrecondition},
		{"unavailable", Unavailable("s3 down"), ErrUnavailable, codes.Unavailable},
		{"exhausted", ResourceExhausted("too big"), ErrResourceExhausted, codes.ResourceExhausted},
		{"unauthenticated", Unauthenticated("no token"), ErrUnauthenticated, codes.Unauthenticated},
		{"unimplemented", Unimplemented("later"), ErrUnimplemented, codes.Unimplemented},
		{"aborted", Aborted("conflict"), ErrAborted, codes.Aborted},
		{"internal", Internal("bug"), ErrInternal, codes.Internal},
		{"data loss", DataLoss("blob damaged"), ErrDataLoss, codes.DataLoss},
		{"wrapped sentinel", fmt.Errorf("reading blob: %w", ErrNotFound), ErrNotFound, codes.NotFound},
		{"context canceled", fmt.Errorf("build: %w", context.Canceled), nil, codes.Canceled},
		{"deadline", context.DeadlineExceeded, nil, codes.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			grpcErr := ToGRPC(tt.err)
			st, ok := status.FromError(grpcErr)
			if !ok {
				t.Fatalf("ToGRPC(%v) = %v, not a status error", tt.err, grpcErr)
			}
			if st.Code() != tt.code {
				t.Errorf("ToGRPC(%v) code = %v, want %v", tt.err, st.Code(), tt.code)
			}
			if st.Message() != tt.err.Error() {
				t.Errorf("ToGRPC(%v) message = %q, want %q", tt.err, st.Message(), tt.err.Error())
			}
			back := FromGRPC(grpcErr)
			if tt.kind != nil && !errors.Is(back, tt.kind) {
				t.Errorf("FromGRPC(ToGRPC(%v)) = %v, does not match %v", tt.err, back, tt.kind)
			}
			if Code(back) != tt.code {
				t.Errorf("Code(FromGRPC(ToGRPC(%v))) = %v, want %v", tt.err, Code(back), tt.code)
			}
			if back.Error() != tt.err.Error() {
				t.Errorf("FromGRPC message = %q, want %q", back.Error(), tt.err.Error())
			}
		})
	}
}

func TestReasonAndDetailsSurviveTheWire(t *testing.T) {
	err := InvalidArgument("digest mismatch: expected %s, got %s", "sha256:aa", "sha256:bb").
		WithReason("DIGEST_MISMATCH").
		WithDetail("expected", "sha256:aa").
		WithDetail("actual", "sha256:bb")
	back := FromGRPC(ToGRPC(err))
	var e *Error
	if !errors.As(back, &e) {
		t.Fatalf("FromGRPC(ToGRPC(err)) = %T, want *Error", back)
	}
	if e.Reason() != "DIGEST_MISMATCH" {
		t.Errorf("Reason() = %q, want DIGEST_MISMATCH", e.Reason())
	}
	want := map[string]string{"expected": "sha256:aa", "actual": "sha256:bb"}
	if diff := cmp.Diff(want, e.Details()); diff != "" {
		t.Errorf("Details() mismatch (-want +got):\n%s", diff)
	}
	// A second hop (a service returning what it got from another) keeps them.
	again := FromGRPC(ToGRPC(back))
	if !errors.As(again, &e) || e.Reason() != "DIGEST_MISMATCH" || e.Details()["actual"] != "sha256:bb" {
		t.Errorf("second hop lost reason or details: %v", again)
	}
}

func TestCauseIsKept(t *testing.T) {
	err := Unavailable("reading from s3: %w", io.ErrUnexpectedEOF)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("errors.Is(%v, io.ErrUnexpectedEOF) = false, want true", err)
	}
	if !IsUnavailable(err) {
		t.Errorf("IsUnavailable(%v) = false, want true", err)
	}
	if got, want := err.Error(), "reading from s3: unexpected EOF"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestForeignStatusPassesThrough(t *testing.T) {
	in := status.Error(codes.OutOfRange, "past the end")
	if got := ToGRPC(in); got != in {
		t.Errorf("ToGRPC(%v) = %v, want it unchanged", in, got)
	}
	if got := FromGRPC(in); Code(got) != codes.OutOfRange {
		t.Errorf("Code(FromGRPC(%v)) = %v, want OutOfRange", in, Code(got))
	}
	if got := Code(errors.New("plain")); got != codes.Unknown {
		t.Errorf("Code(plain error) = %v, want Unknown", got)
	}
}

func TestKindOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"classified", NotFound("no such file"), ErrNotFound},
		{"wrapped", fmt.Errorf("reading: %w", InvalidArgument("bad")), ErrInvalidArgument},
		{"rewrapped keeps the first kind", New(ErrUnavailable, "down: %w", NotFound("x")), ErrUnavailable},
		{"unclassified", io.ErrUnexpectedEOF, ErrInternal},
	}
	for _, tt := range tests {
		if got := KindOf(tt.err); got != tt.want {
			t.Errorf("KindOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestWrapKeepsTheClassification(t *testing.T) {
	inner := FailedPrecondition("digest mismatch").WithReason("CHECKSUM_MISMATCH").WithDetail("url", "http://x")
	err := Wrap(fmt.Errorf("fetching: %w", inner), "Dockerfile:%d", 3)
	back := FromGRPC(ToGRPC(err))
	var e *Error
	if !errors.As(back, &e) || !IsFailedPrecondition(back) || e.Reason() != "CHECKSUM_MISMATCH" || e.Details()["url"] != "http://x" {
		t.Errorf("Wrap then the wire: %v (reason %q), want FAILED_PRECONDITION CHECKSUM_MISMATCH with its detail", back, e.Reason())
	}
	if got, want := err.Error(), "Dockerfile:3: fetching: digest mismatch"; got != want {
		t.Errorf("Wrap message %q, want %q", got, want)
	}
}
