package buildctx

import (
	"context"
	"sync"
)

// slots hands out a fixed number of build slots first come, first served,
// telling each waiting build its place as the queue moves. (A weighted
// semaphore from x/sync is FIFO too, but cannot say a waiter's place.)
type slots struct {
	mu      sync.Mutex
	free    int
	waiting []*waiter
}

type waiter struct {
	ready chan struct{} // closed when the slot is the waiter's
	place chan int      // the waiter's latest place, buffered 1
}

func newSlots(n int) *slots { return &slots{free: max(1, n)} }

// acquire waits for a slot, calling queued with the number of builds ahead
// whenever that changes while it waits. It returns the slot's release, or
// ctx's error.
func (s *slots) acquire(ctx context.Context, queued func(ahead int)) (func(), error) {
	s.mu.Lock()
	if s.free > 0 && len(s.waiting) == 0 {
		s.free--
		s.mu.Unlock()
		return s.release, nil
	}
	w := &waiter{ready: make(chan struct{}), place: make(chan int, 1)}
	w.place <- len(s.waiting)
	s.waiting = append(s.waiting, w)
	s.mu.Unlock()
	last := -1
	for {
		select {
		case <-w.ready:
			return s.release, nil
		case ahead := <-w.place:
			if ahead != last {
				last = ahead
				queued(ahead)
			}
		case <-ctx.Done():
			s.mu.Lock()
			defer s.mu.Unlock()
			select {
			case <-w.ready: // given a slot as it gave up: pass it on
				s.free++
				s.handOff()
			default:
				s.remove(w)
			}
			return nil, ctx.Err()
		}
	}
}

func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.free++
	s.handOff()
}

// handOff gives free slots to the first waiters and tells the others their
// new place. s.mu is held.
func (s *slots) handOff() {
	for s.free > 0 && len(s.waiting) > 0 {
		s.free--
		close(s.waiting[0].ready)
		s.waiting = s.waiting[1:]
	}
	s.tellPlaces()
}

func (s *slots) remove(w *waiter) {
	for i, x := range s.waiting {
		if x == w {
			s.waiting = append(s.waiting[:i], s.waiting[i+1:]...)
			break
		}
	}
	s.tellPlaces()
}

// tellPlaces replaces each waiter's pending place with its current one.
func (s *slots) tellPlaces() {
	for i, w := range s.waiting {
		select {
		case <-w.place:
		default:
		}
		w.place <- i
	}
}
