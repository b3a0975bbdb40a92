package command

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/cli/internal/formatter"
	"github.com/strata-build/strata/client"
)

func newInspectCommand(c *CLI) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect [OPTIONS] IMAGE [IMAGE...]",
		Short: "Display detailed information on one or more images",
		Args:  minArgs(1),
		Example: "  strata image inspect my-nginx\n" +
			"  strata image inspect --format '{{.Id}} {{.Config.Cmd}}' my-nginx\n" +
			"  strata image inspect --format '{{json .RootFS.Layers}}' my-nginx",
		ValidArgsFunction: c.completeImageNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			inspector, err := formatter.NewInspector(c.Out, format)
			if err != nil {
				return statusError{code: 64, msg: err.Error()}
			}
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			// As Docker: print what was found, then fail naming what was not.
			var failures []string
			for _, ref := range args {
				doc, err := cl.Inspect(cmd.Context(), ref)
				if err == nil {
					err = inspector.Inspect(doc)
				}
				if err != nil {
					if cmd.Context().Err() != nil {
						return err
					}
					failures = append(failures, describe(err))
				}
			}
			if err := inspector.Flush(); err != nil {
				return err
			}
			if len(failures) > 0 {
				return statusError{code: 1, msg: strings.Join(failures, "\nError: ")}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", formatHelpInspect)
	return cmd
}

const formatHelpInspect = `Format output using a custom template:
'json':             Print in JSON format
'TEMPLATE':         Print output using the given Go template.
Refer to https://docs.docker.com/go/formatting/ for more information about formatting output with templates`

func newTagCommand(c *CLI) *cobra.Command {
	return &cobra.Command{
		Use:   "tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
		Short: "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE",
		Args:  exactArgs(2),
		Example: "  strata image tag my-nginx davidainslie/nginx\n" +
			"  strata image tag my-nginx localhost:5000/team/nginx:1.17",
		ValidArgsFunction: c.completeImageNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			return cl.Tag(cmd.Context(), args[0], args[1])
		},
	}
}

func newRemoveCommand(c *CLI) *cobra.Command {
	var force, noPrune bool
	cmd := &cobra.Command{
		Use:     "rm [OPTIONS] IMAGE [IMAGE...]",
		Aliases: []string{"rmi", "remove"},
		Short:   "Remove one or more images",
		Args:    minArgs(1),
		Example: "  strata image rm davidainslie/nginx\n" +
			"  strata image rm -f 3ac2395f119b",
		ValidArgsFunction: c.completeImageNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			var errs []error
			fatal := false
			for _, ref := range args {
				items, err := cl.Remove(cmd.Context(), ref, client.RemoveOptions{Force: force, NoPrune: noPrune})
				if err != nil {
					if cmd.Context().Err() != nil {
						return err
					}
					if !isNotFound(err) {
						fatal = true
					}
					errs = append(errs, errors.New(describe(err)))
					continue
				}
				printDeleted(c, items, "Untagged: ", "Deleted: ")
			}
			if err := errors.Join(errs...); err != nil {
				// As Docker: with -f, images that do not exist are not a failure.
				if !force || fatal {
					return err
				}
				fmt.Fprintln(c.Err, "Error: "+err.Error())
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "Force removal of the image")
	cmd.Flags().BoolVar(&noPrune, "no-prune", false, "Do not delete untagged parents")
	return cmd
}

func printDeleted(c *CLI, items []*client.DeletedItem, untagged, deleted string) {
	for _, item := range items {
		if item.GetDeleted() != "" {
			fmt.Fprintln(c.Out, deleted+item.GetDeleted())
		} else {
			fmt.Fprintln(c.Out, untagged+item.GetUntagged())
		}
	}
}
