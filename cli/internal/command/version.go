package command

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/cli/internal/formatter"
	"github.com/strata-build/strata/lib/version"
)

// versionInfo is what `strata version` shows, and what its --format
// templates see: {{.Client.Version}}, {{range .Services}}{{.Name}}{{end}}.
type versionInfo struct {
	Client   clientVersion
	Services []serviceVersion
}

type clientVersion struct {
	Version, GoVersion, Os, Arch string
}

type serviceVersion struct {
	Name, Address string
	// Version is the service's, "" when it cannot be reached.
	Version string
	// Status is the health status (SERVING), or why the service cannot be
	// reached.
	Status string
}

func newVersionCommand(c *CLI) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version [OPTIONS]",
		Short: "Show the client's version and each service's",
		Args:  noArgs,
		Example: "  strata version\n" +
			"  strata version --format '{{.Client.Version}}'\n" +
			"  strata version --format json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := versionInfo{Client: clientVersion{Version: version.String(), GoVersion: runtime.Version(), Os: runtime.GOOS, Arch: runtime.GOARCH}}
			for _, s := range []struct{ name, addr string }{
				{"builder", c.BuilderAddr}, {"metadata", c.MetadataAddr}, {"blobstore", c.BlobstoreAddr},
			} {
				info.Services = append(info.Services, c.serviceVersion(cmd.Context(), s.name, s.addr))
			}
			switch {
			case format == formatter.JSONFormatKey:
				b, err := json.Marshal(info)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(c.Out, "%s\n", b)
				return err
			case format != "":
				tmpl, err := formatter.Parse(format)
				if err != nil {
					return statusError{code: 64, msg: err.Error()}
				}
				if err := tmpl.Execute(c.Out, info); err != nil {
					return fmt.Errorf("template: %w", err)
				}
				_, err = fmt.Fprintln(c.Out)
				return err
			}
			w := tabwriter.NewWriter(c.Out, 0, 0, 1, ' ', 0)
			fmt.Fprintf(w, "Client:\n Version:\t%s\n Go version:\t%s\n OS/Arch:\t%s/%s\n",
				info.Client.Version, info.Client.GoVersion, info.Client.Os, info.Client.Arch)
			for _, s := range info.Services {
				v := "unreachable: " + s.Status
				if s.Version != "" {
					v = s.Version + " (" + s.Status + ")"
				}
				fmt.Fprintf(w, "\nService %s:\n Address:\t%s\n Version:\t%s\n", s.Name, s.Address, v)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "Format output using a custom template:\n'json':             Print in JSON format\n'TEMPLATE':         Print output using the given Go template")
	return cmd
}

// serviceVersion asks a service's health check for its version header.
func (c *CLI) serviceVersion(ctx context.Context, name, addr string) serviceVersion {
	s := serviceVersion{Name: name, Address: addr}
	cl, err := c.client(ctx)
	if err != nil {
		s.Status = err.Error()
		return s
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := cl.Health(ctx, addr)
	if err != nil {
		s.Status = err.Error()
		return s
	}
	s.Version, s.Status = st.Version, st.Status
	return s
}
