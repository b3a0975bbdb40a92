package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// The messages of images in and out.
type (
	TransferProgress = builderv1.TransferProgress
	ImportResult     = builderv1.ImportResult
	LoadResult       = builderv1.LoadResult
	PullResult       = builderv1.PullResult
	PulledPlatform   = builderv1.PulledPlatform
	PushResult       = builderv1.PushResult
	RegistryAuth     = builderv1.RegistryAuth
	SaveFormat       = builderv1.SaveFormat
)

// The archive formats of Save.
const (
	SaveDocker = builderv1.SaveFormat_SAVE_FORMAT_DOCKER // a docker-archive, as docker save writes
	SaveOCI    = builderv1.SaveFormat_SAVE_FORMAT_OCI    // an OCI image layout in a tar
)

// chunkSize is how many bytes of a tarball or archive one message carries,
// well under the 16 MiB message limit.
const chunkSize = 1 << 20

// ImportOptions are docker import's options.
type ImportOptions struct {
	// Reference names the image ("busybox:latest"); none when empty.
	Reference string
	// Changes are Dockerfile instructions applied to the config (--change).
	Changes []string
	// Message is the history's comment.
	Message string
	// Platform is "os/arch[/variant]".
	Platform string
	// OnProgress, when set, receives the transfer's progress.
	OnProgress func(*TransferProgress)
}

// Import makes an image of a root filesystem tarball (plain or compressed),
// as docker import.
func (c *Client) Import(ctx context.Context, tarball io.Reader, opts ImportOptions) (*ImportResult, error) {
	builder, err := c.builder()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := builder.Import(ctx)
	if err != nil {
		return nil, err
	}
	first := &builderv1.ImportRequest{Request: &builderv1.ImportRequest_Options{Options: &builderv1.ImportOptions{
		Reference: opts.Reference, Changes: opts.Changes, Message: opts.Message, Platform: opts.Platform,
	}}}
	var result *ImportResult
	err = upload(stream, first, tarball,
		func(b []byte) *builderv1.ImportRequest {
			return &builderv1.ImportRequest{Request: &builderv1.ImportRequest_Data{Data: b}}
		},
		func() (err error) {
			result, err = receiveProgress[builderv1.ImportResult](stream.Recv, opts.OnProgress)
			return err
		})
	return needResult(result, err, "import")
}

// LoadOptions are docker load's options.
type LoadOptions struct {
	// Quiet asks the builder for no progress.
	Quiet bool
	// OnProgress, when set, receives the transfer's progress.
	OnProgress func(*TransferProgress)
}

// Load loads the images of a docker-archive or an OCI layout tar, as
// docker load.
func (c *Client) Load(ctx context.Context, archive io.Reader, opts LoadOptions) (*LoadResult, error) {
	builder, err := c.builder()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := builder.Load(ctx)
	if err != nil {
		return nil, err
	}
	first := &builderv1.LoadRequest{Request: &builderv1.LoadRequest_Options{Options: &builderv1.LoadOptions{Quiet: opts.Quiet}}}
	var result *LoadResult
	err = upload(stream, first, archive,
		func(b []byte) *builderv1.LoadRequest {
			return &builderv1.LoadRequest{Request: &builderv1.LoadRequest_Data{Data: b}}
		},
		func() (err error) {
			result, err = receiveProgress[builderv1.LoadResult](stream.Recv, opts.OnProgress)
			return err
		})
	return needResult(result, err, "load")
}

// Save writes the images refs name to w as one archive, as docker save.
// A failure can leave part of the archive written: write to a temporary
// file when that matters.
func (c *Client) Save(ctx context.Context, w io.Writer, refs []string, format SaveFormat) error {
	builder, err := c.builder()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := builder.Save(ctx, &builderv1.SaveRequest{References: refs, Format: format})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(resp.GetData()); err != nil {
			return err
		}
	}
}

// PullOptions are docker pull's options.
type PullOptions struct {
	// Platform picks an image of a multi-platform index ("linux/arm64").
	Platform string
	// Auth are the registry's credentials; anonymous when nil.
	Auth *RegistryAuth
	// Insecure uses plain HTTP (always so for localhost).
	Insecure bool
	// AllPlatforms keeps a multi-platform index whole, as docker pull
	// --all-platforms: every image it lists is pulled and recorded, and the
	// index itself is recorded in the repository (served as pulled by
	// strata-registry). Platform then picks the image the result names.
	AllPlatforms bool
	// OnProgress, when set, receives the transfer's progress.
	OnProgress func(*TransferProgress)
}

