package s3blob

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
)

// openParallel reads a long range as consecutive ranged GETs of a part's
// size, Concurrency of them queued (and at most MaxParts of the store's in
// flight), delivered in order: one S3 stream is slower than the link, and
// this keeps memory at about Concurrency+1 parts. A blob deleted meanwhile fails the read (NOT_FOUND) at the next
// range; blobs never change, so the bytes read are always the blob's.
func (s *Store) openParallel(ctx context.Context, d digest.Digest, offset, n int64) io.ReadCloser {
	ctx, cancel := context.WithCancel(ctx)
	queue := make(chan chan fetched, s.cfg.Concurrency-1)
	r := &parallelReader{s: s, queue: queue, cancel: cancel}
	go func() {
		defer close(queue)
		for off, end := offset, offset+n; off < end; off += s.cfg.PartSize {
			f := make(chan fetched, 1)
			select {
			case queue <- f:
			case <-ctx.Done():
				return
			}
			if err := s.mem.Acquire(ctx, 1); err != nil {
				f <- fetched{err: err}
				return
			}
			go func() {
				got := s.fetch(ctx, d, off, min(s.cfg.PartSize, end-off))
				s.mem.Release(1)
				f <- got
			}()
		}
	}()
	return r
}

// fetched is one range's bytes, or why there are none.
type fetched struct {
	buf []byte
	err error
}

func (s *Store) fetch(ctx context.Context, d digest.Digest, offset, n int64) fetched {
	body, err := s.get(ctx, d, offset, n)
	if err != nil {
		return fetched{err: err}
	}
	defer body.Close()
	buf := s.getBuf(s.cfg.PartSize)[:n]
	if _, err := io.ReadFull(body, buf); err != nil {
		s.putBuf(buf)
		return fetched{err: s.classify(err, "reading %s at %d", d, offset)}
	}
	return fetched{buf: buf}
}

type parallelReader struct {
	s      *Store
	queue  chan chan fetched
	cancel context.CancelFunc
	cur    []byte // what is left of the current range
	buf    []byte // the current range's buffer, for the pool
	err    error
}

func (r *parallelReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.buf != nil {
			r.s.putBuf(r.buf)
			r.buf = nil
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
		r.buf, r.cur = got.buf, got.buf
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Close stops the fetches; their buffers go to the garbage collector.
func (r *parallelReader) Close() error {
	r.cancel()
	return nil
}
