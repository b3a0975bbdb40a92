package buildcontext

import (
	"errors"
	"io"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// entriesPerMessage keeps a context's file list messages well under the
// 16 MiB message limit.
const entriesPerMessage = 4096

// Stream is the client's side of a Build stream
// (builderv1.BuildService_BuildClient).
type Stream interface {
	Send(*builderv1.BuildRequest) error
	Recv() (*builderv1.BuildResponse, error)
	CloseSend() error
}

// Handler is told what happens during a build. Either func may be nil.
type Handler struct {
	// Event receives the build's events, a place in the queue among them.
	Event func(*builderv1.BuildEvent)
	// Sending tells, before the contents travel, how many bytes of file
	// contents go to the builder, out of the context's distinct contents
	// (unique) and all its files (total).
	Sending func(sending, unique, total int64)
}

func (h Handler) event(ev *builderv1.BuildEvent) {
	if h.Event != nil {
		h.Event(ev)
	}
}

// Sync runs the client half of the context-sync protocol on stream: it sends
// opts naming c's file list by digest, the list when the builder asks for it
// (a builder that saw it lately needs neither the list nor any content), and
// the contents the builder does not hold, then closes its side of the stream.
// opts.ContextDigest is set.
func (c *Context) Sync(stream Stream, opts *builderv1.BuildOptions, h Handler) error {
	opts.ContextDigest = c.ListDigest()
	if err := stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Options{Options: opts}}); err != nil {
		return recvErr(stream, err)
	}
	req, err := contextRequest(stream, h)
	if err != nil {
		return err
	}
	if req.GetSendEntries() {
		if err := c.sendEntries(stream); err != nil {
			return err
		}
		if req, err = contextRequest(stream, h); err != nil {
			return err
		}
	}
	if h.Sending != nil {
		h.Sending(c.Bytes(req.GetDigests()), c.UniqueBytes(), c.Size)
	}
	if _, err := c.Send(req.GetDigests(), func(fd *builderv1.FileData) error {
		return stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_FileData{FileData: fd}})
	}); err != nil {
		return recvErr(stream, err)
	}
	_ = stream.CloseSend()
	return nil
}

// sendEntries sends the file list, in messages of entriesPerMessage entries;
// an empty list is one message.
func (c *Context) sendEntries(stream Stream) error {
	for i := 0; i == 0 || i < len(c.Entries); i += entriesPerMessage {
		end := min(i+entriesPerMessage, len(c.Entries))
		msg := &builderv1.ContextEntries{Entries: c.Entries[i:end], Last: end == len(c.Entries)}
		if err := stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Entries{Entries: msg}}); err != nil {
			return recvErr(stream, err)
		}
	}
	return nil
}

// Result reads the rest of a synced build's stream, giving each event to
// h.Event, and returns the build's result.
func Result(stream Stream, h Handler) (*builderv1.BuildResult, error) {
	var result *builderv1.BuildResult
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if ev := resp.GetEvent(); ev != nil {
			h.event(ev)
		}
		if r := resp.GetResult(); r != nil {
			result = r
		}
	}
	if result == nil {
		return nil, errors.New("the builder ended the build without a result")
	}
	return result, nil
}

// contextRequest reads the builder's next request for context, giving the
// events (a place in the queue) that come before it to h.
func contextRequest(stream Stream, h Handler) (*builderv1.ContextRequest, error) {
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if req := resp.GetContextRequest(); req != nil {
			return req, nil
		}
		ev := resp.GetEvent()
		if ev == nil {
			return nil, errors.New("the builder did not ask for the context")
		}
		h.event(ev)
	}
}

// recvErr returns the server's error when a send failed because the server
// ended the stream.
func recvErr(stream Stream, sendErr error) error {
	if errors.Is(sendErr, io.EOF) {
		for {
			if _, err := stream.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return sendErr
				}
				return err
			}
		}
	}
	return sendErr
}
