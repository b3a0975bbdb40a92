// Package dockerfile reads Dockerfiles with BuildKit's reference grammar
// (github.com/moby/buildkit/frontend/dockerfile/{parser,instructions,shell})
// and holds the semantics of Docker's classic builder on top of it: which
// stages a target needs, how build arguments are scoped, how each
// instruction expands its variables and changes the image config, and the
// history text Docker writes for it.
//
// Every error this package returns for bad input matches
// errdefs.ErrInvalidArgument and, when it concerns a line, starts with
// "Dockerfile:LINE: ".
package dockerfile

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/strata-build/strata/lib/errdefs"
)

// MaxSize is the largest Dockerfile Parse reads. Real Dockerfiles are a few
// kilobytes; the bound keeps a hostile one from costing the builder memory
// and time before any step runs.
const MaxSize = 1 << 20

// Dockerfile is a parsed Dockerfile.
type Dockerfile struct {
	// Stages are the build stages in file order.
	Stages []Stage
	// MetaArgs are the ARG instructions before the first FROM.
	MetaArgs []instructions.ArgCommand
	// EscapeToken is the escape character (the `# escape=` directive).
	EscapeToken rune
	// Syntax is the frontend image the `# syntax=` directive names, one
	// of BuildKit's Dockerfile frontend (docker/dockerfile:1…), which this
	// package stands in for; "" without the directive.
	Syntax string
	// Warnings are the parser's warnings, such as empty continuation lines.
	Warnings []Warning
}

// Stage is one build stage: a FROM and the instructions after it.
type Stage struct {
	instructions.Stage
	// Index is the stage's position in the Dockerfile, from 0.
	Index int
	// Line is the line of its FROM instruction.
	Line int
}

// Warning is a non-fatal remark about the Dockerfile.
type Warning struct {
	Line    int
	Message string
}

// Parse parses a Dockerfile. Errors name the line at fault.
func Parse(b []byte) (*Dockerfile, error) {
	if len(b) > MaxSize {
		return nil, errdefs.InvalidArgument("Dockerfile is %d bytes; the limit is %d", len(b), MaxSize)
	}
	if line := longLine(b); line > 0 {
		return nil, errdefs.InvalidArgument("Dockerfile:%d: line longer than %d bytes", line, maxLineLength)
	}
	syntax, err := checkSyntax(b)
	if err != nil {
		return nil, err
	}
	res, err := parser.Parse(bytes.NewReader(b))
	if err != nil {
		return nil, lineError(err)
	}
	df := &Dockerfile{EscapeToken: res.EscapeToken, Syntax: syntax}
	for _, w := range res.Warnings {
		line := 0
		if w.Location != nil {
			line = w.Location.Start.Line
		}
		df.Warnings = append(df.Warnings, Warning{Line: line, Message: w.Short})
	}
	stages, metaArgs, err := instructions.Parse(res.AST, quietLinter())
	if err != nil {
		return nil, lineError(err)
	}
	if len(stages) == 0 {
		return nil, errdefs.InvalidArgument("Dockerfile has no FROM instruction: a build needs a base image (or FROM scratch)")
	}
	df.MetaArgs = metaArgs
	for i, s := range stages {
		st := Stage{Stage: s, Index: i}
		if len(s.Location) > 0 {
			st.Line = s.Location[0].Start.Line
		}
		for _, cmd := range s.Commands {
			if err := checkCommand(cmd); err != nil {
				return nil, err
			}
		}
		df.Stages = append(df.Stages, st)
	}
	for i, s := range df.Stages {
		if s.Name == "" {
			continue
		}
		for _, prev := range df.Stages[:i] {
			if strings.EqualFold(prev.Name, s.Name) {
				return nil, errdefs.InvalidArgument("Dockerfile:%d: duplicate stage name %q", s.Line, s.Name)
			}
		}
		if _, err := strconv.Atoi(s.Name); err == nil {
			return nil, errdefs.InvalidArgument("Dockerfile:%d: stage name %q cannot be a number", s.Line, s.Name)
		}
	}
	return df, nil
}

// ParseInstruction is BuildKit's instructions.ParseInstruction for one
// instruction outside a Dockerfile (an ONBUILD trigger, an import
// --change), with the linter Parse uses.
func ParseInstruction(node *parser.Node) (any, error) {
	return instructions.ParseInstructionWithLinter(node, quietLinter())
}

// quietLinter is a BuildKit linter that reports nothing. BuildKit's parse
// functions need one: without it, an instruction under a `# check=`
// comment that is no directive (one not at the top of the file) makes
// them dereference nil (linter.WithMergedConfigFromComments in v0.34.2),
// which would crash the builder on a hostile Dockerfile.
func quietLinter() *linter.Linter { return linter.New(&linter.Config{}) }

// Instructions counts the Dockerfile's instructions, FROMs and the ARGs
// before the first FROM included.
func (d *Dockerfile) Instructions() int {
	n := len(d.MetaArgs)
	for _, s := range d.Stages {
		n += 1 + len(s.Commands)
	}
	return n
}

