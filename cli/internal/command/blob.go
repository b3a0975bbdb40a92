package command

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/docker/go-units"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/errdefs"
)

// newBlobCommand returns `strata blob`, an operator's tool over the blob
// store's API.
func newBlobCommand(c *CLI) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "blob",
		Short: "Manage the blob store's content-addressed blobs",
		Args:  noArgs,
		Example: "  strata blob put layer.tar.gz\n" +
			"  strata blob get sha256:… > layer.tar.gz\n" +
			"  strata blob ls",
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newBlobPutCommand(c), newBlobGetCommand(c), newBlobStatCommand(c), newBlobListCommand(c), newBlobRemoveCommand(c),
		newBlobVerifyCommand(c))
	return cmd
}

// blobs returns a client of the blob store.
func (c *CLI) blobs(ctx context.Context) (*blobclient.Client, error) {
	cl, err := c.client(ctx)
	if err != nil {
		return nil, err
	}
	return cl.Blobs()
}

func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", errdefs.InvalidArgument("invalid digest %q: %v (want sha256:<64 lower-case hex digits>)", s, err)
	}
	return d, nil
}

func newBlobPutCommand(c *CLI) *cobra.Command {
	var expected, mediaType string
	cmd := &cobra.Command{
		Use:   "put [OPTIONS] FILE|-",
		Short: "Store a file (or standard input) as a blob and print its digest",
		Args:  exactArgs(1),
		Example: "  strata blob put layer.tar.gz\n" +
			"  strata blob put --digest sha256:… layer.tar.gz\n" +
			"  tar -c dir | strata blob put -",
		RunE: func(cmd *cobra.Command, args []string) error {
			var want digest.Digest
			if expected != "" {
				d, err := parseDigest(expected)
				if err != nil {
					return err
				}
				want = d
			}
			bc, err := c.blobs(cmd.Context())
			if err != nil {
				return err
			}
			opts := []blobclient.WriterOption{blobclient.WithMediaType(mediaType)}
			ctx := cmd.Context()
			var info blobclient.Info
			if args[0] == "-" {
				// Standard input is read once: stream it, and let the server
				// check it against --digest at commit.
				w, err := bc.NewWriter(ctx, "", blobclient.SizeUnknown, opts...)
				if err != nil {
					return err
				}
				defer w.Close()
				if _, err := io.Copy(w, c.In); err != nil {
					return err
				}
				if want == "" {
					info, err = w.Commit(ctx)
				} else {
					info, err = w.CommitDigest(ctx, want)
				}
				if err != nil {
					return err
				}
			} else {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				// A file is hashed here first: a wrong --digest fails before
				// anything is sent, and a stored blob is not sent again.
				h := sha256.New()
				n, err := io.Copy(h, f)
				if err != nil {
					return fmt.Errorf("reading %s: %w", args[0], err)
				}
				actual := digest.NewDigest(digest.SHA256, h)
				if want != "" && want != actual {
					return errdefs.InvalidArgument("digest mismatch: expected %s, got %s (%s)", want, actual, args[0])
				}
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					return err
				}
				if info, err = bc.Put(ctx, f, actual, n, opts...); err != nil {
					return err
				}
			}
			fmt.Fprintln(c.Out, info.Digest)
			return nil
		},
	}
	cmd.Flags().StringVar(&expected, "digest", "", "the digest the content must have; a mismatch stores nothing")
	cmd.Flags().StringVar(&mediaType, "media-type", "", "media type, kept as a hint for the storage")
	return cmd
}

func newBlobGetCommand(c *CLI) *cobra.Command {
	var output string
	var offset, length int64
	cmd := &cobra.Command{
		Use:   "get [OPTIONS] DIGEST",
		Short: "Write a blob, or a range of it, to standard output or a file",
		Args:  exactArgs(1),
		Example: "  strata blob get sha256:… > layer.tar.gz\n" +
			"  strata blob get -o layer.tar.gz sha256:…\n" +
			"  strata blob get --offset 100 --length 10 sha256:…",
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDigest(args[0])
			if err != nil {
				return err
			}
			bc, err := c.blobs(cmd.Context())
			if err != nil {
				return err
			}
			r, err := bc.Open(cmd.Context(), d, offset, length)
			if err != nil {
				return err
			}
			defer r.Close()
			out := c.Out
			var tmp *os.File
			if output != "" && output != "-" {
				// Into a temporary file renamed at the end, so that a failed
				// read leaves no partial file under the name asked for.
				if tmp, err = os.CreateTemp(filepath.Dir(output), "."+filepath.Base(output)+".*"); err != nil {
					return err
				}
				defer os.Remove(tmp.Name())
				defer tmp.Close()
				out = tmp
			}
			h := sha256.New()
			if _, err := r.WriteTo(io.MultiWriter(out, h)); err != nil {
				return err
			}
			if offset == 0 && length == 0 {
				if got := digest.NewDigest(digest.SHA256, h); got != d {
					return errdefs.Internal("digest mismatch: read %s, got %s", d, got)
				}
			}
			if tmp != nil {
				if err := tmp.Close(); err != nil {
					return err
				}
				return os.Rename(tmp.Name(), output)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to this file instead of standard output")
	cmd.Flags().Int64Var(&offset, "offset", 0, "first byte to write")
	cmd.Flags().Int64Var(&length, "length", 0, "bytes to write (0: up to the end)")
	return cmd
}

func newBlobStatCommand(c *CLI) *cobra.Command {
	return &cobra.Command{
		Use:     "stat DIGEST [DIGEST...]",
		Short:   "Show the size and creation time of blobs",
		Args:    minArgs(1),
		Example: "  strata blob stat sha256:…",
		RunE: func(cmd *cobra.Command, args []string) error {
			bc, err := c.blobs(cmd.Context())
			if err != nil {
				return err
			}
			var infos []blobclient.Info
			for _, a := range args {
				d, err := parseDigest(a)
				if err != nil {
					return err
				}
				info, err := bc.Stat(cmd.Context(), d)
				if err != nil {
					return err
				}
				infos = append(infos, info)
			}
			return printBlobs(c.Out, infos, false)
		},
	}
}

func newBlobListCommand(c *CLI) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List the stored blobs in digest order",
		Args:    noArgs,
		Example: "  strata blob ls\n  strata blob ls -q",
		RunE: func(cmd *cobra.Command, _ []string) error {
			bc, err := c.blobs(cmd.Context())
			if err != nil {
				return err
			}
			var infos []blobclient.Info
			for info, err := range bc.All(cmd.Context()) {
				if err != nil {
					return err
				}
				infos = append(infos, info)
			}
			return printBlobs(c.Out, infos, quiet)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only print digests")
	return cmd
}

func newBlobRemoveCommand(c *CLI) *cobra.Command {
	return &cobra.Command{
		Use:     "rm DIGEST [DIGEST...]",
		Aliases: []string{"remove"},
		Short:   "Remove blobs (the store does not check whether images still need them)",
		Args:    minArgs(1),
		Example: "  strata blob rm sha256:…",
		RunE: func(cmd *cobra.Command, args []string) error {
			bc, err := c.blobs(cmd.Context())
			if err != nil {
				return err
			}
			for _, a := range args {
				d, err := parseDigest(a)
				if err != nil {
					return err
				}
				if err := bc.Delete(cmd.Context(), d); err != nil {
					return err
				}
				fmt.Fprintln(c.Out, d)
			}
			return nil
		},
	}
}

func newBlobVerifyCommand(c *CLI) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "verify [OPTIONS] [DIGEST...]",
		Short: "Check that stored blobs still hash to their digests (every blob when none is named)",
		Long: "Has the blob store re-read blobs and check their bytes against their digests, and\n" +
			"lists each blob that is damaged or missing. Without digests it scrubs every stored\n" +
			"blob. Exits 1 when any blob named or stored is damaged or missing.",
		Example: "  strata blob verify\n  strata blob verify sha256:…\n  strata blob verify -q   # damaged digests only",
		RunE: func(cmd *cobra.Command, args []string) error {
			ds := make([]digest.Digest, len(args))
			for i, a := range args {
				d, err := parseDigest(a)
				if err != nil {
					return err
				}
				ds[i] = d
			}
			bc, err := c.blobs(cmd.Context())
			if err != nil {
				return err
			}
			var checked, bad int
			var bytes int64
			for r, err := range bc.Verify(cmd.Context(), ds) {
				if err != nil {
					return err
				}
				checked++
				bytes += r.Size
				var what string
				switch r.State {
				case blobv1.BlobState_BLOB_STATE_INTACT:
					continue
				case blobv1.BlobState_BLOB_STATE_MISSING:
					what = "missing"
				default:
					what = "damaged: " + r.Problem
				}
				bad++
				// The digests are what the metadata service needs to name
				// the images that use these blobs.
				if quiet {
					fmt.Fprintln(c.Out, r.Digest)
				} else {
					fmt.Fprintf(c.Out, "%s\t%s\n", r.Digest, what)
				}
			}
			if !quiet {
				fmt.Fprintf(c.Out, "%d blobs checked (%s), %d damaged or missing\n", checked, units.HumanSizeWithPrecision(float64(bytes), 3), bad)
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d blobs are damaged or missing", bad, checked)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only print the digests of damaged or missing blobs")
	return cmd
}

// printBlobs writes a table of blobs: digest, size in bytes and as people
// read it, and age.
func printBlobs(out io.Writer, infos []blobclient.Info, quiet bool) error {
	if quiet {
		for _, i := range infos {
			fmt.Fprintln(out, i.Digest)
		}
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	fmt.Fprintln(w, "DIGEST\tSIZE\tBYTES\tCREATED")
	for _, i := range infos {
		fmt.Fprintf(w, "%s\t%s\t%d\t%s ago\n", i.Digest, units.HumanSizeWithPrecision(float64(i.Size), 3), i.Size,
			units.HumanDuration(time.Since(i.CreatedAt)))
	}
	return w.Flush()
}
