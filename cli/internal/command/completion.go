package command

import (
	"github.com/spf13/cobra"
)

// newCompletionCommand returns `strata completion SHELL`, in place of
// cobra's default, so that it has examples like every other command.
func newCompletionCommand(root *cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Generate a shell completion script",
		Long: "Generate the completion script of strata for a shell. Image arguments complete\n" +
			"with the tags the metadata service holds.",
		Example: "  source <(strata completion bash)\n" +
			"  strata completion zsh > \"${fpath[1]}/_strata\"\n" +
			"  strata completion fish > ~/.config/fish/completions/strata.fish",
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args:      cobra.MatchAll(exactArgs(1), cobra.OnlyValidArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			default:
				return root.GenFishCompletion(out, true)
			}
		},
	}
	return cmd
}

// newHelpCommand returns `strata help COMMAND`, cobra's help with an example.
func newHelpCommand(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:     "help [COMMAND]",
		Short:   "Help about any command",
		Example: "  strata help image ls",
		RunE: func(cmd *cobra.Command, args []string) error {
			target, _, err := root.Find(args)
			if err != nil || target == nil {
				return root.Help()
			}
			return target.Help()
		},
		ValidArgsFunction: func(_ *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
			var names []string
			for _, c := range root.Commands() {
				names = append(names, c.Name())
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
	}
}