// maxLineLength bounds one logical line; BuildKit's scanner would otherwise
// grow its buffer to whatever a one-line file holds.
const maxLineLength = 256 << 10

func longLine(b []byte) int {
	line := 1
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			i = len(b)
		}
		if i > maxLineLength {
			return line
		}
		line++
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return 0
}

// dockerfileFrontend matches the references of BuildKit's Dockerfile
// frontend, version 1: docker/dockerfile:1, :1.x or :1.x.y, with or
// without docker.io/, a -labs suffix and a digest.
var dockerfileFrontend = regexp.MustCompile(`^(docker\.io/)?docker/dockerfile:1(\.[0-9]+){0,2}(-labs)?(@sha256:[0-9a-f]{64})?$`)

// checkSyntax reads the `# syntax=` directive as BuildKit does
// (parser.DetectSyntax). BuildKit would run the frontend image it names;
// this builder has only its own frontend, which follows docker/dockerfile:1,
// so it accepts that and refuses any other image rather than build the
// Dockerfile with a frontend it did not ask for.
func checkSyntax(b []byte) (string, error) {
	ref, _, loc, ok := parser.DetectSyntax(b)
	if !ok {
		return "", nil
	}
	if dockerfileFrontend.MatchString(ref) {
		return ref, nil
	}
	line := 1
	if len(loc) > 0 && loc[0].Start.Line > 0 {
		line = loc[0].Start.Line
	}
	return "", errdefs.InvalidArgument("Dockerfile:%d: the syntax directive names frontend image %q; this builder has only its own Dockerfile frontend (docker/dockerfile:1)", line, ref)
}

// SyntaxArg is the build argument with which BuildKit names the frontend
// from the command line, in place of the syntax directive.
const SyntaxArg = "BUILDKIT_SYNTAX"

// CheckSyntaxArg accepts a --build-arg BUILDKIT_SYNTAX value as the syntax
// directive's: it may name docker/dockerfile:1 (and options after a space,
// which this builder ignores, as BuildKit passes them to the frontend).
func CheckSyntaxArg(value string) error {
	ref, _, _ := strings.Cut(strings.TrimSpace(value), " ")
	if dockerfileFrontend.MatchString(ref) {
		return nil
	}
	return errdefs.InvalidArgument("--build-arg %s names frontend image %q; this builder has only its own Dockerfile frontend (docker/dockerfile:1)", SyntaxArg, ref)
}

// checkCommand refuses what the classic builder refuses and BuildKit's
// grammar accepts for its own features: flags Strata does not implement are
// errors, never silently ignored.
func checkCommand(cmd instructions.Command) error {
	if msg := Unsupported(cmd); msg != "" {
		return Errorf(cmd, "%s", msg)
	}
	return nil
}

// Unsupported says which of a command's BuildKit features this builder
// does not implement, or "". Parse refuses such an instruction naming its
// line; an ONBUILD trigger, parsed when a build uses its image, is refused
// the same way on its FROM's line.
func Unsupported(cmd instructions.Command) string {
	switch c := cmd.(type) {
	case *instructions.RunCommand:
		for _, f := range c.FlagsUsed {
			switch f {
			case "mount": // its types are checked once expanded (State.Run)
			case "network": // Run.Network
			case "security":
				if instructions.GetSecurity(c) != instructions.SecuritySandbox {
					return fmt.Sprintf("RUN --security=%s is not supported by this builder: steps run only in its sandbox", instructions.GetSecurity(c))
				}
			default:
				return fmt.Sprintf("RUN --%s is not supported by this builder", f)
			}
		}
	}
	return ""
}

// Line returns the first line of an instruction, or 0.
func Line(cmd instructions.Command) int {
	if loc := cmd.Location(); len(loc) > 0 {
		return loc[0].Start.Line
	}
	return 0
}

// Errorf returns an INVALID_ARGUMENT error about an instruction, naming its
// line.
func Errorf(cmd instructions.Command, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if line := Line(cmd); line > 0 {
		return errdefs.InvalidArgument("Dockerfile:%d: %s", line, msg)
	}
	return errdefs.InvalidArgument("%s", msg)
}

// lineError turns a BuildKit parse error into an INVALID_ARGUMENT error that
// starts with the line it concerns.
func lineError(err error) error {
	msg := rootMessage(err)
	var le *parser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		line := le.Locations[0][0].Start.Line
		if line > 0 {
			return errdefs.InvalidArgument("Dockerfile:%d: %s", line, msg)
		}
	}
	var ue *instructions.UnknownInstructionError
	if errors.As(err, &ue) {
		return errdefs.InvalidArgument("Dockerfile:%d: %s", ue.Line, msg)
	}
	return errdefs.InvalidArgument("Dockerfile: %s", msg)
}

// rootMessage drops the wrapping BuildKit adds ("dockerfile parse error on
// line 3: …") since the line is reported separately.
func rootMessage(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "dockerfile parse error on line "); i >= 0 {
		if j := strings.Index(msg[i:], ": "); j >= 0 {
			msg = msg[:i] + msg[i+j+2:]
		}
	}
	return msg
}
