package command

import (
	"context"
	"fmt"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/strata-build/strata/lib/version"
)

func newVersionCommand(c *CLI) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Show the client's version and each service's",
		Args:    cobra.NoArgs,
		Example: "  strata version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := tabwriter.NewWriter(c.Out, 0, 0, 1, ' ', 0)
			fmt.Fprintf(w, "Client:\n Version:\t%s\n Go version:\t%s\n OS/Arch:\t%s/%s\n",
				version.String(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			for _, s := range []struct{ name, addr string }{
				{"builder", c.BuilderAddr}, {"metadata", c.MetadataAddr}, {"blobstore", c.BlobstoreAddr},
			} {
				fmt.Fprintf(w, "\nService %s:\n Address:\t%s\n Version:\t%s\n", s.name, s.addr, c.serviceVersion(cmd.Context(), s.addr))
			}
			return w.Flush()
		},
	}
}

// serviceVersion asks a service's health check for its version header.
func (c *CLI) serviceVersion(ctx context.Context, addr string) string {
	conn, err := c.Dial(addr)
	if err != nil {
		return "unreachable: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var header metadata.MD
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&header))
	if err != nil {
		return "unreachable: " + err.Error()
	}
	v := "unknown"
	if h := header.Get(version.Header); len(h) > 0 {
		v = h[0]
	}
	return v + " (" + resp.GetStatus().String() + ")"
}
