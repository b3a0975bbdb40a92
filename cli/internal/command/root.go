// Package command holds the strata command tree (cobra, in the shape of
// Docker's CLI): one file per command group.
package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/client"

	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/requestid"
)

// CLI holds what every command needs: the I/O streams and the connection
// settings from the global flags.
type CLI struct {
	In       io.Reader
	Out, Err io.Writer

	BuilderAddr, MetadataAddr, BlobstoreAddr string
	Conn                                     grpcclient.Config

	// Now is the clock ages are shown against; time.Now when nil.
	Now func() time.Time
	// OutTerminal, when set, overrides whether Out is taken for a terminal.
	OutTerminal *bool

	cl *client.Client
}

// ConfigEnv names the CLI's configuration file when set.
const ConfigEnv = client.ConfigEnv

// client returns the Go client the commands call, made once per command
// run from the global flags.
func (c *CLI) client(ctx context.Context) (*client.Client, error) {
	if c.cl != nil {
		return c.cl, nil
	}
	cl, err := client.New(ctx, client.WithConfig(client.Config{
		Builder: c.BuilderAddr, Metadata: c.MetadataAddr, Blobstore: c.BlobstoreAddr,
		TLS: c.Conn.TLS, TLSCACert: c.Conn.CAFile, TLSCert: c.Conn.CertFile, TLSKey: c.Conn.KeyFile,
		Token: c.Conn.Token, TokenFile: c.Conn.TokenFile,
	}))
	if err != nil {
		return nil, err
	}
	c.cl = cl
	return cl, nil
}

func (c *CLI) close() {
	if c.cl != nil {
		c.cl.Close()
	}
}

// NewRoot returns the strata command tree.
func NewRoot(c *CLI) *cobra.Command {
	root := &cobra.Command{
		Use:           "strata",
		Short:         "Build, store and serve OCI images with Strata",
		SilenceUsage:  true,
		SilenceErrors: true,
		Example:       "  strata version\n  strata --metadata strata.internal:50052 images",
	}
	root.SetIn(c.In)
	root.SetOut(c.Out)
	root.SetErr(c.Err)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return statusError{code: 125, msg: fmt.Sprintf("%v\nSee '%s --help'.", err, cmd.CommandPath())}
	})
	// Flags win over the environment, which wins over the configuration
	// file, which wins over the built-in defaults: client.LoadConfig's
	// rules, which a broken file fails only when a command runs.
	cfg, cfgErr := client.LoadConfig()
	if cfgErr != nil {
		root.PersistentPreRunE = func(*cobra.Command, []string) error { return cfgErr }
		cfg = client.Config{Builder: client.DefaultBuilderAddr, Metadata: client.DefaultMetadataAddr, Blobstore: client.DefaultBlobstoreAddr}
	}
	f := root.PersistentFlags()
	f.StringVar(&c.BuilderAddr, "builder", cfg.Builder, "builder service address (env "+client.BuilderAddrEnv+")")
	f.StringVar(&c.MetadataAddr, "metadata", cfg.Metadata, "metadata service address (env "+client.MetadataAddrEnv+")")
	f.StringVar(&c.BlobstoreAddr, "blobstore", cfg.Blobstore, "blobstore service address (env "+client.BlobstoreAddrEnv+")")
	// The client settings read the same STRATA_CLIENT_… variables as the
	// services' --client-… flags, never the servers' own STRATA_TLS_CERT.
	f.BoolVar(&c.Conn.TLS, "tls", cfg.TLS, "use TLS (env STRATA_CLIENT_TLS)")
	f.StringVar(&c.Conn.CAFile, "tlscacert", cfg.TLSCACert, "trust certificates signed by this CA (env STRATA_CLIENT_TLS_CA)")
	f.StringVar(&c.Conn.CertFile, "tlscert", cfg.TLSCert, "client certificate for mutual TLS (env STRATA_CLIENT_TLS_CERT)")
	f.StringVar(&c.Conn.KeyFile, "tlskey", cfg.TLSKey, "client key for mutual TLS (env STRATA_CLIENT_TLS_KEY)")
	f.StringVar(&c.Conn.Token, "token", cfg.Token, "bearer token (env STRATA_CLIENT_TOKEN)")
	f.StringVar(&c.Conn.TokenFile, "token-file", cfg.TokenFile, "file holding the bearer token (env STRATA_CLIENT_TOKEN_FILE)")

	image := newImageCommand()
	addImageCommands(c, root, image,
		newBuildCommand,
		newHistoryCommand,
		newImportCommand,
		newInspectCommand,
		newLoadCommand,
		newListCommand,
		newPruneCommand,
		newPullCommand,
		newPushCommand,
		newRemoveCommand,
		newSaveCommand,
		newTagCommand,
		// Engineer "build" adds newBuildCommand here: `strata build` and `strata image build`.
	)
	root.AddCommand(
		image,
		newSystemCommand(c),
		newVersionCommand(c),
		newCompletionCommand(root),
		newBlobCommand(c),
		newBuildsCommand(c),
		newBuilderCommand(c),
	)
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetHelpCommand(newHelpCommand(root))
	root.InitDefaultHelpCmd()
	// Use lines spell out [OPTIONS] as Docker's do.
	walk(root, func(cmd *cobra.Command) { cmd.DisableFlagsInUseLine = true })
	return root
}

// walk calls fn on cmd and every command below it.
func walk(cmd *cobra.Command, fn func(*cobra.Command)) {
	fn(cmd)
	for _, sub := range cmd.Commands() {
		walk(sub, fn)
	}
}

// Execute runs the CLI with args and returns the exit code. Errors print the
// service's message without stack noise.
func Execute(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	return execute(ctx, &CLI{In: in, Out: out, Err: errOut}, args)
}

func execute(ctx context.Context, c *CLI, args []string) int {
	errOut := c.Err
	defer c.close()
	root := NewRoot(c)
	root.SetArgs(args)
	ctx = requestid.With(ctx, requestid.New())
	if err := root.ExecuteContext(ctx); err != nil {
		if ctx.Err() != nil {
			// Ctrl-C: the calls in flight were canceled with the context.
			return 130
		}
		var st statusError
		if errors.As(err, &st) {
			if st.msg != "" {
				fmt.Fprintf(errOut, "Error: %s\n", st.msg)
			}
			return st.code
		}
		fmt.Fprintf(errOut, "Error: %v\n", describe(err))
		return 1
	}
	return 0
}

// statusError ends a command with a chosen exit code and, when msg is set,
// a message.
type statusError struct {
	code int
	msg  string
}

func (e statusError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("exit status %d", e.code)
}

// describe makes service errors read well: the message, and a hint when
// the CLI cannot reach a service. An UNAVAILABLE a service sent (the builder
// cannot reach a registry or the blob store) says itself what is down.
func describe(err error) string {
	if errors.Is(err, client.ErrUnavailable) && !client.IsRemote(err) {
		return err.Error() + " (is the service running? check --builder, --metadata, --blobstore or STRATA_*_ADDR)"
	}
	return err.Error()
}
