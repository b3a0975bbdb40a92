// Package errdefs is Strata's one error vocabulary. Domain code returns errors
// that wrap one of the sentinel errors below (with %w, or through the helpers
// such as NotFound); the gRPC interceptors of lib/grpcserver and
// lib/grpcclient translate them to and from gRPC status codes with ToGRPC and
// FromGRPC, so code on either side of a call tests errors with errors.Is and
// never matches strings.
//
// containerd's errdefs package has the same sentinels, but its gRPC mapping
// drops everything but the code and message; Strata also carries a
// google.rpc.ErrorInfo (a stable reason and the inputs that were wrong) so that
// platform clients can act on errors without parsing messages.
package errdefs

import (
	"errors"
	"fmt"
)

// The sentinel errors. Each maps to exactly one gRPC code.
var (
	// ErrNotFound: an image, tag, blob or upload that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: something that must be new already exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidArgument: bad input, such as a malformed reference, a Dockerfile
	// error or content that does not match its digest.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrFailedPrecondition: the request is valid but the state forbids it, such
	// as deleting an image that a tag or a child still needs.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrUnavailable: a backend is down; the call is safe to retry.
	ErrUnavailable = errors.New("unavailable")
	// ErrResourceExhausted: a limit was reached.
	ErrResourceExhausted = errors.New("resource exhausted")
	// ErrUnauthenticated: the caller did not prove who it is.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the caller may not do this.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrUnimplemented: the operation is not implemented.
	ErrUnimplemented = errors.New("not implemented")
	// ErrAborted: a concurrent change got in the way; retry the whole operation.
	ErrAborted = errors.New("aborted")
	// ErrCanceled: the caller canceled the operation.
	ErrCanceled = errors.New("canceled")
	// ErrDeadlineExceeded: the operation ran out of time.
	ErrDeadlineExceeded = errors.New("deadline exceeded")
	// ErrInternal: a bug or broken invariant in Strata.
	ErrInternal = errors.New("internal error")
	// ErrDataLoss: stored data is damaged, such as a blob whose bytes no
	// longer hash to its digest. Retrying does not help.
	ErrDataLoss = errors.New("data loss")
)

// Error is a classified error with a message for people and, optionally, a
// reason and details for programs. It matches its kind with errors.Is, and its
// cause (the %w argument it was made with) too.
type Error struct {
	kind    error
	msg     string
	reason  string
	details map[string]string
	cause   error
}

// Error returns the message for people, without the kind's name: messages
// already say what was wrong and with which input.
func (e *Error) Error() string { return e.msg }

// Is reports whether target is the error's kind.
func (e *Error) Is(target error) bool { return target == e.kind }

// Unwrap returns the cause, if any.
func (e *Error) Unwrap() error { return e.cause }

// Kind returns the sentinel error the error is classified as.
func (e *Error) Kind() error { return e.kind }

// Reason returns the machine-readable reason, such as "DIGEST_MISMATCH";
// empty when none was given.
func (e *Error) Reason() string { return e.reason }

// Details returns the inputs the error concerns, such as {"digest": "sha256:…"}.
func (e *Error) Details() map[string]string { return e.details }

// WithReason returns a copy of e with a machine-readable reason.
func (e *Error) WithReason(reason string) *Error {
	c := *e
	c.reason = reason
	return &c
}

// WithDetail returns a copy of e with one more detail.
func (e *Error) WithDetail(key, value string) *Error {
	c := *e
	c.details = make(map[string]string, len(e.details)+1)
	for k, v := range e.details {
		c.details[k] = v
	}
	c.details[key] = value
	return &c
}

// New returns an error of the given kind with a message formatted as
// fmt.Errorf does; a %w argument becomes the cause.
func New(kind error, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{kind: kind, msg: err.Error(), cause: errors.Unwrap(err)}
}

// NotFound returns an ErrNotFound error with a formatted message.
func NotFound(format string, args ...any) *Error { return New(ErrNotFound, format, args...) }

// AlreadyExists returns an ErrAlreadyExists error with a formatted message.
func AlreadyExists(format string, args ...any) *Error {
	return New(ErrAlreadyExists, format, args...)
}

// InvalidArgument returns an ErrInvalidArgument error with a formatted message.
func InvalidArgument(format string, args ...any) *Error {
	return New(ErrInvalidArgument, format, args...)
}

// FailedPrecondition returns an ErrFailedPrecondition error with a formatted message.
func FailedPrecondition(format string, args ...any) *Error {
	return New(ErrFailedPrecondition, format, args...)
}

// Unavailable returns an ErrUnavailable error with a formatted message.
func Unavailable(format string, args ...any) *Error { return New(ErrUnavailable, format, args...) }

// ResourceExhausted returns an ErrResourceExhausted error with a formatted message.
func ResourceExhausted(format string, args ...any) *Error {
	return New(ErrResourceExhausted, format, args...)
}

// Unauthenticated returns an ErrUnauthenticated error with a formatted message.
func Unauthenticated(format string, args ...any) *Error {
	return New(ErrUnauthenticated, format, args...)
}

// Unimplemented returns an ErrUnimplemented error with a formatted message.
func Unimplemented(format string, args ...any) *Error {
	return New(ErrUnimplemented, format, args...)
}

// Aborted returns an ErrAborted error with a formatted message.
func Aborted(format string, args ...any) *Error { return New(ErrAborted, format, args...) }

// Internal returns an ErrInternal error with a formatted message.
func Internal(format string, args ...any) *Error { return New(ErrInternal, format, args...) }

// DataLoss returns an ErrDataLoss error with a formatted message.
func DataLoss(format string, args ...any) *Error { return New(ErrDataLoss, format, args...) }

// KindOf returns the kind of the first *Error in err's chain (ErrNotFound,
// ErrInvalidArgument, …), and ErrInternal when err carries none: the kind
// to keep when err is wrapped in a new message with New.
func KindOf(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind()
	}
	return ErrInternal
}

// Wrap returns err with its message prefixed by a formatted context
// ("context: message"), of err's kind (KindOf) and with the reason and
// details of the first *Error in its chain, so that what the error was
// classified as where it arose reaches the client through the wrapping.
func Wrap(err error, format string, args ...any) *Error {
	e := New(KindOf(err), "%s: %w", fmt.Sprintf(format, args...), err)
	var inner *Error
	if errors.As(err, &inner) {
		e.reason, e.details = inner.reason, inner.details
	}
	return e
}

// IsNotFound reports whether err is, or wraps, ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsAlreadyExists reports whether err is, or wraps, ErrAlreadyExists.
func IsAlreadyExists(err error) bool { return errors.Is(err, ErrAlreadyExists) }

// IsInvalidArgument reports whether err is, or wraps, ErrInvalidArgument.
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }

// IsFailedPrecondition reports whether err is, or wraps, ErrFailedPrecondition.
func IsFailedPrecondition(err error) bool { return errors.Is(err, ErrFailedPrecondition) }

// IsUnavailable reports whether err is, or wraps, ErrUnavailable.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// IsResourceExhausted reports whether err is, or wraps, ErrResourceExhausted.
func IsResourceExhausted(err error) bool { return errors.Is(err, ErrResourceExhausted) }

// IsDataLoss reports whether err is, or wraps, ErrDataLoss.
func IsDataLoss(err error) bool { return errors.Is(err, ErrDataLoss) }
