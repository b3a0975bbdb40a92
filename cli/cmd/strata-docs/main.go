// Command strata-docs writes the CLI reference, one Markdown page per
// command, from the strata command tree itself, so the reference cannot
// drift from the flags: `make docs` runs it into docs/cli, and its test
// fails when the pages there are stale.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/strata-build/strata/cli/internal/command"
)

func main() {
	out := flag.String("o", "docs/cli", "directory to write the pages into (its *.md files are replaced)")
	flag.Parse()
	if err := write(*out); err != nil {
		fmt.Fprintln(os.Stderr, "strata-docs:", err)
		os.Exit(1)
	}
}

// write replaces the Markdown pages in dir with the reference, so a
// command that was removed loses its page.
func write(dir string) error {
	old, err := filepath.Glob(filepath.Join(dir, "*.md"))
	if err != nil {
		return err
	}
	for _, p := range old {
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := newRoot()
	if err != nil {
		return err
	}
	return doc.GenMarkdownTreeCustom(root, dir, func(string) string { return "" }, func(name string) string { return name })
}

// newRoot builds the command tree with the defaults a new user sees: the
// flags' defaults come from the environment and the configuration file,
// which must not leak the writer's own settings into the pages.
func newRoot() (*cobra.Command, error) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "STRATA_") {
			os.Unsetenv(name)
		}
	}
	tmp, err := os.MkdirTemp("", "strata-docs")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	// A configuration file that does not exist: the built-in defaults.
	os.Setenv(command.ConfigEnv, filepath.Join(tmp, "none.json"))
	root := command.NewRoot(&command.CLI{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard})
	root.DisableAutoGenTag = true
	return root, nil
}
