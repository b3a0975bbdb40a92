package command

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/client/buildcontext"
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// runStdinBuild is `strata build -`, as `docker build -`: stdin is a tar
// context (plain or compressed), whose Dockerfile -f names inside it, or
// else a Dockerfile, built without a context.
func (c *CLI) runStdinBuild(cmd *cobra.Command, opts *builderv1.BuildOptions, file string, p printer) error {
	if file == "-" {
		return errors.New("the context and the Dockerfile cannot both come from stdin")
	}
	in := bufio.NewReaderSize(c.In, 1<<20)
	builder, err := c.builder()
	if err != nil {
		return err
	}
	stream, err := builder.Build(cmd.Context())
	if err != nil {
		return err
	}
	f := &buildFollower{event: p.event}
	h := buildcontext.Handler{Event: f.track, Sending: p.context}
	if buildcontext.IsTar(in) {
		opts.Dockerfile = file
		if err := buildcontext.SendTar(stream, opts, in); err != nil {
			return err
		}
	} else {
		b, err := io.ReadAll(io.LimitReader(in, 1<<20+1))
		if err != nil {
			return fmt.Errorf("reading the Dockerfile from stdin: %w", err)
		}
		opts.DockerfileContent = b
		if err := stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Options{Options: opts}}); err != nil {
			return err
		}
		if err := stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Entries{Entries: &builderv1.ContextEntries{Last: true}}}); err != nil {
			return err
		}
	}
	result, err := buildcontext.Result(stream, h)
	if err != nil {
		result, err = f.recover(cmd.Context(), builder, err)
	}
	if err != nil {
		p.fail()
		return err
	}
	p.result(result)
	return nil
}
