package s3blob

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc/mem"

	"github.com/strata-build/strata/services/blobstore/internal/blob"
)

// openParallel reads a long range as consecutive ranged GETs of a part's
// size, Concurrency of them queued (and at most MaxParts of the store's in
// flight), delivered in order: one S3 stream is slower than the link, and
// this keeps memory at about Concurrency+1 parts. first, when not nil, is
// the GET Open already sent for the range's first bytes: it is read as the
// first part, beside the others, so that every byte of the range reaches
// the caller in a part's buffer (ReadBuffer). A blob deleted meanwhile
// fails the read (NOT_FOUND) at the next range; blobs never change, so the
// bytes read are always the blob's. ctx is the caller's to cancel, and
// first's GET's too: Close calls cancel, which stops every GET.
func (s *Store) openParallel(ctx context.Context, cancel context.CancelFunc, d digest.Digest, offset, n int64, first *rangeReader) io.ReadCloser {
	queue := make(chan chan fetched, s.cfg.Concurrency-1)
	r := &parallelReader{s: s, queue: queue, cancel: cancel}
	go func() {
		defer close(queue)
		for off, end := offset, offset+n; off < end; {
			size, rr := min(s.cfg.PartSize, end-off), first
			if rr != nil {
				size, first = rr.end-rr.off, nil
			}
			f := make(chan fetched, 1)
			select {
			case queue <- f:
			case <-ctx.Done():
				if rr != nil {
					rr.Close()
				}
				return
			}
			if err := s.mem.Acquire(ctx, 1); err != nil {
				if rr != nil {
					rr.Close()
				}
				f <- fetched{err: err}
				return
			}
			if rr == nil {
				rr = s.openRange(ctx, d, off, size)
			}
			go func() {
				got := s.fetch(rr, size)
				s.mem.Release(1)
				f <- got
			}()
			off += size
		}
	}()
	return r
}

// fetched is one range's bytes, or why there are none.
type fetched struct {
	buf []byte
	err error
}

// fetch reads the n bytes of r into a part's buffer, and closes r.
func (s *Store) fetch(r *rangeReader, n int64) fetched {
	defer r.Close()
	buf := s.getBuf(s.cfg.PartSize)[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		s.putBuf(buf)
		return fetched{err: err}
	}
	return fetched{buf: buf}
}

// rangeReader reads n bytes of a blob from offset through a GET, and when
// the stream breaks (a reset, a cut, a stall ended by the idle timeout)
// asks for the rest with a new GET, after a short wait: blobs never change,
// so the rest is the same bytes. It gives up, UNAVAILABLE, after
// MaxRetries breaks in a row without a byte read between them, and at
// once when the blob is gone or the caller's context ends.
type rangeReader struct {
	s      *Store
	cancel context.CancelFunc // of its GETs' context, when Close ends it
	d      digest.Digest
	get    func(offset, n int64) (io.ReadCloser, error)
	wait   func(time.Duration) error // sleeps unless the context ends
	off    int64                     // of the next byte
	end    int64
	body   io.ReadCloser
	breaks int // in a row, without progress
}

func (s *Store) openRange(ctx context.Context, d digest.Digest, offset, n int64) *rangeReader {
	return &rangeReader{
		s: s, d: d, off: offset, end: offset + n,
		get: func(offset, n int64) (io.ReadCloser, error) { return s.get(ctx, d, offset, n) },
		wait: func(dt time.Duration) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(dt):
				return nil
			}
		},
	}
}

// start sends the GET of what is left.
func (r *rangeReader) start() error {
	body, err := r.get(r.off, r.end-r.off)
	if err != nil {
		return err
	}
	r.body = body
	return nil
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.off == r.end {
		return 0, io.EOF
	}
	for {
		if r.body == nil {
			if err := r.start(); err != nil {
				return 0, err
			}
		}
		n, err := r.body.Read(p[:min(int64(len(p)), r.end-r.off)])
		r.off += int64(n)
		if n > 0 {
			r.breaks = 0
		}
		switch {
		case err == nil || r.off == r.end:
			return n, nil
		case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
			return n, err
		}
		// The stream broke (an early EOF too: the range is not all here).
		r.body.Close()
		r.body = nil
		if n > 0 {
			return n, nil
		}
		r.breaks++
		if r.breaks > r.s.cfg.MaxRetries {
			return 0, r.s.classify(err, "reading %s at %d", r.d, r.off)
		}
		if err := r.wait(time.Duration(r.breaks) * 100 * time.Millisecond); err != nil {
			return 0, err
		}
	}
}

func (r *rangeReader) Close() error {
	if r.cancel != nil {
		defer r.cancel()
	}
	if r.body != nil {
		return r.body.Close()
	}
	return nil
}

type parallelReader struct {
	s      *Store
	queue  chan chan fetched
	cancel context.CancelFunc
	part   mem.Buffer // what is left of the current range; nil when none
	err    error
}

var _ blob.BufferReader = (*parallelReader)(nil)

// next makes r.part the next bytes to read, reporting false, with r.err
// set, at the end or on failure.
func (r *parallelReader) next() bool {
	for r.part == nil || r.part.Len() == 0 {
		if r.err != nil {
			return false
		}
		if r.part != nil {
			r.part.Free()
			r.part = nil
		}
		f, ok := <-r.queue
		if !ok {
			r.err = io.EOF
			continue
		}
		got := <-f
		if got.err != nil {
			r.err = got.err
			continue
		}
		// The range's buffer goes back to the pool once every piece of it
		// handed out (ReadBuffer) and this reader's reference are freed.
		r.part = mem.NewBuffer(&got.buf, partPool{r.s})
	}
	return true
}

// skip drops the first n bytes of r.part.
func (r *parallelReader) skip(n int) {
	rest := r.part.Slice(n, r.part.Len())
	r.part.Free()
	r.part = rest
}

func (r *parallelReader) Read(p []byte) (int, error) {
	if !r.next() {
		return 0, r.err
	}
	n := copy(p, r.part.ReadOnlyData())
	r.skip(n)
	return n, nil
}

// ReadBuffer implements blob.BufferReader: the next at most n bytes, in
// the buffer the ranged GET filled, so that the blob store's Read sends
// them without copying them first.
func (r *parallelReader) ReadBuffer(n int) (mem.Buffer, error) {
	if !r.next() {
		return nil, r.err
	}
	n = min(n, r.part.Len())
	b := r.part.Slice(0, n)
	r.skip(n)
	return b, nil
}

// Close stops the fetches; their buffers, and the current one, go to the
// garbage collector (a Read or ReadBuffer may still be running).
func (r *parallelReader) Close() error {
	r.cancel()
	return nil
}

// partPool hands a range's buffer back to the store's pool of parts, as
// the mem.BufferPool of mem.NewBuffer, which only puts buffers back: they
// come from fetch.
type partPool struct{ s *Store }

func (p partPool) Get(n int) *[]byte {
	b := make([]byte, n)
	return &b
}

func (p partPool) Put(b *[]byte) { p.s.putBuf(*b) }
