package server

import (
	"bufio"
	"context"
	"io"
	"sync"

	"google.golang.org/grpc"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/archive"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// Import turns the streamed tarball into an image.
func (s *Server) Import(stream grpc.BidiStreamingServer[builderv1.ImportRequest, builderv1.ImportResponse]) error {
	svc := s.archives
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil {
		return errdefs.InvalidArgument("import: the first message must carry the options")
	}
	send := lockedSend(func(u transfer.Update) error {
		return stream.Send(&builderv1.ImportResponse{Response: &builderv1.ImportResponse_Progress{Progress: progressProto(u)}})
	})
	data := &recvReader{recv: dataOf[builderv1.ImportOptions]("import", stream.Recv)}
	res, err := svc.Import(stream.Context(), data, archive.ImportOptions{
		Reference: opts.GetReference(),
		Changes:   opts.GetChanges(),
		Message:   opts.GetMessage(),
		Platform:  opts.GetPlatform(),
	}, send.progress)
	if err != nil {
		return err
	}
	return send.do(func() error {
		return stream.Send(&builderv1.ImportResponse{Response: &builderv1.ImportResponse_Result{Result: &builderv1.ImportResult{
			ImageId:   res.ImageID.String(),
			Reference: res.Reference,
		}}})
	})
}

// Load records the images of the streamed archive.
func (s *Server) Load(stream grpc.BidiStreamingServer[builderv1.LoadRequest, builderv1.LoadResponse]) error {
	svc := s.archives
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	var quiet bool
	var pending []byte
	switch {
	case first.GetOptions() != nil:
		quiet = first.GetOptions().GetQuiet()
	default:
		pending = first.GetData()
	}
	send := lockedSend(func(u transfer.Update) error {
		return stream.Send(&builderv1.LoadResponse{Response: &builderv1.LoadResponse_Progress{Progress: progressProto(u)}})
	})
	progress := send.progress
	if quiet {
		progress = nil
	}
	data := &recvReader{buf: pending, recv: dataOf[builderv1.LoadOptions]("load", stream.Recv)}
	loaded, err := svc.Load(stream.Context(), data, progress)
	if err != nil {
		return err
	}
	res := &builderv1.LoadResult{}
	for _, l := range loaded {
		res.Images = append(res.Images, &builderv1.LoadedImage{ImageId: l.ImageID.String(), Tags: l.Tags})
	}
	return send.do(func() error {
		return stream.Send(&builderv1.LoadResponse{Response: &builderv1.LoadResponse_Result{Result: res}})
	})
}

// saveChunk is the size of the archive pieces Save sends.
const saveChunk = 1 << 20

// Save streams an archive of the named images.
func (s *Server) Save(req *builderv1.SaveRequest, stream grpc.ServerStreamingServer[builderv1.SaveResponse]) error {
	svc := s.archives
	format := archive.FormatDocker
	if req.GetFormat() == builderv1.SaveFormat_SAVE_FORMAT_OCI {
		format = archive.FormatOCI
	}
	w := bufio.NewWriterSize(sendWriter(func(p []byte) error {
		return stream.Send(&builderv1.SaveResponse{Data: p})
	}), saveChunk)
	if err := svc.Save(stream.Context(), req.GetReferences(), format, w); err != nil {
		return err
	}
	return w.Flush()
}

// Pull fetches an image from a registry.
func (s *Server) Pull(req *builderv1.PullRequest, stream grpc.ServerStreamingServer[builderv1.PullResponse]) error {
	svc := s.transfers
	send := lockedSend(func(u transfer.Update) error {
		return stream.Send(&builderv1.PullResponse{Response: &builderv1.PullResponse_Progress{Progress: progressProto(u)}})
	})
	res, err := svc.Pull(stream.Context(), req.GetReference(), transfer.PullOptions{
		Platform:     req.GetPlatform(),
		Auth:         authOf(req.GetAuth()),
		Insecure:     req.GetInsecure(),
		AllPlatforms: req.GetAllPlatforms(),
	}, send.progress)
	if err != nil {
		return err
	}
	result := &builderv1.PullResult{
		ImageId:        res.ImageID.String(),
		Reference:      res.Reference,
		ManifestDigest: res.ManifestDigest.String(),
		BytesFetched:   res.BytesFetched,
	}
	for _, p := range res.Platforms {
		result.Platforms = append(result.Platforms, &builderv1.PulledPlatform{
			Platform: p.Platform, ImageId: p.ImageID.String(), ManifestDigest: p.ManifestDigest.String(),
		})
	}
	return send.do(func() error {
		return stream.Send(&builderv1.PullResponse{Response: &builderv1.PullResponse_Result{Result: result}})
	})
}

// Push sends an image to a registry.
func (s *Server) Push(req *builderv1.PushRequest, stream grpc.ServerStreamingServer[builderv1.PushResponse]) error {
	svc := s.transfers
	send := lockedSend(func(u transfer.Update) error {
		return stream.Send(&builderv1.PushResponse{Response: &builderv1.PushResponse_Progress{Progress: progressProto(u)}})
	})
	res, err := svc.Push(stream.Context(), req.GetReference(), transfer.PushOptions{
		Auth:     authOf(req.GetAuth()),
		Insecure: req.GetInsecure(),
	}, send.progress)
	if err != nil {
		return err
	}
	return send.do(func() error {
		return stream.Send(&builderv1.PushResponse{Response: &builderv1.PushResponse_Result{Result: &builderv1.PushResult{
			Reference:      res.Reference,
			ManifestDigest: res.ManifestDigest.String(),
			ManifestSize:   res.ManifestSize,
			BytesSent:      res.BytesSent,
		}}})
	})
}

func authOf(a *builderv1.RegistryAuth) transfer.Auth {
	return transfer.Auth{
		Username:      a.GetUsername(),
		Password:      a.GetPassword(),
		IdentityToken: a.GetIdentityToken(),
		RegistryToken: a.GetRegistryToken(),
	}
}

var actions = map[transfer.Action]builderv1.TransferAction{
	transfer.ActionWaiting:     builderv1.TransferAction_TRANSFER_ACTION_WAITING,
	transfer.ActionDownloading: builderv1.TransferAction_TRANSFER_ACTION_DOWNLOADING,
	transfer.ActionUploading:   builderv1.TransferAction_TRANSFER_ACTION_UPLOADING,
	transfer.ActionVerifying:   builderv1.TransferAction_TRANSFER_ACTION_VERIFYING,
	transfer.ActionExists:      builderv1.TransferAction_TRANSFER_ACTION_EXISTS,
	transfer.ActionMounted:     builderv1.TransferAction_TRANSFER_ACTION_MOUNTED,
	transfer.ActionDone:        builderv1.TransferAction_TRANSFER_ACTION_DONE,
	transfer.ActionRetrying:    builderv1.TransferAction_TRANSFER_ACTION_RETRYING,
}

func progressProto(u transfer.Update) *builderv1.TransferProgress {
	return &builderv1.TransferProgress{Id: u.ID, Action: actions[u.Action], Current: u.Current, Total: u.Total, Message: u.Message}
}

// sender serializes the sends of a stream: progress comes from several
// goroutines, and a gRPC stream takes one sender at a time. Once a send
// fails, progress is dropped (the call is ending anyway).
type sender struct {
	mu     sync.Mutex
	send   func(transfer.Update) error
	failed bool
}

func lockedSend(send func(transfer.Update) error) *sender { return &sender{send: send} }

func (s *sender) progress(u transfer.Update) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.failed && s.send(u) != nil {
		s.failed = true
	}
}

