package errdefs

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain of every error Strata's services return.
const Domain = "strata.build"

// kinds pairs each sentinel with its gRPC code; ToGRPC and FromGRPC both read it.
var kinds = []struct {
	err  error
	code codes.Code
}{
	{ErrNotFound, codes.NotFound},
	{ErrAlreadyExists, codes.AlreadyExists},
	{ErrInvalidArgument, codes.InvalidArgument},
	{ErrFailedPrecondition, codes.FailedPrecondition},
	{ErrUnavailable, codes.Unavailable},
	{ErrResourceExhausted, codes.ResourceExhausted},
	{ErrUnauthenticated, codes.Unauthenticated},
	{ErrPermissionDenied, codes.PermissionDenied},
	{ErrUnimplemented, codes.Unimplemented},
	{ErrAborted, codes.Aborted},
	{ErrCanceled, codes.Canceled},
	{ErrDeadlineExceeded, codes.DeadlineExceeded},
	{ErrInternal, codes.Internal},
	{ErrDataLoss, codes.DataLoss},
}

// Code returns the gRPC code for err: the code of its kind, Canceled or
// DeadlineExceeded for context errors, the code of a gRPC status error, and
// Unknown for anything unclassified.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.code
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return codes.Unknown
}

// ToGRPC converts err to a gRPC status error carrying a google.rpc.ErrorInfo
// with the error's reason (the code's name when none was given) and details.
// A gRPC status error that is not one of ours passes through unchanged.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
			return err
		}
	}
	code := Code(err)
	info := &errdetails.ErrorInfo{Reason: code.String(), Domain: Domain}
	if e != nil {
		if e.reason != "" {
			info.Reason = e.reason
		}
		info.Metadata = e.details
	}
	st, detErr := status.New(code, err.Error()).WithDetails(info)
	if detErr != nil {
		return status.Error(code, err.Error())
	}
	return st.Err()
}

// FromGRPC converts a gRPC status error to an *Error of the matching kind,
// keeping the message, reason and details, so callers test it with errors.Is.
// Errors that are not gRPC status errors are returned unchanged.
func FromGRPC(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	kind := kindOf(st.Code())
	if kind == nil {
		return err
	}
	e := &Error{kind: kind, msg: st.Message(), cause: err}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			if info.GetReason() != st.Code().String() {
				e.reason = info.GetReason()
			}
			e.details = info.GetMetadata()
		}
	}
	return e
}

func kindOf(code codes.Code) error {
	for _, k := range kinds {
		if k.code == code {
			return k.err
		}
	}
	return nil
}
