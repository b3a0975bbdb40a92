package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/distribution/reference"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/strata-build/strata/cli/internal/progress"
	"github.com/strata-build/strata/client"
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

func newImportCommand(c *CLI) *cobra.Command {
	var (
		changes           []string
		message, platform string
	)
	cmd := &cobra.Command{
		Use:   "import [OPTIONS] file|- [REPOSITORY[:TAG]]",
		Short: "Import the contents from a tarball to create a filesystem image",
		Args:  rangeArgs(1, 2),
		Example: "  strata image import rootfs.tar busybox:latest\n" +
			"  cat rootfs.tar.gz | strata image import - busybox\n" +
			"  strata image import --change 'CMD [\"sh\"]' --change 'ENV A=1' -m 'base' rootfs.tar base:1",
		RunE: func(cmd *cobra.Command, args []string) error {
			src, closeSrc, err := c.openSource(args[0])
			if err != nil {
				return err
			}
			defer closeSrc()
			opts := client.ImportOptions{Changes: changes, Message: message, Platform: platform,
				OnProgress: showProgress(progress.New(c.Out, true, progress.ImportWords), c.outIsTerminal())}
			if len(args) > 1 {
				opts.Reference = args[1]
			}
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			result, err := cl.Import(cmd.Context(), src, opts)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.Out, result.GetImageId())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&changes, "change", "c", nil, "Apply Dockerfile instruction to the created image")
	f.StringVarP(&message, "message", "m", "", "Set commit message for imported image")
	f.StringVar(&platform, "platform", os.Getenv("DOCKER_DEFAULT_PLATFORM"), "Set platform if server is multi-platform capable")
	return cmd
}