func (s *sender) do(f func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return f()
}

// dataMessage is a client message of Import or Load: options first, then
// data.
type dataMessage[O any] interface {
	GetOptions() *O
	GetData() []byte
}

// dataOf returns the data of the messages recv receives, refusing options
// after the first message.
func dataOf[O any, M dataMessage[O]](rpc string, recv func() (M, error)) func() ([]byte, error) {
	return func() ([]byte, error) {
		m, err := recv()
		if err != nil {
			return nil, err
		}
		if m.GetOptions() != nil {
			return nil, errdefs.InvalidArgument("%s: options may only be sent first", rpc)
		}
		return m.GetData(), nil
	}
}

// recvReader reads the data messages of a client stream as one byte stream;
// the client closing its side is the end.
type recvReader struct {
	buf  []byte
	recv func() ([]byte, error)
	err  error
}

func (r *recvReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		b, err := r.recv()
		if err != nil {
			r.err = err
			if err != io.EOF && !isContextErr(err) {
				r.err = errdefs.Unavailable("receiving the stream: %v", err)
			}
			return 0, r.err
		}
		r.buf = b
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func isContextErr(err error) bool {
	return err == context.Canceled || err == context.DeadlineExceeded
}

// sendWriter sends writes as messages of at most saveChunk bytes (gRPC
// copies a message when it is sent, so p may be reused afterwards).
type sendWriter func(p []byte) error

func (w sendWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), saveChunk)
		if err := w(p[:c]); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}
