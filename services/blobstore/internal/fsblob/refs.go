package fsblob

import (
	"sync"

	"github.com/strata-build/strata/lib/errdefs"
)

// refLocks hands each upload ref to one writer at a time. They live in the
// process, which is enough for a backend that one process serves (see
// New); the S3 backend keeps its locks in the bucket. The zero value is
// ready to use.
type refLocks struct {
	mu   sync.Mutex
	held map[string]bool
}

// Lock takes ref, or fails with ErrUnavailable when another writer holds it:
// a client whose stream just broke may retry while the server lets go.
func (l *refLocks) Lock(ref string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[ref] {
		return errdefs.Unavailable("upload %q is in use by another writer", ref).WithReason("UPLOAD_LOCKED")
	}
	if l.held == nil {
		l.held = map[string]bool{}
	}
	l.held[ref] = true
	return nil
}

// Unlock lets go of ref.
func (l *refLocks) Unlock(ref string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.held, ref)
}
