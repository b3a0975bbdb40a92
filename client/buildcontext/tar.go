package buildcontext

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// tarChunk is the size of the context_tar messages SendTar sends.
const tarChunk = 1 << 20

// SendTar runs the client's half of a build whose context is a tar stream
// (plain or compressed), as `docker build - < context.tar` sends it: it
// sends opts with ContextTar set, then r's bytes in context_tar messages,
// then an empty one that ends them. The builder asks for nothing; read
// the events and the result with Result.
func SendTar(stream Stream, opts *builderv1.BuildOptions, r io.Reader) error {
	opts.ContextTar = true
	if err := stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Options{Options: opts}}); err != nil {
		return sendError(stream, err)
	}
	buf := make([]byte, tarChunk)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			chunk := bytes.Clone(buf[:n])
			if serr := stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_ContextTar{ContextTar: chunk}}); serr != nil {
				return sendError(stream, serr)
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if err := stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_ContextTar{}}); err != nil {
		return sendError(stream, err)
	}
	return stream.CloseSend()
}

// sendError is the error a failed send stands for: the builder's, which
// ended the stream (a send only says the stream is gone).
func sendError(stream Stream, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		if _, rerr := stream.Recv(); rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return err
			}
			return rerr
		}
	}
}

// IsTar reports whether the stream br starts with looks like a tar archive,
// plain or compressed, rather than a Dockerfile: `docker build - <
// Dockerfile` builds without a context. It only peeks.
func IsTar(br *bufio.Reader) bool {
	head, _ := br.Peek(512)
	for _, magic := range [][]byte{{0x1f, 0x8b}, {0x28, 0xb5, 0x2f, 0xfd}, []byte("BZh"), {0xfd, '7', 'z', 'X', 'Z', 0}} {
		if bytes.HasPrefix(head, magic) {
			return true
		}
	}
	return len(head) >= 262 && bytes.HasPrefix(head[257:], []byte("ustar"))
}
