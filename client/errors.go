package client

import (
	"errors"
	"regexp"
	"strconv"
	"strings"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/grpcclient"
)

// The kinds of error the services return, one per gRPC code. Every error a
// method of Client returns for a service's answer matches one of them with
// errors.Is.
var (
	ErrNotFound           = errdefs.ErrNotFound           // NOT_FOUND: an unknown image, tag or blob
	ErrAlreadyExists      = errdefs.ErrAlreadyExists      // ALREADY_EXISTS
	ErrInvalidArgument    = errdefs.ErrInvalidArgument    // INVALID_ARGUMENT: a bad reference, a Dockerfile error, content that does not match its digest
	ErrFailedPrecondition = errdefs.ErrFailedPrecondition // FAILED_PRECONDITION: e.g. deleting an image a tag or child needs
	ErrUnavailable        = errdefs.ErrUnavailable        // UNAVAILABLE: a service or backend is down; safe to retry
	ErrResourceExhausted  = errdefs.ErrResourceExhausted  // RESOURCE_EXHAUSTED: a limit was reached
	ErrUnauthenticated    = errdefs.ErrUnauthenticated    // UNAUTHENTICATED: no or a bad token or certificate
	ErrPermissionDenied   = errdefs.ErrPermissionDenied   // PERMISSION_DENIED: the token's role does not allow the call
	ErrUnimplemented      = errdefs.ErrUnimplemented      // UNIMPLEMENTED
	ErrAborted            = errdefs.ErrAborted            // ABORTED: a concurrent change; retry the whole operation
	ErrCanceled           = errdefs.ErrCanceled           // CANCELLED
	ErrDeadlineExceeded   = errdefs.ErrDeadlineExceeded   // DEADLINE_EXCEEDED
	ErrInternal           = errdefs.ErrInternal           // INTERNAL: a bug in Strata
	ErrDataLoss           = errdefs.ErrDataLoss           // DATA_LOSS: stored data is damaged
)

// Reason returns the stable reason a service gave for err (the
// google.rpc.ErrorInfo reason), or "" when it gave none beyond its code.
func Reason(err error) string {
	var e *errdefs.Error
	if errors.As(err, &e) {
		return e.Reason()
	}
	return ""
}

// Details returns the ErrorInfo metadata a service sent with err, or nil.
func Details(err error) map[string]string {
	var e *errdefs.Error
	if errors.As(err, &e) {
		return e.Details()
	}
	return nil
}

// IsRemote reports whether err is an answer a service sent, rather than a
// failure to reach it (an UNAVAILABLE of the client's own transport).
func IsRemote(err error) bool { return grpcclient.FromService(err) }

// BuildError is a build that failed at a line of its Dockerfile: a parse
// error, an instruction that cannot run, or a RUN step that exited non-zero.
// It wraps the service's error, so errors.Is(err, ErrInvalidArgument) holds
// too.
type BuildError struct {
	// File is the Dockerfile's name as the builder reports it ("Dockerfile").
	File string
	// Line is the 1-based line of the instruction; 0 when unknown.
	Line int
	// Instruction is the instruction's keyword (RUN, COPY, FROM, …) when known.
	Instruction string
	// ExitCode is a failed RUN step's exit code; 0 otherwise.
	ExitCode int
	// Message is the service's message.
	Message string

	err error
}

func (e *BuildError) Error() string { return e.Message }
func (e *BuildError) Unwrap() error { return e.err }

// The ErrorInfo metadata keys asBuildError reads when a builder sends them;
// until it does, the fields come from the message.
const (
	detailFile        = "file"
	detailLine        = "line"
	detailInstruction = "instruction"
	detailExitCode    = "exit_code"
)

// dockerfileLine is how the builder's messages name a line today:
// "Dockerfile:12: …", then, for RUN failures, "The command '…' returned a
// non-zero code: N", else often the instruction ("FROM: …").
var (
	dockerfileLine = regexp.MustCompile(`(?:^|[\s(])(\S*Dockerfile[^\s:]*):(\d+): `)
	nonZeroCode    = regexp.MustCompile(`returned a non-zero code: (\d+)`)
	leadingKeyword = regexp.MustCompile(`^([A-Z]+)\b`)
)

// asBuildError returns err as a *BuildError when it names a Dockerfile line,
// in its ErrorInfo metadata or its message; else err unchanged.
func asBuildError(err error) error {
	if err == nil {
		return nil
	}
	var be *BuildError
	if errors.As(err, &be) {
		return err
	}
	msg := err.Error()
	e := &BuildError{Message: msg, err: err}
	if d := Details(err); d != nil {
		e.File = d[detailFile]
		e.Line, _ = strconv.Atoi(d[detailLine])
		e.Instruction = d[detailInstruction]
		e.ExitCode, _ = strconv.Atoi(d[detailExitCode])
	}
	if e.Line == 0 {
		m := dockerfileLine.FindStringSubmatchIndex(msg)
		if m == nil {
			return err
		}
		e.File = msg[m[2]:m[3]]
		e.Line, _ = strconv.Atoi(msg[m[4]:m[5]])
		rest := msg[m[1]:]
		if c := nonZeroCode.FindStringSubmatch(rest); c != nil {
			e.ExitCode, _ = strconv.Atoi(c[1])
			if e.Instruction == "" {
				e.Instruction = "RUN"
			}
		}
		if k := leadingKeyword.FindString(rest); e.Instruction == "" && k != "" && k == strings.ToUpper(k) && len(k) > 1 {
			e.Instruction = k
		}
	}
	return e
}
