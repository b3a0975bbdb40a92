package command

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/client"
)

// newImageCommand returns `strata image`, the group Docker's `docker image`
// is; addImageCommands fills it.
func newImageCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "image",
		Short: "Manage images",
		Args:  noArgs,
		Example: "  strata image ls\n" +
			"  strata image history my-nginx",
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
}

// topLevelNames are the image commands whose top-level form Docker names
// differently: `docker images` is `docker image ls`, `docker rmi` is
// `docker image rm`. Prune exists only as `docker image prune`.
var topLevelNames = map[string]string{"ls": "images", "rm": "rmi", "prune": ""}

// addImageCommands puts each command both under `strata image` and at the
// top level, as Docker does. A constructor is called once per place, since a
// cobra command has one parent. Constructors return the `image` form.
func addImageCommands(c *CLI, root, image *cobra.Command, constructors ...func(*CLI) *cobra.Command) {
	for _, newCmd := range constructors {
		sub := newCmd(c)
		image.AddCommand(sub)
		name := sub.Name()
		top, renamed := topLevelNames[name]
		if renamed && top == "" {
			continue
		}
		cmd := newCmd(c)
		if renamed {
			cmd.Use = top + strings.TrimPrefix(cmd.Use, name)
			cmd.Aliases = nil
			cmd.Example = strings.ReplaceAll(cmd.Example, "strata image "+name, "strata "+top)
		} else {
			cmd.Example = strings.ReplaceAll(cmd.Example, "strata image "+name, "strata "+name)
		}
		root.AddCommand(cmd)
	}
}

// completeImageNames completes image arguments with the tags the metadata
// service holds.
func (c *CLI) completeImageNames(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	cl, err := c.client(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	images, err := cl.Images(cmd.Context(), client.ListOptions{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, img := range images {
		for _, tag := range img.GetRepoTags() {
			if strings.HasPrefix(tag, toComplete) {
				names = append(names, tag)
			}
		}
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// Argument checks with Docker's messages.

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	return usageError(cmd, fmt.Sprintf("%q accepts no arguments.", cmd.CommandPath()))
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		return usageError(cmd, fmt.Sprintf("%q requires exactly %d %s.", cmd.CommandPath(), n, pluralize("argument", n)))
	}
}

func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) >= n {
			return nil
		}
		return usageError(cmd, fmt.Sprintf("%q requires at least %d %s.", cmd.CommandPath(), n, pluralize("argument", n)))
	}
}

func maxArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) <= n {
			return nil
		}
		return usageError(cmd, fmt.Sprintf("%q requires at most %d %s.", cmd.CommandPath(), n, pluralize("argument", n)))
	}
}

func rangeArgs(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) >= min && len(args) <= max {
			return nil
		}
		return usageError(cmd, fmt.Sprintf("%q requires at least %d and at most %d %s.", cmd.CommandPath(), min, max, pluralize("argument", max)))
	}
}

func pluralize(word string, n int) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// usageError is a mistake on the command line: Docker's message, a pointer
// to --help, the usage line, and exit status 1.
func usageError(cmd *cobra.Command, msg string) error {
	return statusError{code: 1, msg: fmt.Sprintf("%s\nSee '%s --help'.\n\nUsage:  %s\n\n%s", msg, cmd.CommandPath(), cmd.UseLine(), cmd.Short)}
}
