package blob

import (
	"sync"

	"github.com/strata-build/strata/lib/errdefs"
)

// RefLocks hands each upload ref to one writer at a time within a process.
// The zero value is ready to use.
type RefLocks struct {
	mu   sync.Mutex
	held map[string]bool
}

// Lock takes ref, or fails with ErrUnavailable when another writer holds it:
// a client whose stream just broke may retry while the server lets go.
func (l *RefLocks) Lock(ref string) error {
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
func (l *RefLocks) Unlock(ref string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.held, ref)
}

// Held reports whether a writer holds ref now.
func (l *RefLocks) Held(ref string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held[ref]
}
