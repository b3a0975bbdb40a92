package command

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/client"
	"github.com/strata-build/strata/client/buildcontext"
)

// runStdinBuild is `strata build -`, as `docker build -`: stdin is a tar
// context (plain or compressed), whose Dockerfile -f names inside it, or
// else a Dockerfile, built without a context.
func (c *CLI) runStdinBuild(cmd *cobra.Command, opts client.BuildOptions, file string, p printer) error {
	if file == "-" {
		return errors.New("the context and the Dockerfile cannot both come from stdin")
	}
	in := bufio.NewReaderSize(c.In, 1<<20)
	if buildcontext.IsTar(in) {
		opts.ContextTar, opts.Dockerfile = in, file
	} else {
		b, err := io.ReadAll(io.LimitReader(in, 1<<20+1))
		if err != nil {
			return fmt.Errorf("reading the Dockerfile from stdin: %w", err)
		}
		opts.DockerfileContent, opts.NoContext = b, true
	}
	opts.OnEvent, opts.OnContext = p.event, p.context
	cl, err := c.client(cmd.Context())
	if err != nil {
		return err
	}
	result, err := cl.Build(cmd.Context(), "", opts)
	if err != nil {
		p.fail(err)
		return err
	}
	p.result(result)
	return nil
}