// openSource opens an import's tarball: a file, or standard input for "-".
func (c *CLI) openSource(name string) (io.Reader, func(), error) {
	if name == "-" {
		return c.In, func() {}, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

func newLoadCommand(c *CLI) *cobra.Command {
	var (
		input string
		quiet bool
	)
	cmd := &cobra.Command{
		Use:   "load [OPTIONS]",
		Short: "Load an image from a tar archive or STDIN",
		Args:  noArgs,
		Example: "  strata image load -i busybox.tar\n" +
			"  docker save busybox | strata image load",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var src io.Reader = c.In
			if input == "" {
				if isTerminal(c.In) {
					return errors.New("requested load from stdin, but stdin is empty")
				}
			} else {
				f, err := os.Open(input)
				if err != nil {
					return err
				}
				defer f.Close()
				src = f
			}
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			live := !quiet && c.outIsTerminal()
			result, err := cl.Load(cmd.Context(), src, client.LoadOptions{
				Quiet: !live, OnProgress: showProgress(progress.New(c.Out, true, progress.LoadWords), live)})
			if err != nil {
				return err
			}
			for _, img := range result.GetImages() {
				if len(img.GetTags()) == 0 {
					fmt.Fprintln(c.Out, "Loaded image ID:", img.GetImageId())
				}
				for _, tag := range img.GetTags() {
					fmt.Fprintln(c.Out, "Loaded image:", tag)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&input, "input", "i", "", "Read from tar archive file, instead of STDIN")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "Suppress the load output")
	return cmd
}

// showProgress shows progress on display when shown, and drops it when not.
func showProgress(display *progress.Display, shown bool) func(*builderv1.TransferProgress) {
	return func(p *builderv1.TransferProgress) {
		if shown {
			display.Update(p)
		}
	}
}

func newSaveCommand(c *CLI) *cobra.Command {
	var (
		output, format string
		oci            bool
	)
	cmd := &cobra.Command{
		Use:   "save [OPTIONS] IMAGE [IMAGE...]",
		Short: "Save one or more images to a tar archive (streamed to STDOUT by default)",
		Args:  minArgs(1),
		Example: "  strata image save -o my-nginx.tar my-nginx\n" +
			"  strata image save my-nginx busybox | docker load\n" +
			"  strata image save --format oci -o layout.tar my-nginx",
		ValidArgsFunction: c.completeImageNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output == "" && c.outIsTerminal() {
				return errors.New("cowardly refusing to save to a terminal. Use the -o flag or redirect")
			}
			archive := client.SaveDocker
			switch {
			case format == "oci" || (format == "" && oci):
				archive = client.SaveOCI
			case format != "" && format != "docker":
				return statusError{code: 125, msg: fmt.Sprintf("invalid --format %q: want docker or oci", format)}
			case format == "docker" && oci:
				return statusError{code: 125, msg: "--oci and --format docker contradict each other"}
			}
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			save := func(w io.Writer) error { return cl.Save(cmd.Context(), w, args, archive) }
			if output == "" {
				return save(c.Out)
			}
			return writeFileAtomically(output, save)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "Write to a file, instead of STDOUT")
	cmd.Flags().StringVar(&format, "format", "", "Archive format: docker (a docker-archive, the default) or oci (an OCI image layout)")
	cmd.Flags().BoolVar(&oci, "oci", false, "Write an OCI image layout (as --format oci)")
	return cmd
}

// writeFileAtomically writes path through a temporary file beside it, so
// that a failed or interrupted save leaves no partial archive.
func writeFileAtomically(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("failed to save image: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func newPullCommand(c *CLI) *cobra.Command {
	var (
		platform                      string
		quiet, insecure, allPlatforms bool
		creds                         registryCredentials
	)
	cmd := &cobra.Command{
		Use:   "pull [OPTIONS] NAME[:TAG|@DIGEST]",
		Short: "Download an image from a registry",
		Args:  exactArgs(1),
		Example: "  strata image pull nginx:1.27\n" +
			"  strata image pull localhost:5000/team/app@sha256:3ac2395f119b…\n" +
			"  strata image pull --platform linux/arm64 busybox\n" +
			"  strata image pull --all-platforms busybox\n" +
			"  echo \"$TOKEN\" | strata image pull --creds ci registry.example.com/team/app:1",
		RunE: func(cmd *cobra.Command, args []string) error {
			named, err := reference.ParseNormalizedNamed(args[0])
			if err != nil {
				return err
			}
			if !quiet && reference.IsNameOnly(named) {
				fmt.Fprintln(c.Out, "Using default tag: latest")
			}
			named = reference.TagNameOnly(named)
			auth, err := creds.auth(c, named)
			if err != nil {
				return err
			}
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			// Docker says "up to date" when the reference already named
			// the image the pull ends with, whatever moved on the wire.
			before, err := imageIDOf(cmd.Context(), cl, reference.FamiliarString(named))
			if err != nil {
				return err
			}
			if !quiet {
				fmt.Fprintf(c.Out, "%s: Pulling from %s\n", tagOrDigest(named), reference.Path(named))
			}
			result, err := cl.Pull(cmd.Context(), reference.FamiliarString(named), client.PullOptions{
				Platform: platform, Auth: auth, Insecure: insecure, AllPlatforms: allPlatforms,
				OnProgress: showProgress(progress.New(c.Out, c.outIsTerminal(), progress.PullWords), !quiet),
			})
			if err != nil {
				return err
			}
			if !quiet {
				fmt.Fprintln(c.Out, "Digest:", result.GetManifestDigest())
				if before == result.GetImageId() {
					fmt.Fprintln(c.Out, "Status: Image is up to date for", reference.FamiliarString(named))
				} else {
					fmt.Fprintln(c.Out, "Status: Downloaded newer image for", reference.FamiliarString(named))
				}
			}
			fmt.Fprintln(c.Out, named.String())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&platform, "platform", os.Getenv("DOCKER_DEFAULT_PLATFORM"), "Set platform if server is multi-platform capable")
	f.BoolVarP(&quiet, "quiet", "q", false, "Suppress verbose output")
	f.BoolVar(&insecure, "insecure", false, "Use plain HTTP to reach the registry (always so for localhost)")
	f.BoolVar(&allPlatforms, "all-platforms", false, "Pull every platform of a multi-platform image and keep its index")
	creds.register(f)
	return cmd
}

func newPushCommand(c *CLI) *cobra.Command {
	var (
		quiet, insecure bool
		creds           registryCredentials
	)
	cmd := &cobra.Command{
		Use:   "push [OPTIONS] NAME[:TAG]",
		Short: "Upload an image to a registry",
		Args:  exactArgs(1),
		Example: "  strata image tag my-nginx localhost:5000/team/nginx:1.17\n" +
			"  strata image push localhost:5000/team/nginx:1.17",
		ValidArgsFunction: c.completeImageNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			named, err := reference.ParseNormalizedNamed(args[0])
			if err != nil {
				return err
			}
			if !quiet && reference.IsNameOnly(named) {
				fmt.Fprintln(c.Out, "Using default tag: latest")
			}
			named = reference.TagNameOnly(named)
			auth, err := creds.auth(c, named)
			if err != nil {
				return err
			}
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			if !quiet {
				fmt.Fprintf(c.Out, "The push refers to repository [%s]\n", named.Name())
			}
			result, err := cl.Push(cmd.Context(), reference.FamiliarString(named), client.PushOptions{
				Auth: auth, Insecure: insecure,
				OnProgress: showProgress(progress.New(c.Out, c.outIsTerminal(), progress.PushWords), !quiet),
			})
			if err != nil {
				return err
			}
			if quiet {
				fmt.Fprintln(c.Out, named.String())
				return nil
			}
			fmt.Fprintf(c.Out, "%s: digest: %s size: %d\n", tagOrDigest(named), result.GetManifestDigest(), result.GetManifestSize())
			return nil
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "Suppress verbose output")
	cmd.Flags().BoolVar(&insecure, "insecure", false, "Use plain HTTP to reach the registry (always so for localhost)")
	creds.register(cmd.Flags())
	return cmd
}

func tagOrDigest(named reference.Named) string {
	if d, ok := named.(reference.Digested); ok {
		return d.Digest().String()
	}
	if t, ok := named.(reference.Tagged); ok {
		return t.Tag()
	}
	return "latest"
}

// isTerminal reports whether a stream of the CLI is a terminal.
func isTerminal(stream any) bool {
	f, ok := stream.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (c *CLI) outIsTerminal() bool {
	if c.OutTerminal != nil {
		return *c.OutTerminal
	}
	return isTerminal(c.Out)
}

// imageIDOf returns the ID of the image ref names, or "" when none does.
func imageIDOf(ctx context.Context, cl *client.Client, ref string) (string, error) {
	img, err := cl.Image(ctx, ref)
	if errors.Is(err, client.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return img.GetId(), nil
}
