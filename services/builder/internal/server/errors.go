package server

import (
	"bytes"
	"errors"
	"strconv"
	"strings"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// Reasons the builder gives failed builds that had none; see
// lib/errdefs/reasons.go for the whole list.
const (
	// reasonDockerfile: the Dockerfile is wrong at a line.
	reasonDockerfile = "DOCKERFILE_ERROR"
)

// dockerfileFile is how ErrorInfo names the build's Dockerfile: its path
// in the context, "Dockerfile" by default.
func dockerfileFile(opts *builderv1.BuildOptions) string {
	if len(opts.GetDockerfileContent()) > 0 || opts.GetDockerfileText() != "" || opts.GetDockerfile() == "" {
		return "Dockerfile"
	}
	return opts.GetDockerfile()
}

// withDockerfileDetails gives an error about a Dockerfile line (the
// builder's messages start "Dockerfile:LINE: ") the ErrorInfo metadata a
// program acts on: file, line, instruction (the keyword) and source (the
// line's text), keeping the error's kind, reason and other details. Its
// reason is DOCKERFILE_ERROR when it had none and is INVALID_ARGUMENT.
//
// The line is read from the message because the build package, being
// split into plan/exec/copier, is not to be touched now; once it settles,
// its errors should carry the line as a detail where they are made.
func withDockerfileDetails(err error, file string, dockerfile []byte) error {
	if err == nil {
		return nil
	}
	rest, ok := strings.CutPrefix(err.Error(), "Dockerfile:")
	if !ok {
		return err
	}
	num, _, ok := strings.Cut(rest, ":")
	line, perr := strconv.Atoi(num)
	if !ok || perr != nil || line < 1 {
		return err
	}
	kind := errdefs.KindOf(err)
	out := errdefs.New(kind, "%w", err)
	var inner *errdefs.Error
	if errors.As(err, &inner) {
		if inner.Reason() != "" {
			out = out.WithReason(inner.Reason())
		}
		for k, v := range inner.Details() {
			out = out.WithDetail(k, v)
		}
	}
	if out.Reason() == "" && kind == errdefs.ErrInvalidArgument {
		out = out.WithReason(reasonDockerfile)
	}
	out = out.WithDetail("file", file).WithDetail("line", strconv.Itoa(line))
	if src := sourceLine(dockerfile, line); src != "" {
		keyword, _, _ := strings.Cut(src, " ")
		out = out.WithDetail("instruction", strings.ToUpper(keyword)).WithDetail("source", src)
	}
	return out
}

// sourceLine returns line n (1-based) of a Dockerfile, trimmed and cut to
// a length that fits in an error.
func sourceLine(dockerfile []byte, n int) string {
	lines := bytes.Split(dockerfile, []byte("\n"))
	if n > len(lines) {
		return ""
	}
	s := strings.TrimSpace(string(lines[n-1]))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
