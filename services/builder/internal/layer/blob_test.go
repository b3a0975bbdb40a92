package layer

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	digest "github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
)

// memBlob is a BlobWriter over memory that checks what Commit is told, as the
// blob store does.
type memBlob struct {
	buf       bytes.Buffer
	committed bool
	closed    bool
	exists    bool  // Commit reports ErrAlreadyExists
	failAfter int64 // Write fails once this many bytes were written (when > 0)
}

func (m *memBlob) Write(p []byte) (int, error) {
	if m.failAfter > 0 && int64(m.buf.Len()+len(p)) > m.failAfter {
		return 0, errors.New("blob store went away")
	}
	return m.buf.Write(p)
}

func (m *memBlob) Commit(_ context.Context, size int64, expected digest.Digest) error {
	if m.closed {
		return errors.New("commit after close")
	}
	if size != int64(m.buf.Len()) {
		return fmt.Errorf("commit size %d, wrote %d", size, m.buf.Len())
	}
	if got := digest.FromBytes(m.buf.Bytes()); got != expected {
		return fmt.Errorf("commit digest %s, wrote %s", expected, got)
	}
	if m.exists {
		return errdefs.AlreadyExists("blob %s", expected)
	}
	m.committed = true
	return nil
}

func (m *memBlob) Close() error {
	m.closed = true
	return nil
}

// discardBlob is a BlobWriter that keeps nothing, for benchmarks.
type discardBlob struct{}

func (discardBlob) Write(p []byte) (int, error)                        { return len(p), nil }
func (discardBlob) Commit(context.Context, int64, digest.Digest) error { return nil }
func (discardBlob) Close() error                                       { return nil }
