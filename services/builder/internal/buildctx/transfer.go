package buildctx

import (
	"context"
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"
)

// transfer is a context transfer running alongside its build: the build
// waits for the contents it needs (the Dockerfile first, COPY sources
// later) while the rest streams in.
type transfer struct {
	done     chan struct{} // closed when the transfer ended
	received int64         // set before done is closed
	fail     error         // set before done is closed

	mu      sync.Mutex
	waiting map[digest.Digest]chan struct{} // closed when the digest is in
}

// newTransfer returns a transfer of missing whose contents of first can be
// waited for one by one.
func newTransfer(missing, first []digest.Digest) *transfer {
	t := &transfer{done: make(chan struct{}), waiting: map[digest.Digest]chan struct{}{}}
	for _, d := range first {
		if d != "" && slices.Contains(missing, d) {
			t.waiting[d] = make(chan struct{})
		}
	}
	return t
}

func (t *transfer) committed(d digest.Digest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ch, ok := t.waiting[d]; ok {
		close(ch)
		delete(t.waiting, d)
	}
}

func (t *transfer) finish(received int64, err error) {
	t.received, t.fail = received, err
	close(t.done)
}

// err is the transfer's error once it ended, nil before.
func (t *transfer) err() error {
	select {
	case <-t.done:
		return t.fail
	default:
		return nil
	}
}

// wait waits until the contents of ds are in (those not asked for are in
// already).
func (t *transfer) wait(ctx context.Context, ds []digest.Digest) error {
	for _, d := range ds {
		t.mu.Lock()
		ch, ok := t.waiting[d]
		t.mu.Unlock()
		if !ok {
			continue
		}
		select {
		case <-ch:
		case <-t.done:
			if t.fail != nil {
				return t.fail
			}
		case <-ctx.Done():
			if err := t.err(); err != nil {
				return err
			}
			return ctx.Err()
		}
	}
	return nil
}

// all waits until every content asked for is in.
func (t *transfer) all(ctx context.Context) error {
	select {
	case <-t.done:
		return t.fail
	case <-ctx.Done():
		if err := t.err(); err != nil {
			return err
		}
		return ctx.Err()
	}
}

// recentContexts keeps the last few contexts' trees by list digest and
// Dockerfile name.
type recentContexts struct {
	mu    sync.Mutex
	order []string
	trees map[string]*Context
}

// recentMax is how many contexts the builder remembers.
const recentMax = 16

func (r *recentContexts) get(key string) *Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.trees[key]
}

func (r *recentContexts) put(key string, c *Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.trees == nil {
		r.trees = map[string]*Context{}
	}
	if _, ok := r.trees[key]; !ok {
		r.order = append(r.order, key)
	}
	r.trees[key] = c
	for len(r.order) > recentMax {
		delete(r.trees, r.order[0])
		r.order = r.order[1:]
	}
}