// Pull pulls ref from its registry into the blob store and tags it.
func (c *Client) Pull(ctx context.Context, ref string, opts PullOptions) (*PullResult, error) {
	builder, err := c.builder()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := builder.Pull(ctx, &builderv1.PullRequest{
		Reference: ref, Platform: opts.Platform, Auth: opts.Auth, Insecure: opts.Insecure, AllPlatforms: opts.AllPlatforms,
	})
	if err != nil {
		return nil, err
	}
	result, err := receiveProgress[builderv1.PullResult](stream.Recv, opts.OnProgress)
	return needResult(result, err, "pull")
}

// PushOptions are docker push's options.
type PushOptions struct {
	// Auth are the registry's credentials; anonymous when nil.
	Auth *RegistryAuth
	// Insecure uses plain HTTP (always so for localhost).
	Insecure bool
	// OnProgress, when set, receives the transfer's progress.
	OnProgress func(*TransferProgress)
}

// Push pushes the image ref names to the registry ref names
// ("localhost:5000/team/app:1").
func (c *Client) Push(ctx context.Context, ref string, opts PushOptions) (*PushResult, error) {
	builder, err := c.builder()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := builder.Push(ctx, &builderv1.PushRequest{Reference: ref, Auth: opts.Auth, Insecure: opts.Insecure})
	if err != nil {
		return nil, err
	}
	result, err := receiveProgress[builderv1.PushResult](stream.Recv, opts.OnProgress)
	return needResult(result, err, "push")
}

// upload runs a client-streaming transfer: first, then src in chunks, sent
// while receive reads the server's answers until the server ends the
// stream, so that neither side blocks the other.
func upload[Req, Resp any](stream grpc.BidiStreamingClient[Req, Resp], first *Req, src io.Reader, chunk func([]byte) *Req, receive func() error) error {
	sendErr := make(chan error, 1)
	go func() {
		sendErr <- func() error {
			if err := stream.Send(first); err != nil {
				return err
			}
			buf := make([]byte, chunkSize)
			for {
				n, err := io.ReadFull(src, buf)
				if n > 0 {
					if err := stream.Send(chunk(append([]byte(nil), buf[:n]...))); err != nil {
						return err
					}
				}
				if err == io.EOF || err == io.ErrUnexpectedEOF {
					return stream.CloseSend()
				}
				if err != nil {
					return readError{err}
				}
			}
		}()
	}()
	if err := receive(); err != nil {
		return err
	}
	// A send that failed because the server ended the stream reports
	// io.EOF; the server's error, if any, came from Recv.
	if err := <-sendErr; err != nil && err != io.EOF {
		var re readError
		if errors.As(err, &re) {
			return re.err
		}
		return err
	}
	return nil
}

// progressResponse is a response of Import, Load, Pull or Push: progress,
// or the result R.
type progressResponse[R any] interface {
	GetProgress() *builderv1.TransferProgress
	GetResult() *R
}

// receiveProgress reads a transfer's responses until the server ends the
// stream, handing progress to show (when set), and returns the result, nil
// when none came.
func receiveProgress[R any, M progressResponse[R]](recv func() (M, error), show func(*builderv1.TransferProgress)) (*R, error) {
	var result *R
	for {
		resp, err := recv()
		if err == io.EOF {
			return result, nil
		}
		if err != nil {
			return nil, err
		}
		if p := resp.GetProgress(); p != nil && show != nil {
			show(p)
		}
		if r := resp.GetResult(); r != nil {
			result = r
		}
	}
}

// needResult returns result, or err, or an error when a transfer that
// succeeded ended without a result.
func needResult[R any](result *R, err error, op string) (*R, error) {
	if err != nil {
		return nil, err
	}
	if result == nil {
		return nil, fmt.Errorf("the builder ended the %s %w", op, errNoResult)
	}
	return result, nil
}

// readError is a failure reading the local input, not the stream's.
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }
